"""The one shared `StripeClient` (no global api key), and the dependencies that hand it out.

The module's lifespan builds it from the settings and keeps it, with the settings, on
`app.state.payments`. Tests point `STRIPE_API_BASE` at a fake server, or override
`get_stripe` with `app.dependency_overrides`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import stripe
from fastapi import Depends, FastAPI, Request

from {{ cookiecutter.package_name }}.payments import exceptions
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings


def build_stripe_client(settings: PaymentsSettings) -> StripeClientHolder:
    """A client with timeouts and retries, or none when STRIPE_SECRET_KEY is not set."""
    if settings.stripe_secret_key is None:
        return StripeClientHolder(None, None)
    http_client = stripe.HTTPXClient(timeout=settings.stripe_timeout)
    client = stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        http_client=http_client,
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
        max_network_retries=settings.stripe_max_network_retries,
    )
    return StripeClientHolder(client, http_client)


@dataclass(frozen=True)
class StripeClientHolder:
    client: stripe.StripeClient | None
    http_client: stripe.HTTPXClient | None

    async def aclose(self) -> None:
        if self.http_client is not None:
            await self.http_client.close_async()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class PaymentsState:
    """The module's runtime state, kept on `app.state.payments` by its lifespan."""

    settings: PaymentsSettings
    stripe: StripeClientHolder


def get_payments_state(app: FastAPI) -> PaymentsState:
    state: PaymentsState = app.state.payments
    return state


async def payments_settings(request: Request) -> PaymentsSettings:
    return get_payments_state(request.app).settings


async def get_stripe(request: Request) -> stripe.StripeClient:
    """The shared client; 503 naming the missing setting when Stripe is not configured."""
    client = get_payments_state(request.app).stripe.client
    if client is None:
        raise exceptions.not_configured("STRIPE_SECRET_KEY")
    return client


PaymentsSettingsDep = Annotated[PaymentsSettings, Depends(payments_settings)]
StripeDep = Annotated[stripe.StripeClient, Depends(get_stripe)]
