"""The caller's plan as a tool. Removed from projects without the payments module."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.payments.client import get_payments_state
from {{ cookiecutter.package_name }}.payments.service import get_entitlements

from .tools import NoArguments, ToolContext, provide, tool


class SubscriptionInfo(BaseModel):
    plan: str
    plan_name: str
    active: bool
    status: str
    current_period_end: datetime | None
    cancel_at_period_end: bool
    features: list[str]
    ai_monthly_tokens: int | None


@tool("get_subscription", scopes=["read"])
async def get_subscription(ctx: ToolContext, args: NoArguments) -> SubscriptionInfo:
    """The caller's plan: its key and name, whether a paid subscription is active, the
    subscription's status ("none" without one), when the period ends, whether it is set to
    cancel then, the plan's features and its monthly AI token allowance."""
    settings = get_payments_state(ctx.app).settings
    # Whose plan: the account the request is billed to, from its credentials.
    plan = await get_entitlements(ctx.session, ctx.caller.subject, settings=settings)
    subscription = plan.subscription
    return SubscriptionInfo(
        plan=plan.plan,
        plan_name=plan.plan_name,
        active=plan.active,
        status=plan.status,
        current_period_end=subscription.current_period_end if subscription else None,
        cancel_at_period_end=subscription.cancel_at_period_end if subscription else False,
        features=sorted(plan.features),
        ai_monthly_tokens=plan.ai_monthly_tokens,
    )


module = Module("ai-payments", install=provide(get_subscription))
