"""What other modules may do when an organization changes, in the same transaction.

A module that keeps something per organization registers a hook when it is
imported; the orgs service runs the hooks after flushing the change, so a hook
that enqueues a job (core/jobs) enqueues it in the transaction of the change:

    @on_members_changed
    async def update_seats(session: AsyncSession, org: Organization) -> None: ...

- `on_members_changed`: someone joined (an accepted invitation) or left (removed,
  or left on their own) the organization.
- `on_org_deleted`: the organization is about to be deleted (its rows go with it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from .models import Organization

OrgHook = Callable[[AsyncSession, Organization], Awaitable[None]]

_members_changed: list[OrgHook] = []
_org_deleted: list[OrgHook] = []


def on_members_changed(hook: OrgHook) -> OrgHook:
    if hook not in _members_changed:
        _members_changed.append(hook)
    return hook


def on_org_deleted(hook: OrgHook) -> OrgHook:
    if hook not in _org_deleted:
        _org_deleted.append(hook)
    return hook


async def members_changed(session: AsyncSession, org: Organization) -> None:
    for hook in _members_changed:
        await hook(session, org)


async def org_deleted(session: AsyncSession, org: Organization) -> None:
    for hook in _org_deleted:
        await hook(session, org)
