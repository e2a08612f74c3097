"""Orgs: the invitations policy reads its settings once per statement, not once per row.

0012 wrote `current_setting(...)` straight into the policy, which PostgreSQL evaluates
for every row it checks. In a sub-select, `(SELECT current_setting(...))`, it is an
init plan: evaluated once per statement, as docs/orgs.md shows for new tables. What the
policy allows is unchanged.

Revision ID: 0020_orgs_rls_once
Revises: (set by the template to the previous migration)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020_orgs_rls_once"
down_revision: str | None = "0019_ai_meter"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("invitations",)
ONCE = (
    "org_id = (SELECT NULLIF(current_setting('app.org_id', true), '')::uuid)"
    " OR (SELECT current_setting('app.rls_bypass', true) = 'on')"
)
PER_ROW = (  # 0012's
    "org_id = NULLIF(current_setting('app.org_id', true), '')::uuid"
    " OR current_setting('app.rls_bypass', true) = 'on'"
)


def _policy(policy: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER POLICY org_isolation ON {table} USING ({policy}) WITH CHECK ({policy})")


def upgrade() -> None:
    _policy(ONCE)


def downgrade() -> None:
    _policy(PER_ROW)
