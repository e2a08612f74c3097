"""What other modules may do when an account is created, in the same transaction.

A module registers a hook when it is imported, to add what every account must have:

    @on_user_created
    async def make_profile(session: AsyncSession, user: User) -> None: ...

Every path that creates an account (sign-up, a first social login, the CLI) runs
the hooks right after the user's row is flushed; a hook flushes, never commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.models import User

UserCreatedHook = Callable[[AsyncSession, User], Awaitable[None]]

_user_created: list[UserCreatedHook] = []


def on_user_created(hook: UserCreatedHook) -> UserCreatedHook:
    if hook not in _user_created:
        _user_created.append(hook)
    return hook


async def user_created(session: AsyncSession, user: User) -> None:
    # Every module wired into the project registers its hooks when imported; a process that
    # did not build the app (the CLI) imports them here.
    from {{ cookiecutter.package_name }} import modules  # noqa: F401

    for hook in _user_created:
        await hook(session, user)
