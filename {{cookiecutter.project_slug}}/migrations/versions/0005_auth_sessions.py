"""Auth sessions: each account's security stamp and recently revoked sessions.

Access tokens carry the stamp and their session (refresh family); both are checked
against the user row that every authenticated request reads anyway.

Revision ID: 0005_auth_sessions
Revises: (set by the template to the previous module's migration)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_auth_sessions"
down_revision: str | None = "0002_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        # Accounts that exist get the empty stamp; their next password change sets one.
        batch_op.add_column(
            sa.Column("security_stamp", sa.String(length=32), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("revoked_sessions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("revoked_sessions")
        batch_op.drop_column("security_stamp")
