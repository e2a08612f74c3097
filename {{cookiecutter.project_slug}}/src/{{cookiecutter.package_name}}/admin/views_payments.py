"""Admin views of the payments module: customers, subscriptions and the webhook event ledger.

All read-only: their state mirrors Stripe (change it in Stripe and the webhooks follow).
The event ledger has a Replay action that handles stored events again, here and now, like
`python -m <package>.payments replay` (a dead job of an event it applies is deleted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from sqladmin import Flash, ModelView, action
from sqladmin.filters import AllUniqueStringValuesFilter, BooleanFilter
from sqlalchemy import Select
from starlette.requests import Request
from starlette.responses import Response

from {{ cookiecutter.package_name }}.admin.views import app_database, back_to_list
from {{ cookiecutter.package_name }}.payments import webhooks
from {{ cookiecutter.package_name }}.payments.client import PaymentsState, build_stripe_client
from {{ cookiecutter.package_name }}.payments.config import get_payments_settings
from {{ cookiecutter.package_name }}.payments.models import (
    SUBJECT_KEY,
    SUBJECT_LABEL,
    StripeCustomer,
    StripeEvent,
    Subscription,
)

# Events handled again per click: replay is synchronous, so keep a request short.
REPLAY_MAX = 50


class ProcessedFilter:
    """Processed yes/no: whether `processed_at` is set."""

    has_operator = False
    template = "sqladmin/filters/lookup_filter.html"
    title = "Processed"
    parameter_name = "processed"

    async def lookups(
        self, request: Request, model: Any, run_query: Callable[[Select[Any]], Any]
    ) -> list[tuple[str, str]]:
        return [("all", "All"), ("true", "Yes"), ("false", "No")]

    async def get_filtered_query(self, query: Select[Any], value: Any, model: Any) -> Select[Any]:
        if value == "true":
            return query.filter(StripeEvent.processed_at.is_not(None))
        if value == "false":
            return query.filter(StripeEvent.processed_at.is_(None))
        return query


class StripeCustomerAdmin(ModelView, model=StripeCustomer):
    name = "Customer"
    name_plural = "Customers"
    icon = "fa-solid fa-address-card"
    category = "Payments"

    column_list: ClassVar[Sequence[Any]] = [
        StripeCustomer.customer_id,
        SUBJECT_KEY,  # whose: the billing subject
        StripeCustomer.created_at,
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        StripeCustomer.customer_id: "Stripe customer",
        SUBJECT_KEY: SUBJECT_LABEL,
        StripeCustomer.created_at: "Created",
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [
        StripeCustomer.customer_id,
        SUBJECT_KEY,  # whose: the billing subject
    ]
    column_default_sort: ClassVar[Any] = (StripeCustomer.created_at, True)
    can_create = False
    can_edit = False
    can_delete = False


class SubscriptionAdmin(ModelView, model=Subscription):
    name = "Subscription"
    name_plural = "Subscriptions"
    icon = "fa-solid fa-credit-card"
    category = "Payments"

    column_list: ClassVar[Sequence[Any]] = [
        Subscription.id,
        SUBJECT_KEY,  # whose: the billing subject
        Subscription.status,
        Subscription.price_id,
        Subscription.current_period_end,
        Subscription.cancel_at_period_end,
        Subscription.latest_invoice_status,
        Subscription.updated_at,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [
        *column_list,
        Subscription.customer_id,
        Subscription.state_as_of,
        Subscription.latest_invoice_as_of,
        Subscription.created_at,
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        Subscription.id: "Stripe subscription",
        SUBJECT_KEY: SUBJECT_LABEL,
        Subscription.status: "Status",
        Subscription.price_id: "Price",
        Subscription.current_period_end: "Period ends",
        Subscription.cancel_at_period_end: "Cancels at period end",
        Subscription.latest_invoice_status: "Latest invoice",
        Subscription.updated_at: "Updated",
        Subscription.customer_id: "Stripe customer",
        Subscription.state_as_of: "State as of",
        Subscription.latest_invoice_as_of: "Latest invoice as of",
        Subscription.created_at: "Created",
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [
        Subscription.id,
        Subscription.customer_id,
        SUBJECT_KEY,  # whose: the billing subject
    ]
    column_filters: ClassVar[Sequence[Any]] = [
        AllUniqueStringValuesFilter(Subscription.status, title="Status"),
        AllUniqueStringValuesFilter(Subscription.price_id, title="Price"),
        BooleanFilter(Subscription.cancel_at_period_end, title="Cancels at period end"),
    ]
    column_default_sort: ClassVar[Any] = (Subscription.updated_at, True)
    can_create = False
    can_edit = False
    can_delete = False


class StripeEventAdmin(ModelView, model=StripeEvent):
    name = "Webhook event"
    name_plural = "Webhook events"
    icon = "fa-solid fa-inbox"
    category = "Payments"

    column_list: ClassVar[Sequence[Any]] = [
        StripeEvent.id,
        StripeEvent.type,
        StripeEvent.stripe_created,
        StripeEvent.received_at,
        StripeEvent.processed_at,
        StripeEvent.outcome,
        StripeEvent.attempts,
        StripeEvent.last_error,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [*column_list, StripeEvent.payload]
    column_labels: ClassVar[dict[Any, str]] = {
        StripeEvent.id: "Stripe event",
        StripeEvent.type: "Type",
        StripeEvent.stripe_created: "Created at Stripe",
        StripeEvent.received_at: "Received",
        StripeEvent.processed_at: "Processed",
        StripeEvent.outcome: "Outcome",
        StripeEvent.attempts: "Attempts",
        StripeEvent.last_error: "Last error",
        StripeEvent.payload: "Payload",
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [StripeEvent.id]
    column_filters: ClassVar[Sequence[Any]] = [
        ProcessedFilter(),
        AllUniqueStringValuesFilter(StripeEvent.type, title="Type"),
        AllUniqueStringValuesFilter(StripeEvent.outcome, title="Outcome"),
    ]
    column_default_sort: ClassVar[Any] = (StripeEvent.received_at, True)
    # The ledger is what Stripe sent: read-only.
    can_create = False
    can_edit = False
    can_delete = False

    @action(
        name="replay",
        label="Replay",
        confirmation_message="Handle the selected events again? Each reads the state from Stripe.",
    )
    async def replay(self, request: Request) -> Response:
        event_ids = [p.strip() for p in request.query_params.get("pks", "").split(",")]
        event_ids = [e for e in event_ids if e][:REPLAY_MAX]
        database = app_database(request)
        # Handling reads subscriptions from Stripe: a client from the environment's settings
        # (the admin is mounted apart from the app's state), like the replay command's.
        settings = get_payments_settings()
        payments = PaymentsState(settings, build_stripe_client(settings))
        results: list[str] = []
        failed = False
        try:
            for event_id in event_ids:
                try:
                    outcome = await webhooks.replay(database, payments, event_id)
                except LookupError:
                    outcome = "not in the ledger"
                except webhooks.EventHandlingError:
                    outcome, failed = "failed (see Last error)", True
                results.append(f"{event_id}: {outcome}")
        finally:
            await payments.stripe.aclose()
        message = "; ".join(results) or "No event selected."
        if failed:
            Flash.error(request, message, "Replay")
        else:
            Flash.success(request, message, "Replay")
        return back_to_list(request, self)


VIEWS: tuple[type[ModelView], ...] = (StripeCustomerAdmin, SubscriptionAdmin, StripeEventAdmin)
