"""The AI seam with plans: the monthly allowance is the caller's plan's.

Removed from projects without the payments module (see the hook's table).
"""

from __future__ import annotations

from typing import Any

from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings, Plan
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
