"""AI with payments: batches of metered overage tokens reported to Stripe's billing meters.

Revision ID: 0019_ai_meter
Revises: (set by the template to the previous migration in the chain)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_ai_meter"
down_revision: str | None = "0015_org_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_meter_batches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("subject", sa.Uuid(), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("start_tokens", sa.BigInteger(), nullable=False),
        sa.Column("end_tokens", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("identifier", name="uq_ai_meter_batches_identifier"),
        sa.UniqueConstraint("subject", "period", "start_tokens", name="uq_ai_meter_batches_start"),
    )
    op.create_index("ix_ai_meter_batches_status", "ai_meter_batches", ["status"])


def downgrade() -> None:
    op.drop_index("ix_ai_meter_batches_status", table_name="ai_meter_batches")
    op.drop_table("ai_meter_batches")
