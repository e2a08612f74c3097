"""The one place the AI module meets the other optional modules.

Who the caller is (the signed-in user when the project has accounts, else
everyone behind one client address), which key their rate limit counts under,
and their monthly token allowance (their plan's when the project has plans, else
AI_MONTHLY_TOKEN_QUOTA). Nothing else in this package imports another module.
"""

from __future__ import annotations

{% if cookiecutter.use_auth and cookiecutter.use_payments -%}
import uuid
{% endif -%}
from typing import Annotated

from fastapi import Depends, Request
{% if cookiecutter.use_auth %}
from {{ cookiecutter.package_name }}.auth.dependencies import ReleasedUser
{%- if cookiecutter.use_payments %}
from {{ cookiecutter.package_name }}.core.cache import Recent
from {{ cookiecutter.package_name }}.core.db import get_database
from {{ cookiecutter.package_name }}.payments import subjects
from {{ cookiecutter.package_name }}.payments.client import get_payments_state
from {{ cookiecutter.package_name }}.payments.service import get_entitlements
{%- endif %}
{%- else %}
from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.ratelimit import client_address
{%- endif %}

from .config import AISettings
from .dependencies import ai_state
from .service import Caller


def default_quota(settings: AISettings) -> int | None:
    return settings.monthly_token_quota or None

{%- if cookiecutter.use_auth %}
{%- if cookiecutter.use_payments %}


PLAN_CACHE_SIZE = 100_000


async def monthly_quota(request: Request, user: ReleasedUser, settings: AISettings) -> int | None:
    """The allowance of the user's plan (the free plan's without a subscription).

    A plan whose `ai_monthly_tokens` is null has no limit (see docs/payments.md).
    One short read of the subscription in a session of its own (the chat endpoint
    holds no pooled connection while it waits on the upstream), remembered per
    process for AI_QUOTA_CACHE_SECONDS like the usage totals.
    """
    # The allowance is kept in a 1-tuple: None is an allowance (no limit), not a miss.
    cache: Recent[uuid.UUID, tuple[int | None]] | None = getattr(
        request.app.state, "ai_plan_allowances", None
    )
    if cache is None:
        cache = request.app.state.ai_plan_allowances = Recent(
            settings.quota_cache_seconds, PLAN_CACHE_SIZE
        )

    async def read() -> tuple[int | None]:
        async with get_database(request).sessionmaker() as session:
            plan = await get_entitlements(
                session,
                await subjects.current().of_user(session, user),  # who pays for the user
                settings=get_payments_state(request.app).settings,
            )
        return (plan.ai_monthly_tokens,)

    return (await cache.fetch(user.id, read))[0]
{%- else %}


async def monthly_quota(request: Request, user: ReleasedUser, settings: AISettings) -> int | None:
    return default_quota(settings)
{%- endif %}


async def get_caller(request: Request, user: ReleasedUser) -> Caller:
    """The signed-in user: rate limited and metered per user."""
    return Caller(
        user_id=user.id,
        monthly_quota=await monthly_quota(request, user, ai_state(request).settings),
        rate_key=f"user:{user.id}",
    )
{%- else %}


async def get_caller(request: Request) -> Caller:
    """Without auth: no user; rate limited per client address, metered as one pool."""
    return Caller(
        user_id=None,
        monthly_quota=default_quota(ai_state(request).settings),
        rate_key=f"addr:{await client_address(request)}",
    )


declare(get_caller, requires="public: no accounts; AI_RATE_LIMIT per client address")
{%- endif %}


CallerDep = Annotated[Caller, Depends(get_caller)]
