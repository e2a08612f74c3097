"""Pydantic bodies of the payments routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class PlanRead(BaseModel):
    key: str
    name: str
    ai_monthly_tokens: int | None
    features: list[str]
    purchasable: bool
    # AI tokens beyond ai_monthly_tokens are billed by usage (metered) rather than refused.
    ai_overage_billed: bool = False


class CheckoutRequest(BaseModel):
    plan: str = Field(min_length=1, max_length=64)


class RedirectUrl(BaseModel):
    id: str | None = None
    url: str


class SubscriptionRead(BaseModel):
    plan: str
    plan_name: str
    # "none" when the user has never subscribed; otherwise Stripe's subscription status.
    status: str
    active: bool
    current_period_end: datetime | None
    cancel_at_period_end: bool
    ai_monthly_tokens: int | None


class WebhookAck(BaseModel):
    received: bool = True
    event_id: str
    # queued (its job applies it), duplicate (processed already), ignored (a type not handled)
    outcome: str
