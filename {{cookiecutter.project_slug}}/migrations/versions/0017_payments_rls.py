"""Payments bill the organization: row-level security on its billing tables (PostgreSQL).

`stripe_customers`, `subscriptions` and `stripe_checkouts` carry `org_id` (0013); they get
the policy every org-scoped table has (0012_orgs_rls, docs/orgs.md): a transaction sees
and writes only the rows of the organization in its transaction-local `app.org_id`, none
without it, unless it set `app.rls_bypass` to `on` (webhooks, jobs, the CLI, the admin).
A no-op on SQLite. `stripe_events` is not org-scoped (Stripe's events, keyed by Stripe's id).

Revision ID: 0017_payments_rls
Revises: (set by the template to the previous migration)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_payments_rls"
down_revision: str | None = "0016_jobs_trace"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("stripe_customers", "subscriptions", "stripe_checkouts")
# The statements of docs/orgs.md, "Adding an org-scoped table": the settings are read in
# sub-selects, which PostgreSQL evaluates once per statement (InitPlans) rather than once
# per row, as 0012's form does (a query that forgets its filter scans the whole table).
POLICY = (
    "org_id = (SELECT NULLIF(current_setting('app.org_id', true), '')::uuid)"
    " OR (SELECT current_setting('app.rls_bypass', true) = 'on')"
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
