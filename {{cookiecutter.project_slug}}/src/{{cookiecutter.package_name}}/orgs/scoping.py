"""Tenant isolation in one place: the organization a request acts in, and queries scoped to it.

An org-scoped table carries `org_id` (take `OrgScoped` as a mixin). Read its rows
only through `scoped(Model, access)` or `get_scoped(...)`, with the `OrgAccess`
that the route's dependency resolved (orgs/dependencies.py): another organization's
row is then never found, and its id answers 404 like an id that does not exist.

On PostgreSQL, `activate` also sets the transaction-local `app.org_id`, which the
row-level security policies on the org-scoped tables compare with (docs/orgs.md).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, ForeignKey, Select, func, inspect, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from . import exceptions

# The PostgreSQL setting the row-level security policies read (transaction-local).
ORG_SETTING = "app.org_id"


class OrgScoped:
    """Mixin for a table whose rows belong to one organization."""

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )


class _Scope(Protocol):
    @property
    def org_id(self) -> uuid.UUID: ...


# A mapped class with an `org_id` column (and a one-column primary key, for get_scoped):
# checked when the statement is built (mapped classes satisfy no typing protocol of columns).
M = TypeVar("M")


def scoped(model: type[M], scope: _Scope) -> Select[M]:
    """`SELECT` of `model`'s rows in the organization the request acts in."""
    return select(model).where(org_column(model) == scope.org_id)


def org_column(model: type[Any]) -> ColumnElement[uuid.UUID]:
    column = getattr(model, "org_id", None)
    if column is None:
        raise TypeError(f"{model.__name__} has no org_id column: it is not org-scoped")
    return column  # type: ignore[no-any-return]


async def get_scoped(session: AsyncSession, model: type[M], row_id: Any, scope: _Scope) -> M:
    """The row with this id in the organization, or 404 (also for another organization's)."""
    found: M | None = (
        await session.execute(scoped(model, scope).where(inspect(model).primary_key[0] == row_id))
    ).scalar_one_or_none()
    if found is None:
        raise exceptions.not_found(model.__name__.lower())
    return found


def activation(session: AsyncSession, org_id: uuid.UUID) -> ColumnElement[Any]:
    """A select-list item that sets `app.org_id` for this transaction on PostgreSQL.

    Put in the statement that reads the membership, so entering the organization costs
    no round trip of its own. On SQLite (no row-level security) it is a constant.
    """
    if session.get_bind().dialect.name == "postgresql":
        return func.set_config(ORG_SETTING, str(org_id), True)
    return literal(None)


async def enter_org(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Act in `org_id` for the rest of the transaction, where no org dependency did it.

    On PostgreSQL this sets `app.org_id`, which row-level security reads; elsewhere nothing.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(activation(session, org_id)))
