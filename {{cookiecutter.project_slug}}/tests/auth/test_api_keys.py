"""API keys: shown once, stored hashed, usable by header, scoped, revocable."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth.models import ApiKey
from {{ cookiecutter.package_name }}.core.db import Database
from tests.auth.conftest import assert_problem, count, verified_signed_in

ME = "/api/v1/users/me"


async def test_create_use_list_revoke(app: FastAPI, client: AsyncClient) -> None:
    headers = await verified_signed_in(app, client, "keys@example.com")
    created = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("sk_")
    assert key.startswith(body["prefix"])
    assert body["scopes"] == ["read", "write"]

    database: Database = app.state.database
    async with database.sessionmaker() as session:
        row = (await session.execute(select(ApiKey))).scalar_one()
    assert key not in (row.key_hash, row.prefix)  # only its hash is stored

    for auth in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = await client.get(ME, headers=auth)
        assert me.status_code == 200, me.text
        assert me.json()["email"] == "keys@example.com"

    listed = await client.get("/api/v1/api-keys", headers=headers)
    assert [k["id"] for k in listed.json()] == [body["id"]]
    assert "key" not in listed.json()[0]
    assert listed.json()[0]["last_used_at"] is not None

    revoked = await client.delete(f"/api/v1/api-keys/{body['id']}", headers=headers)
    assert revoked.status_code == 204
    assert_problem(await client.get(ME, headers={"X-API-Key": key}), 401)
    assert (await client.get("/api/v1/api-keys", headers=headers)).json()[0]["revoked_at"]


async def test_wrong_key_is_401(client: AsyncClient) -> None:
    assert_problem(await client.get(ME, headers={"X-API-Key": "sk_not-a-real-key"}), 401)


async def test_list_is_one_query_for_many_keys(app: FastAPI, client: AsyncClient) -> None:
    headers = await verified_signed_in(app, client, "many@example.com")
    for i in range(5):
        await client.post("/api/v1/api-keys", json={"name": f"k{i}"}, headers=headers)
    statements: list[str] = []

    from sqlalchemy import event

    engine = app.state.database.engine.sync_engine

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        listed = await client.get("/api/v1/api-keys", headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(listed.json()) == 5
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, selects  # the caller by primary key, then the keys


async def test_scopes_are_limited_to_known_ones(app: FastAPI, client: AsyncClient) -> None:
    headers = await verified_signed_in(app, client, "sc@example.com")
    bad = await client.post(
        "/api/v1/api-keys", json={"name": "x", "scopes": ["read", "root"]}, headers=headers
    )
    assert_problem(bad, 422)
    assert await count(app, ApiKey) == 0
    ok = await client.post(
        "/api/v1/api-keys", json={"name": "ro", "scopes": ["read"]}, headers=headers
    )
    assert ok.json()["scopes"] == ["read"]


async def test_cannot_revoke_someone_elses_key(app: FastAPI, client: AsyncClient) -> None:
    alice = await verified_signed_in(app, client, "alice@example.com")
    bob = await verified_signed_in(app, client, "bob@example.com")
    key = (await client.post("/api/v1/api-keys", json={"name": "a"}, headers=alice)).json()
    assert_problem(await client.delete(f"/api/v1/api-keys/{key['id']}", headers=bob), 404)
    assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200


async def test_expired_key_is_401(app: FastAPI, client: AsyncClient) -> None:
    headers = await verified_signed_in(app, client, "exp@example.com")
    key = (
        await client.post(
            "/api/v1/api-keys", json={"name": "t", "expires_in_days": 1}, headers=headers
        )
    ).json()
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        row = (await session.execute(select(ApiKey))).scalar_one()
        row.expires_at = row.created_at
    assert_problem(await client.get(ME, headers={"X-API-Key": key["key"]}), 401)
