"""The org-scoped read with row-level security on and off (PostgreSQL), and its statements.

Used by run.py's `orgs` scenario. The app connects either as a login role made here
(no superuser, no BYPASSRLS: the policies hold it: "RLS on") or as the server's superuser
(never held: "RLS off"); the same database, rows and request. Seeding writes rows with
SQL as the superuser: members (accounts and memberships), pending invitations and, with
payments, active subscriptions.

    python bench/orgs_bench.py <project>/src <package> <superuser-url> <role-url> <path> 1 10 20

prints JSON pairs [members, statements] for one request of <path> ("{org_id}" in it),
counted in-process with a `before_cursor_execute` listener, the app as the role.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from asgi_lifespan import LifespanManager
from count_statements import counting_app  # bench/ is on the path of a script run from it
from httpx import ASGITransport, AsyncClient
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

PASSWORD = "bench-password-123456"
GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
)


Statement = tuple[str, dict[str, Any] | list[dict[str, Any]]]


async def _execute(url: str, *statements: Statement) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for sql, params in statements:
                await connection.execute(text(sql), params)
    finally:
        await engine.dispose()


def make_role(url: str) -> str:
    """A login role the policies hold, with the app's grants; its URL."""
    role = f"bench_app_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    statements: list[Statement] = [(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'", {})]
    statements += [(grant.format(role=role), {}) for grant in GRANTS]
    asyncio.run(_execute(url, *statements))
    return make_url(url).set(username=role, password=password).render_as_string(False)


def drop_role(url: str, role_url: str) -> None:
    role = make_url(role_url).username
    asyncio.run(_execute(url, (f"DROP OWNED BY {role}", {}), (f"DROP ROLE {role}", {})))


def seed(url: str, org_id: str, members: int, invitations: int, start: int = 0) -> None:
    """`members` accounts joined to the organization, and `invitations` pending invitations."""
    users = [{"id": uuid.uuid4(), "email": f"m{start + i}-{org_id[:8]}@example.com"}
             for i in range(members)]  # fmt: skip
    rows: list[Statement] = []
    if users:
        rows.append(("INSERT INTO users (id, email) VALUES (:id, :email)", users))
        rows.append((
            "INSERT INTO memberships (org_id, user_id, role) VALUES (:org, :id, 'member')",
            [{"org": uuid.UUID(org_id), "id": u["id"]} for u in users],
        ))  # fmt: skip
    expires = datetime.now(UTC) + timedelta(days=7)
    invited = [
        {
            "id": uuid.uuid4(),
            "org": uuid.UUID(org_id),
            "email": f"i{start + i}-{org_id[:8]}@example.com",
            "hash": hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
            "expires": expires,
        }
        for i in range(invitations)
    ]
    if invited:
        rows.append((
            "INSERT INTO invitations (id, org_id, email, role, token_hash, expires_at)"
            " VALUES (:id, :org, :email, 'member', :hash, :expires)",
            invited,
        ))  # fmt: skip
    if rows:
        asyncio.run(_execute(url, *rows))


def seed_billing(url: str, org_id: str, others: int = 0) -> None:
    """An active subscription (and its customer) for the organization, and for `others` more
    organizations, so the billing tables are not the one organization's alone."""
    now = datetime.now(UTC)
    orgs = [uuid.UUID(org_id)] + [uuid.uuid4() for _ in range(others)]
    rows: list[Statement] = []
    if others:
        rows.append((
            "INSERT INTO organizations (id, name) VALUES (:id, :name)",
            [{"id": o, "name": f"Other {n}"} for n, o in enumerate(orgs[1:])],
        ))  # fmt: skip
    rows.append((
        "INSERT INTO stripe_customers (org_id, customer_id) VALUES (:org, :customer)",
        [{"org": o, "customer": f"cus_{o.hex}"} for o in orgs],
    ))  # fmt: skip
    rows.append((
        "INSERT INTO subscriptions (id, org_id, customer_id, status, price_id, state_as_of)"
        " VALUES (:id, :org, :customer, 'active', 'price_bench', :now)",
        [{"id": f"sub_{o.hex}", "org": o, "customer": f"cus_{o.hex}", "now": now} for o in orgs],
    ))  # fmt: skip
    asyncio.run(_execute(url, *rows))


async def count(
    package: str, url: str, role_url: str, path: str, sizes: list[int]
) -> list[list[int]]:
    app, statements = counting_app(package, role_url)
    counts = []
    transport = ASGITransport(app=app)
    async with LifespanManager(app), AsyncClient(transport=transport, base_url="http://b") as http:
        email = f"count-{uuid.uuid4().hex[:8]}@example.com"
        await http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        login = await http.post(
            "/api/v1/auth/login", data={"username": email, "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        org = (await http.post("/api/v1/orgs", json={"name": "Count"}, headers=headers)).json()
        have = 1  # the owner
        if "/billing/" in path:
            await asyncio.to_thread(seed_billing, url, org["id"])
        for size in sizes:
            await asyncio.to_thread(seed, url, org["id"], size - have, size - have, have)
            have = size
            # The fewest of three: the counter also sees the app's background statements
            # (the jobs relay) when one falls inside a request.
            seen = []
            for _ in range(3):
                statements.clear()
                response = await http.get(path.replace("{org_id}", org["id"]), headers=headers)
                response.raise_for_status()
                seen.append(len(statements))
            counts.append([size, min(seen)])
    return counts


if __name__ == "__main__":
    src, package, url, role_url, path, *sizes = sys.argv[1:]
    sys.path.insert(0, src)
    print(json.dumps(asyncio.run(count(package, url, role_url, path, [int(s) for s in sizes]))))
