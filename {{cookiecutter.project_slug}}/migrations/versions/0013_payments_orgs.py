"""Payments bill the organization: customers, subscriptions and checkouts move from the
user to the organization (`org_id`), each user's rows to their personal organization.

Downgrade moves them back to the personal organization's user; rows of other
organizations are deleted (a user had one customer, one checkout).

Revision ID: 0013_payments_orgs
Revises: (set by the template to the previous migration)
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_payments_orgs"
down_revision: str | None = "0011_orgs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> whether the subject's id is its primary key (else an indexed column)
TABLES = {"stripe_customers": True, "subscriptions": False, "stripe_checkouts": True}


def _fill(table: str, target: str, source: str, expression: str) -> None:
    op.execute(
        f"UPDATE {table} SET {target} = ("  # noqa: S608 - fixed names, no input
        f"SELECT {expression} FROM organizations WHERE organizations.personal_for IS NOT NULL "
        f"AND {source}) WHERE {target} IS NULL"
    )


def _move(table: str, old: tuple[str, str], new: tuple[str, str], match: str, value: str) -> None:
    """Replace the column `old` (its name, the table it refers to) by `new`, filled with
    `value` of the organization `match` finds; rows without one are deleted."""
    (old_column, old_target), (column, target) = old, new
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column(column, sa.Uuid(), nullable=True))
    _fill(table, column, match, value)
    op.execute(f"DELETE FROM {table} WHERE {column} IS NULL")  # noqa: S608 - fixed names
    with op.batch_alter_table(table) as batch:
        if TABLES[table]:
            batch.drop_constraint(f"pk_{table}", type_="primary")
        else:
            batch.drop_index(f"ix_{table}_{old_column}")
        batch.drop_constraint(f"fk_{table}_{old_column}_{old_target}", type_="foreignkey")
        batch.drop_column(old_column)
        batch.alter_column(column, existing_type=sa.Uuid(), nullable=False)
        batch.create_foreign_key(
            f"fk_{table}_{column}_{target}", target, [column], ["id"], ondelete="CASCADE"
        )
        if TABLES[table]:
            batch.create_primary_key(f"pk_{table}", [column])
        else:
            batch.create_index(f"ix_{table}_{column}", [column], unique=False)


def upgrade() -> None:
    for table in TABLES:
        _move(
            table,
            ("user_id", "users"),
            ("org_id", "organizations"),
            f"organizations.personal_for = {table}.user_id",
            "organizations.id",
        )


def downgrade() -> None:
    for table in TABLES:
        _move(
            table,
            ("org_id", "organizations"),
            ("user_id", "users"),
            f"organizations.id = {table}.org_id",
            "organizations.personal_for",
        )
