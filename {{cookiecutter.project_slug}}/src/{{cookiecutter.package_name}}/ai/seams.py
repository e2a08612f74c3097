"""The one place the AI module meets the other optional modules.

Who the caller is (the signed-in user when the project has accounts, else
everyone behind one client address), which key their rate limit counts under,
{%- if cookiecutter.use_orgs %}
whose monthly allowance they draw on (an organization's, pooled over its members),
{%- endif %}
and that monthly token allowance (the plan's when the project has plans, else
AI_MONTHLY_TOKEN_QUOTA){% if cookiecutter.use_payments %}, with whether usage beyond it is
billed (a metered plan) rather than refused{% endif %}. Nothing else in this package imports
another module{% if cookiecutter.use_payments %}, but ai/billing.py (that usage, reported to the
billing provider's meters){% endif %}.
"""

from __future__ import annotations

{% if cookiecutter.use_auth -%}
import uuid
{% endif -%}
from datetime import date
from typing import Annotated{% if cookiecutter.use_orgs %}, cast{% endif %}

from fastapi import Depends, Request
{% if cookiecutter.use_auth %}
{%- if cookiecutter.use_orgs %}
from {{ cookiecutter.package_name }}.auth.dependencies import ReleasedPrincipal, get_auth_state
{%- else %}
from {{ cookiecutter.package_name }}.auth.dependencies import ReleasedPrincipal
{%- endif %}
{%- if cookiecutter.use_payments or cookiecutter.use_orgs %}
from {{ cookiecutter.package_name }}.core.cache import Recent
{%- endif %}
from {{ cookiecutter.package_name }}.core.contract import declare
{%- if cookiecutter.use_payments or cookiecutter.use_orgs %}
from {{ cookiecutter.package_name }}.core.db import get_database
{%- endif %}
{%- if cookiecutter.use_orgs %}
from {{ cookiecutter.package_name }}.core.errors import ProblemError
from {{ cookiecutter.package_name }}.orgs.dependencies import read_home_org, read_role
from {{ cookiecutter.package_name }}.orgs.exceptions import org_not_found
from {{ cookiecutter.package_name }}.orgs.models import Role
{%- endif %}
{%- if cookiecutter.use_payments %}
from {{ cookiecutter.package_name }}.payments import subjects
from {{ cookiecutter.package_name }}.payments.client import get_payments_state
from {{ cookiecutter.package_name }}.payments.service import get_entitlements
{%- endif %}
{%- else %}
from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.ratelimit import client_key
{%- endif %}

{% if cookiecutter.use_payments -%}
from .billing import billed_overage
{% endif -%}
from .config import AISettings
from .dependencies import ai_state
from .schemas import OverageBilling
from .service import Caller


def default_quota(settings: AISettings) -> int | None:
    return settings.monthly_token_quota or None
{%- if cookiecutter.use_auth %}


# A chat request that names a tool its credentials lack a scope for (ai/router.py).
TOOL_SCOPE = {403: "A tool named in `tools` needs a scope the token or API key lacks"}
{%- endif %}

{%- if cookiecutter.use_auth %}
{%- if cookiecutter.use_payments %}


PLAN_CACHE_SIZE = 100_000


async def monthly_quota(
    request: Request, subject: uuid.UUID, settings: AISettings
) -> tuple[int | None, bool]:
    """The allowance of the subject's plan (the free plan's without a subscription), and
    whether the plan bills tokens beyond it (metered: not refused, see ai/billing.py).

    A plan whose `ai_monthly_tokens` is null has no limit (see docs/payments.md).
{%- if cookiecutter.use_orgs %}
    The subject is an organization: its members share its plan's allowance.
{%- endif %}
    One short read of the subscription in a session of its own (the chat endpoint
    holds no pooled connection while it waits on the upstream), remembered per
    process for AI_QUOTA_CACHE_SECONDS like the usage totals.
    """
    # The allowance is kept in a tuple: None is an allowance (no limit), not a miss.
    cache: Recent[uuid.UUID, tuple[int | None, bool]] | None = getattr(
        request.app.state, "ai_plan_allowances", None
    )
    if cache is None:
        cache = request.app.state.ai_plan_allowances = Recent(
            settings.quota_cache_seconds, PLAN_CACHE_SIZE
        )

    async def read() -> tuple[int | None, bool]:
        async with get_database(request).sessionmaker() as session:
            await subjects.current().enter(session, subject)  # row-level security
            plan = await get_entitlements(
                session, subject, settings=get_payments_state(request.app).settings
            )
        return plan.ai_monthly_tokens, plan.ai_overage_billed

    return await cache.fetch(subject, read)
{%- else %}


async def monthly_quota(
    request: Request, subject: uuid.UUID, settings: AISettings
) -> tuple[int | None, bool]:
    return default_quota(settings), False
{%- endif %}
{%- if cookiecutter.use_orgs %}


# Memberships read a moment ago, at most this many remembered (per kind).
MEMBERSHIP_CACHE_SIZE = 100_000

# (user, API key or None) -> the organization /ai/chat bills; (user, org, API key) -> role
HomeOrgs = Recent[tuple[uuid.UUID, uuid.UUID | None], tuple[uuid.UUID | None]]
OrgRoles = Recent[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None], tuple[Role | None]]


def _recent(request: Request, name: str) -> HomeOrgs | OrgRoles:
    """Memberships read by this process, trusted for AUTH_USER_CACHE_SECONDS (5 s at most).

    The same bound as the account itself (ReleasedUser): a member removed from an
    organization, or demoted, is refused here at most that long after the change.
    """
    cache: HomeOrgs | OrgRoles | None = getattr(request.app.state, name, None)
    if cache is None:
        seconds = get_auth_state(request.app).settings.user_cache_seconds
        cache = Recent(seconds, MEMBERSHIP_CACHE_SIZE)
        setattr(request.app.state, name, cache)
    return cache


async def pool_caller(
    request: Request,
    user_id: uuid.UUID,
    org_id: uuid.UUID,
    scopes: frozenset[str] | None = None,
) -> Caller:
    """A member charged to the organization's pool: its plan's allowance, shared.

    `scopes`: the credentials', which decide the tools the caller may run.
    """
    quota, billed = await monthly_quota(request, org_id, ai_state(request).settings)
    return Caller(
        user_id=user_id,
        monthly_quota=quota,
        rate_key=f"user:{user_id}",
        pool=org_id,
        overage_billed=billed,
        scopes=scopes,
    )


async def get_caller(request: Request, principal: ReleasedPrincipal) -> Caller:
    """The signed-in user, charged to the organization the request acts for.

    That is their personal organization, or, with an API key that belongs to an
    organization, the key's (while its creator is a member); one read, remembered
    like the membership in `get_org_caller`.
    """
    user, key = principal.user, principal.api_key
    key_id = key.id if key is not None else None
    database = get_database(request)

    async def read() -> tuple[uuid.UUID | None]:
        return (await read_home_org(database, user.id, key_id),)

    cache = cast(HomeOrgs, _recent(request, "ai_home_orgs"))
    (org_id,) = await cache.fetch((user.id, key_id), read)
    if org_id is None:
        if key_id is not None:
            raise ProblemError(403, "The API key's creator is no longer in its organization.")
        raise ProblemError(
            403, "No personal organization; chat in one: POST /api/v1/orgs/{org_id}/ai/chat."
        )
    return await pool_caller(request, user.id, org_id, principal.scopes)


async def get_org_caller(
    org_id: uuid.UUID, request: Request, principal: ReleasedPrincipal
) -> Caller:
    """A member of `{org_id}` (404 otherwise), charged to the organization's pool.

    `OrgMember` without the request's session: one read of the membership (with the
    API key's organization and role), remembered for AUTH_USER_CACHE_SECONDS.
    """
    user, key = principal.user, principal.api_key
    key_id = key.id if key is not None else None
    database = get_database(request)

    async def read() -> tuple[Role | None]:
        return (await read_role(database, org_id, user.id, key_id),)

    cache = cast(OrgRoles, _recent(request, "ai_org_roles"))
    (role,) = await cache.fetch((user.id, org_id, key_id), read)
    if role is None:
        raise org_not_found()
    return await pool_caller(request, user.id, org_id, principal.scopes)


declare(
    get_caller,
    problems={
        403: "An API key of an organization its creator has left, or no personal one",
        **TOOL_SCOPE,
    },
)
# The scope is ReleasedPrincipal's (declared with it).
declare(
    get_org_caller,
    requires="org member",
    problems={404: "No such organization, or the caller is not a member", **TOOL_SCOPE},
)
OrgCallerDep = Annotated[Caller, Depends(get_org_caller)]
{%- else %}


async def get_caller(request: Request, principal: ReleasedPrincipal) -> Caller:
    """The signed-in user: rate limited and metered per user."""
    user = principal.user
    quota, billed = await monthly_quota(request, user.id, ai_state(request).settings)
    return Caller(
        user_id=user.id,
        monthly_quota=quota,
        rate_key=f"user:{user.id}",
        overage_billed=billed,
        scopes=principal.scopes,
    )


# The scope is ReleasedPrincipal's (declared with it).
declare(get_caller, problems=TOOL_SCOPE)
{%- endif %}
{%- else %}


async def get_caller(request: Request) -> Caller:
    """Without auth: no user; rate limited per client address, metered as one pool."""
    return Caller(
        user_id=None,
        monthly_quota=default_quota(ai_state(request).settings),
        rate_key=f"addr:{await client_key(request)}",
    )


declare(get_caller, requires="public: no accounts; AI_RATE_LIMIT per client address")
{%- endif %}

{%- if cookiecutter.use_payments %}


async def overage_billing(
    request: Request, caller: Caller, period: date, tokens: int
) -> OverageBilling | None:
    """What of the caller's month beyond a metered plan's allowance is billed, and not yet."""
    if not caller.overage_billed or caller.monthly_quota is None:
        return None
    return await billed_overage(
        get_database(request), caller.subject, period, max(0, tokens - caller.monthly_quota)
    )
{%- else %}


async def overage_billing(
    request: Request, caller: Caller, period: date, tokens: int
) -> OverageBilling | None:
    """Without plans nothing is billed beyond the allowance: usage beyond it is refused."""
    return None
{%- endif %}


CallerDep = Annotated[Caller, Depends(get_caller)]
