"""AI: quota reservations on the monthly totals.

Revision ID: 0007_ai_reservations
Revises: (set by the template to the previous migration in the chain)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_ai_reservations"
down_revision: str | None = "0004_ai"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ai_usage_totals") as batch:
        batch.add_column(
            sa.Column("reserved", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(
            sa.Column("last_grant", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_usage_totals") as batch:
        batch.drop_column("reserved_at")
        batch.drop_column("last_grant")
        batch.drop_column("reserved")
