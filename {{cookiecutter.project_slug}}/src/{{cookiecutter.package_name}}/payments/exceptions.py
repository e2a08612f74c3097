"""The payments module's errors, as problem+json."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.core.errors import ProblemError
from {{ cookiecutter.package_name }}.payments.sdk import stripe


def not_configured(setting: str) -> ProblemError:
    return ProblemError(
        503,
        f"Payments are not configured: set {setting}.",
        type_="payments-not-configured",
        missing_setting=setting,
    )


def unknown_plan(key: str) -> ProblemError:
    return ProblemError(422, f"There is no plan {key!r} to subscribe to.")


def already_subscribed() -> ProblemError:
    return ProblemError(
        409, "You already have a subscription; change it in the billing portal instead."
    )


def stripe_failed(exc: Exception | None = None) -> ProblemError:
    """502: Stripe could not be reached, or refused the call (a key or price is wrong)."""
    if exc is None or isinstance(exc, stripe.APIConnectionError | stripe.APIError):
        return ProblemError(
            502,
            "The payment provider could not be reached; try again shortly.",
            headers={"Retry-After": "5"},
        )
    return ProblemError(502, "The payment provider refused the request; see the server log.")


def bad_signature(
    detail: str = "The Stripe-Signature header is missing or invalid.",
) -> ProblemError:
    return ProblemError(400, detail)


def subscription_required() -> ProblemError:
    return ProblemError(402, "An active subscription is needed for this.")


def plan_required(keys: list[str]) -> ProblemError:
    return ProblemError(402, f"This needs the {' or '.join(keys)} plan.", required_plans=keys)
