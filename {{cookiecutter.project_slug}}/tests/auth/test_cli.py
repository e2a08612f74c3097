"""`python -m <package>.auth create-superuser`."""

from __future__ import annotations

import io

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth.__main__ import main
from {{ cookiecutter.package_name }}.core.config import Settings
from tests.auth.conftest import api_key_for, assert_problem, login, register


async def test_create_superuser_from_stdin(
    app: FastAPI,
    client: AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a strong admin password\n"))
    await asyncio_to_thread(
        main, ["create-superuser", "--email", "Root@Example.com", "--password-stdin"], settings
    )
    assert "Created superuser root@example.com" in capsys.readouterr().out
    tokens = await login(client, "root@example.com", "a strong admin password")
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["is_superuser"] is True
    assert me.json()["is_verified"] is True


async def test_promote_an_existing_user(
    app: FastAPI,
    client: AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await register(client, "member@example.com")
    monkeypatch.setattr("sys.stdin", io.StringIO("another admin password\n"))
    await asyncio_to_thread(
        main, ["create-superuser", "--email", "member@example.com", "--password-stdin"], settings
    )
    assert "Promoted" in capsys.readouterr().out


async def test_promoting_with_a_new_password_ends_every_session_and_api_key(
    app: FastAPI,
    client: AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Setting the password from the command line is a password change: whoever held the
    account's tokens or keys (say, the person it was taken from) is signed out."""
    await register(client, "taken@example.com")
    tokens = await login(client, "taken@example.com")
    key = await api_key_for(app, "taken@example.com")
    monkeypatch.setattr("sys.stdin", io.StringIO("the owner's new password\n"))
    await asyncio_to_thread(
        main, ["create-superuser", "--email", "taken@example.com", "--password-stdin"], settings
    )
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert_problem(await client.get("/api/v1/users/me", headers=bearer), 401)
    stale = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(stale, 401)
    assert_problem(await client.get("/api/v1/users/me", headers={"X-API-Key": key}), 401)
    fresh = await login(client, "taken@example.com", "the owner's new password")
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {fresh['access_token']}"}
    )
    assert me.json()["is_superuser"] is True


async def test_short_password_is_refused(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(SystemExit, match="at least 8 characters"):
        main(["create-superuser", "--email", "x@example.com", "--password-stdin"], settings)


async def asyncio_to_thread(func: object, *args: object) -> None:
    """The command runs its own event loop (asyncio.run), so run it off the test's loop."""
    import asyncio

    await asyncio.to_thread(func, *args)  # type: ignore[arg-type]
