"""web chat sessions; lookup keys kept from rotated-out encryption keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("address_hash", name=op.f("uq_web_sessions_address_hash")),
    )
    with op.batch_alter_table("web_sessions") as batch_op:
        batch_op.create_index("ix_web_sessions_ended_at", ["ended_at"], unique=False)
    op.create_table(
        "retired_lookup_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("key_enc", sa.Text(), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_retired_lookup_keys")),
    )


def downgrade() -> None:
    op.drop_table("retired_lookup_keys")
    with op.batch_alter_table("web_sessions") as batch_op:
        batch_op.drop_index("ix_web_sessions_ended_at")
    op.drop_table("web_sessions")
