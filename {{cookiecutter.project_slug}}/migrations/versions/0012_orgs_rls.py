"""Orgs: row-level security on PostgreSQL for the org-scoped tables (a no-op on SQLite).

Each table gets one policy, `org_isolation`: a transaction sees and writes only the rows
of the organization in its transaction-local `app.org_id` (set by the org dependency),
and none without it, unless it set `app.rls_bypass` to `on` (jobs, the admin, CLIs:
`core.db.bypass_row_security`). FORCE makes the policy hold for the tables' owner too;
superusers and roles with BYPASSRLS are never held by it (docs/orgs.md).

`memberships` and `organizations` are not under it: they are what decides access, read
across organizations by the caller's account before any organization is chosen.

Revision ID: 0012_orgs_rls
Revises: (set by the template to the previous migration)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_orgs_rls"
down_revision: str | None = "0011_orgs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("invitations",)
# The same statements as in docs/orgs.md, "Adding an org-scoped table".
POLICY = (
    "org_id = NULLIF(current_setting('app.org_id', true), '')::uuid"
    " OR current_setting('app.rls_bypass', true) = 'on'"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY org_isolation ON {table} USING ({POLICY}) WITH CHECK ({POLICY})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP POLICY IF EXISTS org_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
