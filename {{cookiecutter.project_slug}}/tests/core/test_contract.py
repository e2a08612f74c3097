"""The route table and the OpenAPI contract, for whatever modules this project has.

Every route declares what it requires (public, or a scope or role its
dependencies enforce), so a new route cannot forget; every error status a route
can answer is documented as a problem (application/problem+json, one schema).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.contract import (
    PROBLEM_REF,
    is_api_route,
    problems,
    public,
    requirements,
    routes,
)
from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.core.errors import PROBLEM_JSON
from {{ cookiecutter.package_name }}.core.ratelimit import rate_limit
from {{ cookiecutter.package_name }}.main import create_app

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture
def bare_app(settings: Settings) -> FastAPI:
    """The app as configured, not started: building the route table needs no database."""
    return create_app(settings)


def undeclared(app: FastAPI) -> list[str]:
    """Routes that declare no requirement, FastAPI's own documentation pages aside."""
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    missing = []
    for route in routes(app):
        if not is_api_route(route) and route.path in docs:
            continue
        for method in sorted(route.methods or {"*"}):
            if not requirements(route, method):
                missing.append(f"{method} {route.path}")
    return missing


def test_every_route_declares_what_it_requires(bare_app: FastAPI) -> None:
    missing = undeclared(bare_app)
    assert not missing, (
        "routes that declare no requirement (add a scope dependency, or @public(reason)): "
        + ", ".join(missing)
    )


def test_a_route_that_forgets_is_caught(bare_app: FastAPI) -> None:
    router = APIRouter(prefix="/api/v1/things")

    @router.get("")
    async def forgot(session: SessionDep) -> None: ...

    @router.get("/open")
    @public("a test route")
    async def open_to_all() -> None: ...

    bare_app.include_router(router)
    assert undeclared(bare_app) == ["GET /api/v1/things"]


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_error_is_a_problem(bare_app: FastAPI) -> None:
    schema = bare_app.openapi()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert "Problem" in schema["components"]["schemas"]
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}, (
                    f"{method} {path} {status}"
                )


def test_the_problems_of_dependencies_are_documented(bare_app: FastAPI) -> None:
    router = APIRouter(prefix="/api/v1/things")

    @router.post(
        "/{thing_id}",
        dependencies=[rate_limit("5/minute")],
        responses=problems({404: "No such thing"}),
    )
    @public("a test route")
    async def change(thing_id: int, session: SessionDep) -> None: ...

    bare_app.include_router(router)
    responses = bare_app.openapi()["paths"]["/api/v1/things/{thing_id}"]["post"]["responses"]
    assert set(responses) == {"200", "404", "413", "422", "429", "503"}
    assert responses["404"]["description"] == "No such thing"
    assert "Retry-After" in responses["429"]["headers"]


def test_health_documents_its_503(bare_app: FastAPI) -> None:
    schema = bare_app.openapi()
    assert "200" in schema["paths"]["/health/live"]["get"]["responses"]
    assert set(schema["paths"]["/health/ready"]["get"]["responses"]) == {"200", "503"}
