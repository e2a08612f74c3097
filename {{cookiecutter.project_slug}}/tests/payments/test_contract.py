"""The payments routes keep the OpenAPI contract, signed in, against the fake Stripe API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from tests.auth.conftest import sign_up
from tests.contract import CHECKS, TIMEOUT, ContractCase, contract_test, document, stop
from tests.payments.conftest import FakeStripe, make_payments_settings

Signed = tuple[FastAPI, dict[str, str]]


@pytest.fixture(scope="module")
def billing_app(
    settings: Settings, migrated: Config, stripe_server: FakeStripe
) -> Iterator[Signed]:
    stripe_server.reset()
    app = create_app(settings)
    app.state.auth_settings = AuthSettings(_env_file=None, cookie_secure=False)
    app.state.payments_settings = make_payments_settings(stripe_server.url)
    yield app, sign_up(app, "billing-contract@example.com")
    stop(app, settings)


@contract_test(document().include(path_regex="^/api/v1/payments/"))
def test_payments_routes_keep_the_contract(case: ContractCase, billing_app: Signed) -> None:
    app, headers = billing_app
    case.call_and_validate(app=app, headers=headers, checks=CHECKS, timeout=TIMEOUT)
