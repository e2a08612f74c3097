"""The orgs routes keep the OpenAPI contract, signed in as a real, verified user."""

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


@pytest.fixture(scope="module")
def orgs_app(
    settings: Settings,
    migrated: Config,
    oidc_server: FakeProvider,
    smtp_server: tuple[Outbox, int],
) -> Iterator[Signed]:
    outbox, port = smtp_server
    app = create_app(settings)
    app.state.auth_settings = make_auth_settings(oidc_server.url)
    app.state.mailer = Mailer(
        EmailSettings(
            _env_file=None,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            email_from="app@example.com",
        )
    )
    yield app, sign_up(app, "orgs-contract@example.com", outbox)
    stop(app, settings)


# Other modules' routes under /orgs/{org_id}/ (billing, ai) are checked by their own tests.
@contract_test(
    document().include(path_regex=r"^/api/v1/(invitations|orgs(?!/[^/]+/(billing|ai)/))")
)
def test_orgs_routes_keep_the_contract(case: ContractCase, orgs_app: Signed) -> None:
    app, headers = orgs_app
    case.call_and_validate(app=app, headers=headers, checks=CHECKS, timeout=TIMEOUT)
