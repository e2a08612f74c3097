"""The AI routes keep the OpenAPI contract, against the fake upstream (tests/contract.py).

With accounts, tests/ai/test_signed_in.py runs the same check signed in.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from alembic.config import Config
from fastapi import FastAPI
from schemathesis import checks

from {{ cookiecutter.package_name }}.ai.structured import INVALID_OUTPUT
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from tests.ai.conftest import SIGNED_IN, make_ai_settings
from tests.ai.fake_upstream import FakeUpstream, start
from tests.contract import CHECKS, TIMEOUT, ContractCase, contract_test, document, stop


def not_a_server_error(ctx: Any, response: Any, case: ContractCase) -> bool | None:
    """No 5xx, but the documented 502 of an answer that fails the request's response_format.

    The fake upstream answers prose to whatever schema schemathesis makes up: that 502
    is the app doing its job (tests/ai/test_structured.py), not a server error.
    """
    if response.status_code == 502 and INVALID_OUTPUT in response.text:
        return None
    return checks.not_a_server_error(ctx, response, case)


AI_CHECKS = [not_a_server_error if c is checks.not_a_server_error else c for c in CHECKS]


@contextmanager
def upstream_in_thread() -> Iterator[FakeUpstream]:
    """The fake upstream on an event loop of its own (the contract tests are not async)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeUpstream()
    runner = asyncio.run_coroutine_threadsafe(start(fake), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def ai_app(settings: Settings) -> Iterator[FastAPI]:
    """The app, its AI module configured for the fake upstream; stopped and emptied after."""
    with upstream_in_thread() as upstream:
        app = create_app(settings)
        app.state.ai_settings = make_ai_settings(upstream, transport="fast")
        try:
            yield app
        finally:
            stop(app, settings)


@pytest.fixture(scope="module")
def open_ai_app(settings: Settings, migrated: Config) -> Iterator[FastAPI]:
    with ai_app(settings) as app:
        yield app


@pytest.mark.skipif(SIGNED_IN, reason="with accounts, test_signed_in.py checks it signed in")
@contract_test(document().include(path_regex="^/api/v1/ai/"))
def test_ai_routes_keep_the_contract(case: ContractCase, open_ai_app: FastAPI) -> None:
    case.call_and_validate(app=open_ai_app, checks=AI_CHECKS, timeout=TIMEOUT)
