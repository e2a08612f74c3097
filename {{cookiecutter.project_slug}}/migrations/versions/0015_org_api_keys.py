"""Orgs: API keys that belong to an organization, with the most role they may act with.

Revision ID: 0015_org_api_keys
Revises: (set by the template to the previous migration in the chain)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_org_api_keys"
down_revision: str | None = "0014_ai_subject"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE_CHECK = "role IN ('member', 'admin', 'owner')"


def upgrade() -> None:
    op.create_table(
        "org_api_keys",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.CheckConstraint(ROLE_CHECK, name=op.f("ck_org_api_keys_role")),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_org_api_keys_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_org_api_keys_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_key_id", name=op.f("pk_org_api_keys")),
    )
    op.create_index(op.f("ix_org_api_keys_org_id"), "org_api_keys", ["org_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_org_api_keys_org_id"), table_name="org_api_keys")
    op.drop_table("org_api_keys")
