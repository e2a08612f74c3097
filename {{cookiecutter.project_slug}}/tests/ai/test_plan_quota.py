"""The AI seam with plans: the monthly allowance is the caller's plan's.

Removed from projects without the payments module (see the hook's table).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.payments import subjects
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings, Plan
from {{ cookiecutter.package_name }}.payments.models import Subscription
from tests.ai.conftest import http, ledger, make_ai_settings
from tests.ai.fake_upstream import FakeUpstream
from tests.auth.conftest import login, register
from tests.conftest import clear_tables

CHAT = "/api/v1/ai/chat"
HELLO = {"messages": [{"role": "user", "content": "Say hello"}]}


def app_with_free_plan(settings: Settings, upstream: FakeUpstream, tokens: int | None) -> FastAPI:
    app = create_app(settings)
    # A generous default that the plan must override.
    app.state.ai_settings = make_ai_settings(upstream, monthly_token_quota=10**9)
    free: dict[str, Any] = {"key": "free", "name": "Free", "ai_monthly_tokens": tokens}
    app.state.payments_settings = PaymentsSettings(_env_file=None, free_plan=Plan(**free))
    return app


async def test_the_free_plan_allowance_is_enforced_before_the_upstream(
    settings: Settings, migrated: object, upstream: FakeUpstream
) -> None:
    app = app_with_free_plan(settings, upstream, tokens=1)
    async with LifespanManager(app), http(app) as client:
        try:
            await register(client, "free@example.com")
            token = (await login(client, "free@example.com"))["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            first = await client.post(CHAT, json=HELLO, headers=headers)
            assert first.status_code == 200, first.text  # under the allowance until used
            calls = len(upstream.requests)
            second = await client.post(CHAT, json=HELLO, headers=headers)
            assert second.status_code == 429
            assert second.headers["content-type"] == "application/problem+json"
            assert len(upstream.requests) == calls  # refused before any upstream call
            assert len(await ledger(app)) == 1
        finally:
            await app.state.rate_limiter.reset()
            await clear_tables(app.state.database)


async def test_a_paid_plan_allowance_replaces_the_free_one(
    settings: Settings, migrated: object, upstream: FakeUpstream
) -> None:
    """The plan is read from the caller's subscription (in a session of the quota's own: on
    PostgreSQL with row-level security it enters the billing subject first, else it would
    see no subscription and apply the free plan's allowance)."""
    app = app_with_free_plan(settings, upstream, tokens=1)
    paid = Plan(key="pro", name="Pro", price_id="price_pro", ai_monthly_tokens=10**6)
    app.state.payments_settings = PaymentsSettings(
        _env_file=None, free_plan=app.state.payments_settings.free_plan, plans=[paid]
    )
    async with LifespanManager(app), http(app) as client:
        try:
            user = await register(client, "paid@example.com")
            token = (await login(client, "paid@example.com"))["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            database: Database = app.state.database
            async with database.sessionmaker() as session, session.begin():
                account = await session.get(User, uuid.UUID(user["id"]))
                assert account is not None
                subject_id = await subjects.current().of_user(session, account)
                session.add(
                    Subscription(
                        id="sub_paid",
                        subject_id=subject_id,
                        customer_id="cus_paid",
                        status="active",
                        price_id="price_pro",
                        state_as_of=datetime.now(UTC),
                    )
                )
            for _ in range(2):  # past the free plan's one token
                answer = await client.post(CHAT, json=HELLO, headers=headers)
                assert answer.status_code == 200, answer.text
            assert len(await ledger(app)) == 2
        finally:
            await app.state.rate_limiter.reset()
            await clear_tables(app.state.database)
