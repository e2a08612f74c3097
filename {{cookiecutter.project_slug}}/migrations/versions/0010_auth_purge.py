"""Auth housekeeping: indexes for the daily purge of expired and revoked refresh tokens.

Revision ID: 0010_auth_purge
Revises: (set by the template to the previous migration)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_auth_purge"
down_revision: str | None = "0009_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])
    op.create_index("ix_refresh_tokens_revoked_at", "refresh_tokens", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_revoked_at", table_name="refresh_tokens")
    op.drop_index("ix_refresh_tokens_expires_at", table_name="refresh_tokens")
