"""Payments fixtures: a fake Stripe API on 127.0.0.1 that the real `stripe` library talks
to (it records every request), the app configured for it, and webhook events signed
exactly the way Stripe signs them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, get_jobs
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.payments import subjects
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from {{ cookiecutter.package_name }}.payments.models import StripeCustomer, StripeEvent, Subscription
from tests.auth.conftest import signed_in
from tests.conftest import BUSY_TIMEOUT, clear_tables
from tests.loopback import serve_in_thread

SECRET_KEY = "sk_test_fake_0123456789"
WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
PRO_PRICE = "price_pro_monthly"
TEAM_PRICE = "price_team_monthly"
# A held answer outlasts the suite's SQLite busy timeout: a write that waited for a
# transaction holding the lock across a held Stripe call fails ("database is locked").
HOLD_SECONDS = BUSY_TIMEOUT + 10

# --- a fake Stripe API ------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeStripe:
    """Answers the endpoints the module calls, like Stripe does (idempotency included).

    It keeps Checkout Sessions and subscriptions: tests set a subscription's state here
    (`set_subscription`), which is the truth the module must converge to, and complete or
    expire sessions (`complete_checkout`, `expire_checkout`). `fail_with` makes every call
    answer that HTTP status with a Stripe error body. `hold` holds the answer to a read of a
    subscription (the state of the moment it was asked) until it is set (a slow Stripe; at
    most `HOLD_SECONDS`); `holding` is set once an answer is held.
    """

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    fail_with: int | None = None
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    hold: threading.Event | None = None
    holding: threading.Event = field(default_factory=threading.Event)
    # Billing meter events Stripe accepted, by identifier (a second one is refused, as Stripe
    # does); `meter_script`: how the next meter event requests go, one entry each: "fail"
    # (500, nothing recorded) or "lost" (recorded, but the answer is a 500).
    meter_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    meter_script: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _idempotent: dict[str, dict[str, Any]] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/customers", self.customers, methods=["POST"]),
                Route("/v1/checkout/sessions", self.checkout, methods=["POST"]),
                Route("/v1/checkout/sessions/{id}", self.get_session, methods=["GET"]),
                Route("/v1/checkout/sessions/{id}/expire", self.expire, methods=["POST"]),
                Route("/v1/billing_portal/sessions", self.portal, methods=["POST"]),
                Route("/v1/subscriptions", self.list_subscriptions, methods=["GET"]),
                Route("/v1/subscriptions/{id}", self.get_subscription, methods=["GET"]),
                Route("/v1/subscriptions/{id}", self.cancel_subscription, methods=["DELETE"]),
                Route("/v1/subscription_items/{id}", self.update_item, methods=["POST"]),
                Route("/v1/billing/meter_events", self.meter_event, methods=["POST"]),
            ]
        )

    def reset(self) -> None:
        self.calls.clear()
        self.fail_with = None
        self._idempotent.clear()
        self.sessions.clear()
        self.subscriptions.clear()
        self.meter_events.clear()
        self.meter_script.clear()
        if self.hold is not None:
            self.hold.set()  # nothing stays held past its test
        self.hold = None
        self.holding.clear()
        self._ids = itertools.count(1)

    def to(self, path: str, method: str = "POST") -> list[Call]:
        return [c for c in self.calls if c.path == path and c.method == method]

    # --- what tests do at "Stripe" ---

    def set_subscription(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Stripe's state of a subscription from now on (a copy is kept)."""
        self.subscriptions[obj["id"]] = json.loads(json.dumps(obj))
        return obj

    def complete_checkout(self, session_id: str, subscription_obj: dict[str, Any]) -> None:
        """The customer paid: the session completes with this subscription."""
        self.sessions[session_id].update(status="complete", subscription=subscription_obj["id"])
        self.set_subscription(subscription_obj)

    def expire_checkout(self, session_id: str) -> None:
        self.sessions[session_id].update(status="expired", url=None)

    # --- the API ---

    async def _record(self, request: Request) -> Call:
        form = await request.form() if request.method == "POST" else request.query_params
        call = Call(
            request.method,
            request.url.path,
            {k: str(v) for k, v in form.multi_items()},
            {k.lower(): v for k, v in request.headers.items()},
        )
        self.calls.append(call)
        return call

    async def _answer(self, request: Request, make: Any) -> Response:
        call = await self._record(request)
        if call.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=401)
        if self.fail_with is not None:
            return JSONResponse(
                {"error": {"type": "api_error", "message": "fake outage"}},
                status_code=self.fail_with,
            )
        key = call.headers.get("idempotency-key")
        if key and key in self._idempotent:
            return JSONResponse(self._idempotent[key])
        made = make(call, next(self._ids))
        if isinstance(made, Response):
            return made
        body: dict[str, Any] = made
        if key:
            self._idempotent[key] = body
        return JSONResponse(body)

    @staticmethod
    def _missing(what: str) -> Response:
        error = {"type": "invalid_request_error", "code": "resource_missing", "message": what}
        return JSONResponse({"error": error}, status_code=404)

    async def customers(self, request: Request) -> Response:
        return await self._answer(
            request,
            lambda call, n: {
                "id": f"cus_fake{n}",
                "object": "customer",
                "email": call.form.get("email"),
                "metadata": metadata(call.form),
            },
        )

    async def checkout(self, request: Request) -> Response:
        def make(call: Call, n: int) -> dict[str, Any]:
            session: dict[str, Any] = {
                "id": f"cs_test_{n}",
                "object": "checkout.session",
                "status": "open",
                "mode": call.form.get("mode"),
                "customer": call.form.get("customer"),
                "client_reference_id": call.form.get("client_reference_id"),
                "expires_at": int(call.form.get("expires_at") or 0) or None,
                "subscription": None,
                "url": f"https://checkout.stripe.test/c/pay/cs_test_{n}",
            }
            self.sessions[session["id"]] = session
            return session

        return await self._answer(request, make)

    async def get_session(self, request: Request) -> Response:
        found = self.sessions.get(request.path_params["id"])
        return await self._answer(
            request, lambda call, n: dict(found) if found else self._missing("no such session")
        )

    async def expire(self, request: Request) -> Response:
        def make(call: Call, n: int) -> dict[str, Any] | Response:
            found = self.sessions.get(request.path_params["id"])
            if found is None:
                return self._missing("no such session")
            if found["status"] != "open":
                error = {"type": "invalid_request_error", "message": "not open"}
                return JSONResponse({"error": error}, status_code=400)
            found.update(status="expired", url=None)
            return dict(found)

        return await self._answer(request, make)

    @staticmethod
    def _subscription_body(found: dict[str, Any], expand_invoice: bool) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(found))
        invoice = body.get("latest_invoice")
        if isinstance(invoice, dict) and not expand_invoice:
            body["latest_invoice"] = invoice["id"]  # not expanded
        return body

    async def get_subscription(self, request: Request) -> Response:
        def make(call: Call, n: int) -> dict[str, Any] | Response:
            found = self.subscriptions.get(request.path_params["id"])
            if found is None:
                return self._missing("no such subscription")
            return self._subscription_body(found, "latest_invoice" in call.form.values())

        answer = await self._answer(request, make)
        hold = self.hold
        if hold is not None:  # the state of this moment, slow to arrive
            self.holding.set()
            await asyncio.to_thread(hold.wait, HOLD_SECONDS)
        return answer

    async def cancel_subscription(self, request: Request) -> Response:
        """Cancel now, like Stripe: a canceled one cannot be canceled again (400)."""

        def make(call: Call, n: int) -> dict[str, Any] | Response:
            found = self.subscriptions.get(request.path_params["id"])
            if found is None:
                return self._missing("no such subscription")
            if found["status"] in ("canceled", "incomplete_expired"):
                error = {"type": "invalid_request_error", "message": "already canceled"}
                return JSONResponse({"error": error}, status_code=400)
            found.update(status="canceled", canceled_at=int(time.time()))
            return self._subscription_body(found, False)

        return await self._answer(request, make)

    async def update_item(self, request: Request) -> Response:
        """A subscription item's new quantity (the subscription keeps it)."""

        def make(call: Call, n: int) -> dict[str, Any] | Response:
            item_id = request.path_params["id"]
            for sub in self.subscriptions.values():
                for item in sub["items"]["data"]:
                    if item["id"] == item_id:
                        if "quantity" in call.form:
                            item["quantity"] = int(call.form["quantity"])
                        return dict(item, subscription=sub["id"])
            return self._missing("no such subscription item")

        return await self._answer(request, make)

    async def list_subscriptions(self, request: Request) -> Response:
        """Like Stripe: `limit`, `starting_after`, `status` (default: all but canceled)."""

        def make(call: Call, n: int) -> dict[str, Any] | Response:
            status = call.form.get("status")
            items = [
                s
                for s in self.subscriptions.values()
                if status == "all"
                or s["status"] == status
                or (not status and s["status"] != "canceled")
            ]
            ids = [s["id"] for s in items]
            after = call.form.get("starting_after")
            start = ids.index(after) + 1 if after in ids else 0
            limit = int(call.form.get("limit") or 10)
            expand = "data.latest_invoice" in call.form.values()
            return {
                "object": "list",
                "url": "/v1/subscriptions",
                "has_more": start + limit < len(items),
                "data": [self._subscription_body(s, expand) for s in items[start : start + limit]],
            }

        return await self._answer(request, make)

    def billed(self, customer_id: str) -> int:
        """The meter's sum for a customer: what Stripe would invoice."""
        return sum(
            int(e["payload"]["value"])
            for e in self.meter_events.values()
            if e["payload"]["stripe_customer_id"] == customer_id
        )

    async def meter_event(self, request: Request) -> Response:
        """`POST /v1/billing/meter_events`, like Stripe: an identifier is taken once."""
        call = await self._record(request)
        if call.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=401)
        script = self.meter_script.pop(0) if self.meter_script else None
        outage = JSONResponse(
            {"error": {"type": "api_error", "message": "fake outage"}}, status_code=500
        )
        if script == "fail" or self.fail_with is not None:
            return outage
        form = call.form
        identifier = form.get("identifier") or f"mev_{next(self._ids)}"
        value = form.get("payload[value]", "")
        timestamp = int(form.get("timestamp") or time.time())
        if not form.get("event_name") or not form.get("payload[stripe_customer_id]"):
            return self._invalid("event_name and payload[stripe_customer_id] are required")
        if not value.isdigit():
            return self._invalid("payload[value] must be a whole number")
        if not time.time() - 35 * 86400 <= timestamp <= time.time() + 300:
            return self._invalid("timestamp must be within the past 35 days")
        if identifier in self.meter_events:
            return self._invalid(f"An event already exists with identifier {identifier}.")
        made = {
            "object": "billing.meter_event",
            "created": int(time.time()),
            "event_name": form["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": {
                "stripe_customer_id": form["payload[stripe_customer_id]"],
                "value": value,
            },
            "timestamp": timestamp,
        }
        self.meter_events[identifier] = made
        return outage if script == "lost" else JSONResponse(made)

    @staticmethod
    def _invalid(message: str) -> Response:
        error = {"type": "invalid_request_error", "message": message}
        return JSONResponse({"error": error}, status_code=400)

    async def portal(self, request: Request) -> Response:
        return await self._answer(
            request,
            lambda call, n: {
                "id": f"bps_{n}",
                "object": "billing_portal.session",
                "customer": call.form.get("customer"),
                "return_url": call.form.get("return_url"),
                "url": f"https://billing.stripe.test/p/session/bps_{n}",
            },
        )


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[FakeStripe]:
    fake = FakeStripe()
    with serve_in_thread(fake.app(), "the fake Stripe API") as url:
        fake.url = url
        yield fake


@pytest.fixture
def fake_stripe(stripe_server: FakeStripe) -> FakeStripe:
    stripe_server.reset()
    return stripe_server


# --- the app ----------------------------------------------------------------------------------


def make_payments_settings(api_base: str, **overrides: Any) -> PaymentsSettings:
    values: dict[str, Any] = {
        "stripe_secret_key": SECRET_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_api_base": api_base,
        "stripe_max_network_retries": 0,
        "stripe_timeout": HOLD_SECONDS + 5,  # a held answer is slow, not lost
        "plans": [
            {"key": "pro", "name": "Pro", "price_id": PRO_PRICE, "ai_monthly_tokens": 1_000_000},
            {
                "key": "team",
                "name": "Team",
                "price_id": TEAM_PRICE,
                "ai_monthly_tokens": None,
                "features": ["sso"],
            },
        ],
        "free_plan": {"key": "free", "name": "Free", "ai_monthly_tokens": 1000},
        "success_url": "http://frontend.test/billing/done",
        "cancel_url": "http://frontend.test/billing",
        "portal_return_url": "http://frontend.test/account",
    }
    values.update(overrides)
    return PaymentsSettings(_env_file=None, **values)


@pytest.fixture
def payments_settings(fake_stripe: FakeStripe) -> PaymentsSettings:
    return make_payments_settings(fake_stripe.url)


@asynccontextmanager
async def running_app(
    settings: Settings, payments_settings: PaymentsSettings, **state: Any
) -> AsyncIterator[FastAPI]:
    """The app with these payments settings (and `state`: more `app.state` members, e.g.
    `ai_settings`), started; afterwards its jobs finished and its tables emptied."""
    application = create_app(settings)
    application.state.auth_settings = AuthSettings(_env_file=None, cookie_secure=False)
    application.state.payments_settings = payments_settings
    for name, value in state.items():
        setattr(application.state, name, value)
    async with LifespanManager(application):
        yield application
        await drain(application)  # no job may write while the tables are cleared
        await application.state.rate_limiter.reset()
        await clear_tables(application.state.database)


@pytest.fixture
async def app(
    settings: Settings, migrated: Config, payments_settings: PaymentsSettings
) -> AsyncIterator[FastAPI]:
    async with running_app(settings, payments_settings) as application:
        yield application


# --- users ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    headers: dict[str, str]
    user_id: str
    subject_id: str  # who pays for the user (payments/subjects.py)
    customer_id: str


async def subject_of(app: FastAPI, user_id: str) -> str:
    """The billing subject the user-level routes act on for this user."""
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        user = await session.get(User, uuid.UUID(user_id))
        assert user is not None
        return str(await subjects.current().of_user(session, user))


async def customer(app: FastAPI, client: AsyncClient, email: str) -> Customer:
    """A signed-in user whose Stripe customer exists (made through the portal route)."""
    headers = await signed_in(client, email)
    me = await client.get("/api/v1/users/me", headers=headers)
    portal = await client.post("/api/v1/payments/portal", headers=headers)
    assert portal.status_code == 200, portal.text
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        rows = (await session.execute(select(StripeCustomer))).scalars().all()
    subject_id = await subject_of(app, me.json()["id"])
    ids = [r.customer_id for r in rows if str(r.subject_id) == subject_id]
    assert len(ids) == 1
    return Customer(headers, me.json()["id"], subject_id, ids[0])


def metadata(form: dict[str, str], prefix: str = "metadata") -> dict[str, str]:
    """The `metadata[...]` fields of a form-encoded Stripe request."""
    return {
        key[len(prefix) + 1 : -1]: value
        for key, value in form.items()
        if key.startswith(f"{prefix}[") and key.endswith("]") and "][" not in key
    }


# --- webhook events, signed like Stripe -------------------------------------------------------


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """`Stripe-Signature`: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<payload>">."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(event_id: str, type_: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
        "data": {"object": obj},
    }


def invoice(
    invoice_id: str, status: str = "paid", *, attempted: bool = True, sub_id: str = "sub_1"
) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "status": status,
        "attempted": attempted,
        "attempt_count": 1 if attempted else 0,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub_id},
        },
    }


def subscription(
    customer_id: str,
    *,
    status: str = "active",
    price: str = PRO_PRICE,
    sub_id: str = "sub_1",
    period_end: int = 1_900_000_000,
    cancel_at_period_end: bool = False,
    metadata: dict[str, str] | None = None,
    latest_invoice: dict[str, Any] | None = None,
    quantity: int = 1,
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer_id,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "metadata": metadata or {},
        "latest_invoice": latest_invoice,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id}",
                    "object": "subscription_item",
                    "current_period_end": period_end,
                    "price": {"id": price, "object": "price"},
                    "quantity": quantity,
                }
            ],
        },
    }


def subscription_event(
    event_id: str, type_: str, customer_id: str, created: int, **fields: Any
) -> dict[str, Any]:
    """An event carrying a snapshot of a subscription (the module reads Stripe's state)."""
    return event(event_id, type_, subscription(customer_id, **fields), created)


def stripe_event(
    fake: FakeStripe, event_id: str, type_: str, customer_id: str, created: int, **fields: Any
) -> dict[str, Any]:
    """The subscription changes at Stripe, and Stripe emits an event about it."""
    obj = fake.set_subscription(subscription(customer_id, **fields))
    return event(event_id, type_, obj, created)


async def deliver(
    client: AsyncClient,
    body: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
) -> httpx.Response:
    payload = json.dumps(body).encode()
    header = signature if signature is not None else sign(payload, secret, timestamp)
    return await client.post(
        "/api/v1/payments/webhook",
        content=payload,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


async def ledger(app: FastAPI) -> dict[str, StripeEvent]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        rows = (await session.execute(select(StripeEvent))).scalars().all()
    return {row.id: row for row in rows}


async def subscriptions(app: FastAPI) -> dict[str, Subscription]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        rows = (await session.execute(select(Subscription))).scalars().all()
    return {row.id: row for row in rows}


# --- the jobs that apply events -----------------------------------------------------------


async def drain(app: FastAPI) -> int:
    """Run every due job now (the app runs them by itself too; this waits for them)."""
    return await get_jobs(app).drain()


async def jobs(app: FastAPI) -> dict[str, JobRecord]:
    """The payments module's jobs (other modules' jobs, e.g. a sign-up's email, left out)."""
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        query = select(JobRecord).where(JobRecord.name.startswith("payments."))
        rows = (await session.execute(query)).scalars().all()
    return {row.id: row for row in rows}


async def make_due(app: FastAPI, job_id: str) -> None:
    """Time passes: a job waiting for its retry is due now."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            update(JobRecord).where(JobRecord.id == job_id).values(run_at=datetime.now(UTC))
        )


async def apply(app: FastAPI, client: AsyncClient, body: dict[str, Any]) -> str | None:
    """Deliver an event, let its job run; the ledger's outcome (None: not processed)."""
    response = await deliver(client, body)
    assert response.status_code == 200, response.text
    await drain(app)
    return (await ledger(app))[body["id"]].outcome
