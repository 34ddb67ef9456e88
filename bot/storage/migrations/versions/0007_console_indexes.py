"""indexes for the console on a full database: the queue's covering index, the closed tab,
a conversation's escalations

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE_BEFORE = ["status", "priority", "opened_at"]
QUEUE = ["status", "emergency", "priority", "awaiting_since", "opened_at", "assigned_to"]


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_index("ix_conversations_queue")
        batch_op.create_index("ix_conversations_queue", QUEUE, unique=False)
        batch_op.create_index("ix_conversations_closed", ["status", "closed_at", "id"],
                              unique=False)
    with op.batch_alter_table("escalations") as batch_op:
        batch_op.create_index("ix_escalations_conversation", ["conversation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("escalations") as batch_op:
        batch_op.drop_index("ix_escalations_conversation")
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_index("ix_conversations_closed")
        batch_op.drop_index("ix_conversations_queue")
        batch_op.create_index("ix_conversations_queue", QUEUE_BEFORE, unique=False)
