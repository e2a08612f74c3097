"""The core's own routes (health) keep the OpenAPI contract: schemathesis, see tests/contract.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from tests.contract import CHECKS, TIMEOUT, ContractCase, contract_test, document, stop


@pytest.fixture(scope="module")
def health_app(settings: Settings, migrated: Config) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    stop(app, settings)


@contract_test(document().include(path_regex="^/health/"))
def test_health_routes_keep_the_contract(case: ContractCase, health_app: FastAPI) -> None:
    case.call_and_validate(app=health_app, checks=CHECKS, timeout=TIMEOUT)
