"""hardening: opt-outs outlive erasure, outbox rows know their address hash, origin number
and whether an earlier attempt may have reached the provider

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An erased contact that opted out keeps its row (hash + opt-out), without the address.
    with op.batch_alter_table("contacts") as batch:
        batch.alter_column("address_enc", existing_type=sa.Text(), nullable=True)
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("origin", sa.String(length=32), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("address_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("origin", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("in_doubt", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_outbox_address_hash", ["address_hash"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_address_hash")
        batch.drop_column("in_doubt")
        batch.drop_column("origin")
        batch.drop_column("address_hash")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("origin")
    with op.batch_alter_table("contacts") as batch:
        batch.alter_column("address_enc", existing_type=sa.Text(), nullable=False)
