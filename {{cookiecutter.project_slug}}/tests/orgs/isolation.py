"""The walker behind test_isolation.py: every org-scoped route, called across organizations.

For every route of the app whose path holds `{org_id}` (read from `app.routes`, so a route
any module adds later is walked too), a member of organization A calls it

- with organization B's id (and B's ids for the path's other ids), and
- when the path has other ids: with A's id and B's ids,

and must get 404 problem+json, and B's rows must be unchanged afterwards.

The path's other ids come from PATH_IDS, by parameter name: a factory that makes (or
finds) a row of organization B and gives its id. A route with a path parameter that is
not in PATH_IDS fails the walk, naming the parameter: add a factory for it. Bodies are
made from the route's request schema in the OpenAPI document (the required fields, each
with the smallest value its schema allows); where that cannot be done the walk fails
and names the route: add its body to BODIES.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.routing import RouteContext
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.models import ApiKey
from {{ cookiecutter.package_name }}.core.contract import is_api_route, routes
from {{ cookiecutter.package_name }}.core.db import Base, Database, bypass_row_security
from {{ cookiecutter.package_name }}.orgs.models import Invitation, Organization, OrgApiKey

ORG_PARAM = "org_id"
ORG_IN_PATH = "{org_id}"
PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True)
class Tenant:
    """Organization B, as the factories see it: its id and its owner's (not in A)."""

    org_id: uuid.UUID
    owner_id: uuid.UUID


PathId = Callable[[AsyncSession, Tenant], Awaitable[object]]
PATH_IDS: dict[str, PathId] = {}


def path_id(name: str) -> Callable[[PathId], PathId]:
    """Register the factory of a path parameter: a row of organization B, and its id."""

    def register(factory: PathId) -> PathId:
        PATH_IDS[name] = factory
        return factory

    return register


@path_id("user_id")
async def _member_of_b(session: AsyncSession, b: Tenant) -> object:
    return b.owner_id  # B's owner: a member of B, not of A


@path_id("key_id")
async def _api_key_of_b(session: AsyncSession, b: Tenant) -> object:
    """An API key of B's owner that belongs to B."""
    api_key = ApiKey(
        user_id=b.owner_id,
        name="b's key",
        prefix="sk_b",
        key_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        scope="read write",
    )
    session.add(api_key)
    await session.flush()
    session.add(OrgApiKey(api_key_id=api_key.id, org_id=b.org_id, role="member"))
    await session.flush()
    return api_key.id


@path_id("invitation_id")
async def _invitation_of_b(session: AsyncSession, b: Tenant) -> object:
    invitation = Invitation(
        org_id=b.org_id,
        email="invited-to-b@example.com",
        role="member",
        token_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        invited_by=b.owner_id,
        expires_at=datetime.now(UTC) + timedelta(days=7),
    )
    session.add(invitation)
    await session.flush()
    return invitation.id


# "METHOD /path" -> the JSON body to send, where the schema cannot give a valid one.
BODIES: dict[str, object] = {}


class WalkError(AssertionError):
    """The walker cannot call a route: the message says what the route's author must add."""


@dataclass(frozen=True)
class Call:
    route: str  # "METHOD /path"
    method: str
    url: str
    body: object | None


def org_routes(app: FastAPI) -> list[RouteContext]:
    """Every API route whose path holds `{org_id}`, with its router's prefix."""
    return [r for r in routes(app) if is_api_route(r) and ORG_IN_PATH in (r.path or "")]


def path_params(path: str) -> list[str]:
    return PATH_PARAM.findall(path)


async def ids_of_b(app: FastAPI, b: Tenant) -> dict[str, object]:
    """One row of B per path parameter any org-scoped route has; unknown names fail."""
    wanted = {p for r in org_routes(app) for p in path_params(str(r.path))} - {ORG_PARAM}
    unknown = sorted(wanted - PATH_IDS.keys())
    if unknown:
        raise WalkError(
            f"org-scoped routes take path parameters the isolation walk cannot fill: {unknown}. "
            "Add a factory for each to PATH_IDS in tests/orgs/isolation.py "
            '(@path_id("name"): make a row of organization B and return its id).'
        )
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await bypass_row_security(session)
        return {name: str(await PATH_IDS[name](session, b)) for name in sorted(wanted)}


def calls(app: FastAPI, a_org: uuid.UUID, b_org: uuid.UUID, b_ids: dict[str, object]) -> list[Call]:
    """Every cross-organization call of every org-scoped route."""
    out: list[Call] = []
    app.openapi_schema = None  # routes may have been added since it was built
    document = app.openapi()
    for route in org_routes(app):
        path = str(route.path)
        orgs = [b_org] if path_params(path) == [ORG_PARAM] else [b_org, a_org]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            label = f"{method} {path}"
            body = request_body(document, path, method, label)
            for org in orgs:
                url = fill(path, {**b_ids, ORG_PARAM: str(org)})
                out.append(Call(label, method, url, body))
    return out


def fill(path: str, values: dict[str, object]) -> str:
    return PATH_PARAM.sub(lambda m: str(values[m.group(1)]), path)


async def walk(
    app: FastAPI, client: AsyncClient, headers: dict[str, str], a_org: uuid.UUID, b: Tenant
) -> tuple[list[str], list[str]]:
    """(routes walked, failures): each failure names the call and what it answered."""
    b_ids = await ids_of_b(app, b)
    before = await snapshot(app, b)
    failures: list[str] = []
    planned = calls(app, a_org, b.org_id, b_ids)
    for call in planned:
        response = await client.request(call.method, call.url, headers=headers, json=call.body)
        problem = response.headers.get("content-type") == "application/problem+json"
        if response.status_code != 404 or not problem:
            failures.append(
                f"{call.route} as {call.url}: {response.status_code} "
                f"{response.headers.get('content-type')} {response.text[:200]}"
            )
    if await snapshot(app, b) != before:
        failures.append("organization B's rows changed during the walk")
    return sorted({c.route for c in planned}), failures


async def snapshot(app: FastAPI, b: Tenant) -> dict[str, list[tuple[Any, ...]]]:
    """B's organization row and every row of every table with an `org_id` in B."""
    database: Database = app.state.database
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with database.sessionmaker() as session, session.begin():
        await bypass_row_security(session)
        org = await session.execute(
            select(Organization.__table__).where(Organization.id == b.org_id)
        )
        out["organizations"] = [tuple(row) for row in org]
        for table in Base.metadata.sorted_tables:
            if "org_id" in table.c:
                rows = await session.execute(select(table).where(table.c.org_id == b.org_id))
                out[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return out


# --- request bodies from the OpenAPI document --------------------------------------------


def request_body(document: dict[str, Any], path: str, method: str, label: str) -> object | None:
    if label in BODIES:
        return BODIES[label]
    operation = document["paths"][path][method.lower()]
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and parameter.get("required"):
            raise WalkError(
                f"{label} needs the query parameter {parameter['name']!r}: the isolation walk "
                "sends none; give it a default or teach tests/orgs/isolation.py to send it"
            )
    body = operation.get("requestBody")
    if body is None:
        return None
    content = body.get("content", {})
    if "application/json" not in content:
        raise WalkError(
            f"{label} takes a non-JSON body: add one to BODIES in tests/orgs/isolation.py"
        )
    return sample(content["application/json"]["schema"], document, label)


def sample(schema: dict[str, Any], document: dict[str, Any], label: str) -> object:
    """The smallest valid value of a JSON schema, for the cases request models use."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return sample(document["components"]["schemas"][name], document, label)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("examples"):
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            branches = [s for s in schema[key] if s.get("type") != "null"]
            return sample(branches[0], document, label)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {k: sample(properties[k], document, label) for k in schema.get("required", [])}
    if kind == "string":
        formats = {
            "email": "walker@example.com",
            "uuid": str(uuid.uuid4()),
            "date-time": datetime.now(UTC).isoformat(),
            "uri": "https://example.com/",
        }
        if schema.get("format") in formats:
            return formats[schema["format"]]
        if "pattern" not in schema:
            return "x" * max(int(schema.get("minLength", 1)), 1)
    if kind in ("integer", "number"):
        if "minimum" in schema:
            return schema["minimum"]
        if "exclusiveMinimum" in schema:
            return schema["exclusiveMinimum"] + 1
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample(schema["items"], document, label)] * int(schema.get("minItems", 0))
    raise WalkError(
        f"{label}: cannot make a valid body from the schema {schema}; "
        "add one to BODIES in tests/orgs/isolation.py"
    )
