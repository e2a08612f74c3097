"""The one place the AI module meets the optional auth and payments modules.

Who the caller is (a user when auth is on, else everyone behind one client
address), which key their rate limit counts under, and their monthly token
allowance (the plan's entitlement when payments is on, else AI_MONTHLY_TOKEN_QUOTA).
Nothing else in this package imports auth or payments.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
{% if cookiecutter.use_auth is defined and cookiecutter.use_auth %}
from {{ cookiecutter.package_name }}.auth.dependencies import CurrentUser
{%- if cookiecutter.use_payments is defined and cookiecutter.use_payments %}
# MERGE: the payments module's per-plan entitlements; adjust to its interface.
from {{ cookiecutter.package_name }}.payments.entitlements import entitlements
{%- endif %}
{%- else %}
from {{ cookiecutter.package_name }}.core.ratelimit import client_address
{%- endif %}

from .config import AISettings
from .dependencies import ai_state
from .service import Caller


def default_quota(settings: AISettings) -> int | None:
    return settings.monthly_token_quota or None

{%- if cookiecutter.use_auth is defined and cookiecutter.use_auth %}
{%- if cookiecutter.use_payments is defined and cookiecutter.use_payments %}


async def monthly_quota(user: CurrentUser, settings: AISettings) -> int | None:
    """The plan's AI allowance; a plan that names none gets the default."""
    allowance = (await entitlements(user)).ai_monthly_tokens
    return default_quota(settings) if allowance is None else (allowance or None)
{%- else %}


async def monthly_quota(user: CurrentUser, settings: AISettings) -> int | None:
    return default_quota(settings)
{%- endif %}


async def get_caller(request: Request, user: CurrentUser) -> Caller:
    """The signed-in user: rate limited and metered per user."""
    return Caller(
        user_id=user.id,
        monthly_quota=await monthly_quota(user, ai_state(request).settings),
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
{%- endif %}


CallerDep = Annotated[Caller, Depends(get_caller)]
