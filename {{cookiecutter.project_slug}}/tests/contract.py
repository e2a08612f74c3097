"""Schemathesis against the ASGI app: the OpenAPI document is the contract, and it holds.

Each module's tests check its own routes, so each check goes with its module:

    @contract_test(document().include(path_regex="^/api/v1/things"))
    def test_contract(case: ContractCase, things_app: FastAPI) -> None:
        case.call_and_validate(app=things_app, headers=..., checks=CHECKS)

For every route: no 5xx; each status, content type and body is one the document lists
for that route (errors as application/problem+json with the Problem schema). Generation
is deterministic and small (`MAX_EXAMPLES` a route), so a run takes seconds, the same
each time. The document is read at collection from the module-level app (the routes do
not depend on settings); the requests go to the test's own app, whose lifespan runs in
schemathesis's event-loop thread until `stop`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.main import app as module_app
from tests.conftest import BUSY_TIMEOUT, clear_tables

MAX_EXAMPLES = 8
# How long a request may take before the client gives up: longer than SQLite's busy
# timeout in the tests, so that a request waiting for the write lock on a loaded machine
# is slow, not cancelled (schemathesis cancels the app at its timeout, 10 s by default).
TIMEOUT = BUSY_TIMEOUT + 30

ContractCase = schemathesis.Case[Any]
Test = TypeVar("Test", bound=Callable[..., None])

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]

CONTRACT_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def document() -> BaseSchema:
    """The app's OpenAPI document, as schemathesis tests it."""
    schema = schemathesis.openapi.from_dict(module_app.openapi())
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES, deterministic=True, with_security_parameters=False
    )
    return schema


def contract_test(schema: BaseSchema) -> Callable[[Test], Test]:
    """A test run once per operation of `schema`, with the cases schemathesis generates."""

    def decorate(test: Test) -> Test:
        parametrized: Test = schema.parametrize()(CONTRACT_SETTINGS(test))
        return parametrized

    return decorate


def call(app: FastAPI, method: str, path: str, **parts: Any) -> Any:
    """One explicit request to the app, outside the generated ones (to sign up, sign in)."""
    return document()[path][method].Case(**parts).call(app=app, timeout=TIMEOUT)


def stop(app: FastAPI, settings: Settings) -> None:
    """End the app's lifespan and empty its tables."""
    asgi.shutdown_lifespans()

    async def clear() -> None:
        database = Database.from_settings(settings)
        try:
            await clear_tables(database)
        finally:
            await database.engine.dispose()

    asyncio.run(clear())
