"""The one shared `StripeClient` (no global api key), and the dependencies that hand it out.

The module's lifespan keeps a `StripeClientHolder` for it, with the settings, on
`app.state.payments`; the client itself is built at its first use, which is when Stripe's
SDK is imported (`sdk.py`). Tests point `STRIPE_API_BASE` at a fake server, or override
`get_stripe` with `app.dependency_overrides`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request

from {{ cookiecutter.package_name }}.payments import exceptions
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from {{ cookiecutter.package_name }}.payments.sdk import stripe

if TYPE_CHECKING:
    from stripe import StripeClient


def build_stripe_client(settings: PaymentsSettings) -> StripeClientHolder:
    """The client of these settings, built at its first use (none without STRIPE_SECRET_KEY)."""
    return StripeClientHolder(settings if settings.stripe_secret_key is not None else None)


class StripeClientHolder:
    """A client with timeouts and retries, built when first asked for; None when `settings`
    is None (STRIPE_SECRET_KEY is not set)."""

    def __init__(self, settings: PaymentsSettings | None) -> None:
        self._settings = settings
        self._client: stripe.StripeClient | None = None
        self._http_client: stripe.HTTPXClient | None = None

    @property
    def client(self) -> stripe.StripeClient | None:
        settings = self._settings
        if self._client is None and settings is not None:
            assert settings.stripe_secret_key is not None
            self._http_client = stripe.HTTPXClient(timeout=settings.stripe_timeout)
            self._client = stripe.StripeClient(
                settings.stripe_secret_key.get_secret_value(),
                http_client=self._http_client,
                base_addresses=(
                    {"api": settings.stripe_api_base} if settings.stripe_api_base else None
                ),
                max_network_retries=settings.stripe_max_network_retries,
            )
        return self._client

    async def aclose(self) -> None:
        http_client, self._http_client, self._client = self._http_client, None, None
        if http_client is not None:
            await http_client.close_async()  # type: ignore[no-untyped-call]


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


async def get_stripe(request: Request) -> StripeClient:  # a name FastAPI leaves unread
    """The shared client; 503 naming the missing setting when Stripe is not configured."""
    client = get_payments_state(request.app).stripe.client
    if client is None:
        raise exceptions.not_configured("STRIPE_SECRET_KEY")
    return client


PaymentsSettingsDep = Annotated[PaymentsSettings, Depends(payments_settings)]
if TYPE_CHECKING:
    StripeDep = Annotated[StripeClient, Depends(get_stripe)]
else:  # FastAPI reads it when the routes are made: the class would import the SDK then
    StripeDep = Annotated[Any, Depends(get_stripe)]
