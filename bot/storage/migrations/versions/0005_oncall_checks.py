"""the on-call loop checks itself: handovers and their confirmation, test pages, the staff
chat's line at each opening

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "handovers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("announced", sa.Boolean(), nullable=False),
        sa.Column("confirm_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unconfirmed_told_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"],
                                name=op.f("fk_handovers_staff_id_staff"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handovers")),
        sa.UniqueConstraint("seq", name=op.f("uq_handovers_seq")),
    )
    with op.batch_alter_table("handovers") as batch_op:
        batch_op.create_index("ix_handovers_confirm_by", ["confirm_by"], unique=False)
    op.create_table(
        "page_tests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_channel", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"],
                                name=op.f("fk_page_tests_staff_id_staff"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page_tests")),
    )
    with op.batch_alter_table("page_tests") as batch_op:
        batch_op.create_index("ix_page_tests_staff_id", ["staff_id"], unique=False)
    op.create_table(
        "opening_digests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("opening_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opening_digests")),
        sa.UniqueConstraint("opening_at", name=op.f("uq_opening_digests_opening_at")),
    )


def downgrade() -> None:
    op.drop_table("opening_digests")
    with op.batch_alter_table("page_tests") as batch_op:
        batch_op.drop_index("ix_page_tests_staff_id")
    op.drop_table("page_tests")
    with op.batch_alter_table("handovers") as batch_op:
        batch_op.drop_index("ix_handovers_confirm_by")
    op.drop_table("handovers")
