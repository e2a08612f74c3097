"""AI: each ledger row names whose monthly totals it was charged to (a shared pool's rows by member).

Revision ID: 0014_ai_subject
Revises: (set by the template to the previous migration in the chain)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_ai_subject"
down_revision: str | None = "0011_orgs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable and not backfilled: rows written before were charged to user_id (or the
    # anonymous pool), and rewriting a large ledger is not worth a migration's lock.
    with op.batch_alter_table("ai_usage") as batch:
        batch.add_column(sa.Column("subject", sa.Uuid(), nullable=True))
        batch.create_index("ix_ai_usage_subject_created_at", ["subject", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("ai_usage") as batch:
        batch.drop_index("ix_ai_usage_subject_created_at")
        batch.drop_column("subject")
