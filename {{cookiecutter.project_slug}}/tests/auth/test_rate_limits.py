"""Rate limits on login, register, forgot-password and reset, per client and per email."""

from __future__ import annotations

from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth.config import (
    FORGOT_LIMIT_PER_EMAIL,
    LOGIN_LIMIT_PER_CLIENT,
    LOGIN_LIMIT_PER_EMAIL,
    REGISTER_LIMIT_PER_CLIENT,
    RESET_LIMIT_PER_CLIENT,
)
from tests.auth.conftest import assert_problem, register


def allowed(limit: str) -> int:
    return int(limit.split("/")[0])


async def test_login_is_limited_per_email(client: AsyncClient) -> None:
    bad = {"username": "target@example.com", "password": "guessing wrong"}
    for _ in range(allowed(LOGIN_LIMIT_PER_EMAIL)):
        assert (await client.post("/api/v1/auth/login", data=bad)).status_code == 401
    limited = await client.post("/api/v1/auth/login", data=bad)
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    other = {"username": "other@example.com", "password": "guessing wrong"}
    assert (await client.post("/api/v1/auth/login", data=other)).status_code == 401


async def test_login_is_limited_per_client(client: AsyncClient) -> None:
    for i in range(allowed(LOGIN_LIMIT_PER_CLIENT)):
        data = {"username": f"u{i}@example.com", "password": "guessing wrong"}
        assert (await client.post("/api/v1/auth/login", data=data)).status_code == 401
    data = {"username": "fresh@example.com", "password": "guessing wrong"}
    assert_problem(await client.post("/api/v1/auth/login", data=data), 429)


async def test_register_is_limited(client: AsyncClient) -> None:
    for i in range(allowed(REGISTER_LIMIT_PER_CLIENT)):
        await register(client, f"r{i}@example.com")
    response = await client.post(
        "/api/v1/auth/register", json={"email": "one-more@example.com", "password": "long enough"}
    )
    assert_problem(response, 429)


async def test_forgot_password_is_limited_per_email(client: AsyncClient) -> None:
    body = {"email": "flood@example.com"}
    for _ in range(allowed(FORGOT_LIMIT_PER_EMAIL)):
        assert (await client.post("/api/v1/auth/forgot-password", json=body)).status_code == 202
    assert_problem(await client.post("/api/v1/auth/forgot-password", json=body), 429)
    other = {"email": "calm@example.com"}
    assert (await client.post("/api/v1/auth/forgot-password", json=other)).status_code == 202


async def test_reset_is_limited(client: AsyncClient) -> None:
    body = {"token": "guess", "password": "long enough password"}
    for _ in range(allowed(RESET_LIMIT_PER_CLIENT)):
        assert (await client.post("/api/v1/auth/reset-password", json=body)).status_code == 400
    assert_problem(await client.post("/api/v1/auth/reset-password", json=body), 429)
