"""The API contract: what each route requires of its caller, and every problem it can answer.

Both are declared once, on the function that enforces them (a dependency, or the
endpoint itself), and found by walking each route's dependency tree, so a route
inherits what its dependencies declare and cannot forget it:

    declare(get_session, problems={503: "The database is busy or unreachable"})
    declare(scope_dependency, requires="scopes: write", problems={403: "..."})

    @router.get("/health/live")
    @public("liveness probe")
    async def live() -> Health: ...

Requirements: `public(reason)` for what anyone may call (and why), or whatever a
module's access dependencies declare (the auth module's scopes, its superuser
role). `tests/core/test_contract.py` fails for any route that declares none.

Problems: `install_contract(app)` rewrites the OpenAPI document so that every
status a route can answer with a problem is listed with the one `Problem`
schema under `application/problem+json`: those its dependencies declare, the
422 of FastAPI's request validation, 413 (and 400 when FastAPI parses it) for a
request body, and the endpoint's own (`responses=problems({404: "No such thing"})`,
or plain FastAPI `responses=`: any status from 400 up becomes a problem).
The core imports no optional module: modules register their own declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import Mount

from .errors import PROBLEM_JSON, Problem

F = TypeVar("F", bound=Callable[..., Any])

# A requirement is a label ("public: ...", "scopes: read") or, for a dependency whose need
# follows the HTTP method, a function of the method that returns the label.
Requirement = str | Callable[[str], str]

PUBLIC = "public"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# What every route that takes a request body may answer.
BODY_PROBLEMS = {413: "The request body is larger than MAX_BODY_BYTES"}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@dataclass
class Declaration:
    requires: list[Requirement] = field(default_factory=list)
    problems: dict[int, list[str]] = field(default_factory=dict)


# Keyed by the function FastAPI calls. Dependencies made by factories (one per use,
# such as `require_scopes("write")`) are made at import time, so this stays small.
_DECLARED: dict[Callable[..., Any], Declaration] = {}


def declare(
    call: F,
    *,
    requires: Requirement | None = None,
    problems: Mapping[int, str] | None = None,
) -> F:
    """Record what `call` (a dependency or an endpoint) requires and which problems it raises."""
    declaration = _DECLARED.setdefault(call, Declaration())
    if requires is not None:
        declaration.requires.append(requires)
    for status, description in (problems or {}).items():
        declaration.problems.setdefault(status, []).append(description)
    return call


def public(reason: str) -> Callable[[F], F]:
    """Mark an endpoint anyone may call, saying why (placed under the route decorator)."""

    def mark(endpoint: F) -> F:
        return declare(endpoint, requires=f"{PUBLIC}: {reason}")

    return mark


def problems(statuses: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """An endpoint's own problems, for its route decorator's `responses=`."""
    return {status: {"description": description} for status, description in statuses.items()}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def routes(app: FastAPI) -> Iterator[RouteContext]:
    """Every route of the app, those of included routers with their prefix and dependencies."""
    return iter_route_contexts(app.routes)


def is_api_route(route: RouteContext) -> bool:
    return isinstance(route.original_route, APIRoute)


def _declarations(route: RouteContext) -> Iterator[Declaration]:
    if is_api_route(route):
        calls: Iterator[Callable[..., Any]] = _calls(route.dependant)
    elif isinstance(route.original_route, Mount):
        calls = iter((route.original_route.app,))
    else:
        return
    for call in calls:
        declaration = _DECLARED.get(call)
        if declaration is not None:
            yield declaration


def requirements(route: RouteContext, method: str = "GET") -> list[str]:
    """What the route requires of its caller, as declared by it and its dependencies."""
    found = (r for d in _declarations(route) for r in d.requires)
    return list(dict.fromkeys(r if isinstance(r, str) else r(method) for r in found))


def problem_statuses(route: RouteContext) -> dict[int, list[str]]:
    """Each status the route's dependencies and endpoint declare, with its descriptions."""
    found: dict[int, list[str]] = {}
    for declaration in _declarations(route):
        for status, descriptions in declaration.problems.items():
            found.setdefault(status, []).extend(descriptions)
    if (route.methods or set()) & BODY_METHODS:
        for status, description in BODY_PROBLEMS.items():
            found.setdefault(status, []).append(description)
    if route.body_field is not None:  # FastAPI parses it: 400 when it cannot
        found.setdefault(400, []).append("The request body cannot be parsed")
    return found


def route_table(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, requirement) of every documented route, sorted by path."""
    rows = []
    for route in routes(app):
        if is_api_route(route) and route.include_in_schema:
            for method in sorted(route.methods or ()):
                path = str(route.path)
                rows.append((method, path, "; ".join(requirements(route, method))))
    return sorted(rows, key=lambda row: (row[1], row[0]))


def markdown_table(app: FastAPI) -> str:
    """The route table as Markdown (the docs hold the one of the project with every module)."""
    lines = ["| route | requires |", "| --- | --- |"]
    lines += [f"| `{method} {path}` | {needs} |" for method, path, needs in route_table(app)]
    return "\n".join(lines) + "\n"


# FastAPI's own descriptions, replaced by ours.
DEFAULT_DESCRIPTIONS = {422: "The request is not valid (`errors` lists the fields)"}


def _describe(status: int, descriptions: list[str], documented: str | None) -> str:
    generic = {HTTPStatus(status).phrase, "Validation Error", None, ""}
    parts = [] if documented in generic else [str(documented)]
    for text in descriptions:
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) or DEFAULT_DESCRIPTIONS.get(status, HTTPStatus(status).phrase)


def _problem_response(status: int, description: str, existing: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if status in (429, 503) or "headers" in existing:
        answer["headers"] = {
            **existing.get("headers", {}),
            **(
                {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
                if status in (429, 503)
                else {}
            ),
        }
    return answer


def document_problems(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite an OpenAPI document so that each route lists every problem it can answer."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for route in routes(app):
        if not is_api_route(route) or not route.include_in_schema:
            continue
        declared = problem_statuses(route)
        for method in route.methods or ():
            operation = schema["paths"].get(str(route.path_format), {}).get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            statuses = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
            for status in sorted(statuses | set(declared)):
                existing = responses.get(str(status), {})
                description = _describe(
                    status, declared.get(status, []), existing.get("description")
                )
                responses[str(status)] = _problem_response(status, description, existing)
            operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's own validation-error schemas are no longer referenced.
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def install_contract(app: FastAPI) -> None:
    """Serve the OpenAPI document with every route's problems (see the module's docstring)."""
    openapi = app.openapi

    def contract() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(app, openapi())
        return app.openapi_schema

    app.openapi = contract  # type: ignore[method-assign]
