"""Plan gating for route authors.

    @router.get("/reports", dependencies=[require_active_subscription])
    async def reports(...): ...

    @router.post("/exports")
    async def export(entitlements: Annotated[Entitlements, require_plan("pro", "team")]): ...

Both answer 402 problem+json when the caller's plan does not allow it. The plan is the
billing subject's (payments/subjects.py): the caller's own, or what the route's path names.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam

from {{ cookiecutter.package_name }}.auth.dependencies import CurrentUser
from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.payments import exceptions, subjects
from {{ cookiecutter.package_name }}.payments.client import PaymentsSettingsDep
from {{ cookiecutter.package_name }}.payments.service import Entitlements, get_entitlements


async def current_entitlements(
    request: Request, user: CurrentUser, session: SessionDep, settings: PaymentsSettingsDep
) -> Entitlements:
    """The entitlements of the billing subject the request acts for (payments/subjects.py)."""
    subject_id = await subjects.current().of_request(session, user, request.path_params)
    return await get_entitlements(session, subject_id, settings=settings)


CurrentEntitlements = Annotated[Entitlements, Depends(current_entitlements)]


async def _active(entitlements: CurrentEntitlements) -> Entitlements:
    if not entitlements.active:
        raise exceptions.subscription_required()
    return entitlements


PLAN_REQUIRED = {402: "The caller's plan does not include this"}
require_active_subscription = DependsParam(declare(_active, problems=PLAN_REQUIRED))


def require_plan(*keys: str) -> DependsParam:
    """Let a caller through only on one of these plans (with a subscription in good standing)."""
    allowed = frozenset(keys)

    async def dependency(entitlements: CurrentEntitlements) -> Entitlements:
        if not entitlements.active or entitlements.plan not in allowed:
            raise exceptions.plan_required(sorted(allowed))
        return entitlements

    return DependsParam(declare(dependency, problems=PLAN_REQUIRED))
