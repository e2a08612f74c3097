"""Payments settings. Stripe's own names (`STRIPE_SECRET_KEY`, ...); the module's knobs `PAYMENTS_`.

Plans are JSON in the environment, for example

    PAYMENTS_PLANS='[{"key": "pro", "name": "Pro", "price_id": "price_123",
                      "ai_monthly_tokens": 1000000, "features": ["priority-support"]},
                     {"key": "team", "name": "Team", "price_id": "price_456", "per_seat": true}]'

A billing subject without a subscription in good standing gets `PAYMENTS_FREE_PLAN`.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    """A setting read from exactly this environment name (no PAYMENTS_ prefix)."""
    return AliasChoices(name, name.lower())


class Plan(BaseModel):
    """A plan users can subscribe to, and what it entitles them to."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str
    # The Stripe recurring price id; None for the free plan (it cannot be bought).
    price_id: str | None = None
    # Tokens the AI module allows per calendar month; None means no limit.
    ai_monthly_tokens: int | None = Field(default=None, ge=0)
    features: list[str] = []
    # Billed per seat: the subscription's quantity is the number of seats (see
    # docs/payments.md; without a module that counts seats, one).
    per_seat: bool = False
    # Metered AI overage (docs/payments.md): tokens beyond `ai_monthly_tokens` are not
    # refused but billed. The Stripe price (recurring, usage-based, on a billing meter) that
    # checkout adds as a second line item, and that meter's event name, which the AI module
    # reports the overage to. Both or neither.
    ai_metered_price_id: str | None = None
    ai_meter_event_name: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _metered_needs_both(self) -> Plan:
        if (self.ai_metered_price_id is None) != (self.ai_meter_event_name is None):
            raise ValueError(
                f"plan {self.key!r}: ai_metered_price_id and ai_meter_event_name go together"
            )
        if self.ai_metered_price_id is not None and self.ai_monthly_tokens is None:
            raise ValueError(
                f"plan {self.key!r}: a metered plan bills tokens beyond ai_monthly_tokens, "
                "which must be set"
            )
        return self

    @property
    def ai_overage_billed(self) -> bool:
        """Tokens beyond the allowance are billed through the meter instead of refused."""
        return self.ai_meter_event_name is not None


class PaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYMENTS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    stripe_secret_key: SecretStr | None = Field(
        default=None, validation_alias=_env("STRIPE_SECRET_KEY")
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("STRIPE_WEBHOOK_SECRET")
    )
    # stripe-mock or a local fake instead of https://api.stripe.com
    stripe_api_base: str | None = Field(default=None, validation_alias=_env("STRIPE_API_BASE"))

    plans: list[Plan] = []
    free_plan: Plan = Plan(key="free", name="Free", ai_monthly_tokens=10_000)
    # Where Stripe sends the browser after checkout, and back from the portal.
    success_url: str = "http://localhost:3000/billing/success?session_id={CHECKOUT_SESSION_ID}"
    cancel_url: str = "http://localhost:3000/billing"
    portal_return_url: str = "http://localhost:3000/billing"
    # Seconds a webhook signature stays valid (Stripe's own default is 300).
    webhook_tolerance: int = Field(default=300, ge=1)
    # Seconds a Checkout Session stays payable. Stripe allows 30 minutes to 24 hours; a
    # minute of margin each side for clock skew. While one is open the user gets it back
    # instead of a second one (a checkout for another plan expires it).
    checkout_expires_seconds: int = Field(default=3600, ge=1860, le=86340)
    # An event about a Stripe customer no user is linked to yet is tried again later (its
    # job's retries: its link may be on the way), until the event is this many seconds old;
    # after that it is processed as `unknown_customer` (a customer of another app, say).
    unknown_customer_retry_seconds: int = Field(default=3600, ge=0)
    # Processed webhook events are kept this many days in the ledger (duplicates of a kept
    # one are recognized), then purged daily; unprocessed ones are never purged. Stripe
    # retries a delivery for up to three days.
    event_retention_days: int = Field(default=90, ge=7)
    # The daily reconcile: every subscription is compared with Stripe's and corrected.
    reconcile: bool = True
    # Per request to the Stripe API, and retries of network errors (with idempotency keys).
    stripe_timeout: float = Field(default=20.0, gt=0)
    stripe_max_network_retries: int = Field(default=2, ge=0)

    @field_validator("stripe_secret_key", "stripe_webhook_secret", "stripe_api_base", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _plans_are_consistent(self) -> PaymentsSettings:
        keys = [plan.key for plan in self.plans]
        if self.free_plan.key in keys or len(set(keys)) != len(keys):
            raise ValueError(
                "PAYMENTS_PLANS: every plan key must be unique (and not the free plan's)"
            )
        prices = [plan.price_id for plan in self.plans]
        if None in prices or len(set(prices)) != len(prices):
            raise ValueError("PAYMENTS_PLANS: every plan needs its own Stripe price_id")
        if self.free_plan.ai_overage_billed:
            raise ValueError("PAYMENTS_FREE_PLAN: the free plan cannot bill metered usage")
        metered = [p.ai_metered_price_id for p in self.plans if p.ai_metered_price_id]
        if set(metered) & set(prices):
            raise ValueError("PAYMENTS_PLANS: a metered price cannot be a plan's price_id")
        return self

    def plan(self, key: str) -> Plan | None:
        return next((p for p in self.plans if p.key == key), None)

    def plan_for_price(self, price_id: str | None) -> Plan | None:
        return next((p for p in self.plans if price_id and p.price_id == price_id), None)


@lru_cache
def get_payments_settings() -> PaymentsSettings:
    return PaymentsSettings()
