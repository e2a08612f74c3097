"""`python -m <package>.auth create-superuser`."""

from __future__ import annotations

import io

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth.__main__ import main
from {{ cookiecutter.package_name }}.core.config import Settings
from tests.auth.conftest import login, register


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
