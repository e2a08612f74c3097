"""The auth routes keep the OpenAPI contract, signed in as a real, verified user."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.email import EmailSettings, Mailer
from {{ cookiecutter.package_name }}.main import create_app
from tests.auth.conftest import FakeProvider, Outbox, make_auth_settings, sign_up
from tests.contract import CHECKS, TIMEOUT, ContractCase, contract_test, document, stop

Signed = tuple[FastAPI, dict[str, str]]

# Generous limits, so that requests reach the routes' own rules, not only their 429.
LIMITS = {
    f"{name}_limit_per_{per}": "1000/minute"
    for name, per in (
        ("login", "client"),
        ("login", "email"),
        ("register", "client"),
        ("forgot", "client"),
        ("forgot", "email"),
        ("reset", "client"),
    )
}


@pytest.fixture(scope="module")
def signed_in_app(
    settings: Settings,
    migrated: Config,
    oidc_server: FakeProvider,
    smtp_server: tuple[Outbox, int],
) -> Iterator[Signed]:
    outbox, port = smtp_server
    app = create_app(settings)
    app.state.auth_settings = make_auth_settings(oidc_server.url, **LIMITS)
    app.state.mailer = Mailer(
        EmailSettings(
            _env_file=None,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            email_from="app@example.com",
        )
    )
    yield app, sign_up(app, "contract@example.com", outbox)
    stop(app, settings)


@contract_test(document().include(path_regex="^/api/v1/(auth|users|api-keys)"))
def test_auth_routes_keep_the_contract(case: ContractCase, signed_in_app: Signed) -> None:
    app, headers = signed_in_app
    case.call_and_validate(app=app, headers=headers, checks=CHECKS, timeout=TIMEOUT)
