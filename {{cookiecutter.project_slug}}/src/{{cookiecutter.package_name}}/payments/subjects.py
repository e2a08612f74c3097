"""Who pays: the billing subject of customers, subscriptions, checkouts and entitlements.

On its own the module bills each user for themselves: the subject's id is the user's id.
A module that bills something else installs its own `Subjects` with `install(...)` when it
is imported (wired in by modules.py); the tables' subject column (`models.SUBJECT_KEY`)
says which one must be installed, and `current()` refuses a mismatch.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.payments.models import SUBJECT_KEY

if TYPE_CHECKING:
    from stripe.params import CustomerCreateParams


class Subjects:
    """The billing subject is the user."""

    # The metadata key that carries the subject's id at Stripe (customer, checkout,
    # subscription), the same as the tables' column.
    key = "user_id"

    async def exists(self, session: AsyncSession, subject_id: uuid.UUID) -> bool:
        return await session.get(User, subject_id) is not None

    async def of_user(self, session: AsyncSession, user: User) -> uuid.UUID:
        """What the user-level routes (/api/v1/payments/...) act on for this user."""
        return user.id

    async def of_request(
        self, session: AsyncSession, user: User, path: Mapping[str, Any]
    ) -> uuid.UUID:
        """What plan gating (`payments.dependencies`) reads for a request with these path
        parameters; a subject named in the path must be checked against the user."""
        return await self.of_user(session, user)

    async def customer(
        self, session: AsyncSession, subject_id: uuid.UUID, user: User
    ) -> CustomerCreateParams:
        """The fields of the subject's new Stripe customer (`user` is who asked for it)."""
        return {"email": user.email, "metadata": {self.key: str(subject_id)}}

    async def seats(self, session: AsyncSession, subject_id: uuid.UUID) -> int:
        """How many seats a per-seat plan bills the subject for, now."""
        return 1

    async def enter(self, session: AsyncSession, subject_id: uuid.UUID) -> None:
        """Act for the subject in the rest of the session's transaction, where nothing
        did yet (a read of its rows in a session of its own). The user: nothing to do;
        a subject whose tables are under row-level security enters it here."""


_installed: list[Subjects] = [Subjects()]


def install(subjects: Subjects) -> None:
    _installed[0] = subjects


def current() -> Subjects:
    subjects = _installed[0]
    if subjects.key != SUBJECT_KEY:
        raise RuntimeError(
            f"payments: the tables bill {SUBJECT_KEY!r} but the subjects installed are "
            f"{subjects.key!r} (is the module that installs them wired in modules.py?)"
        )
    return subjects
