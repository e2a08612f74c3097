"""Social login linking to an existing account by email: opt-in per provider
(AUTH_OAUTH_LINK_BY_EMAIL), and a claimed unverified account keeps nothing of its squatter."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import OAuthAccount
from tests.auth.conftest import (
    FakeProvider,
    api_key_for,
    assert_problem,
    count,
    login,
    make_auth_settings,
    register,
)
from tests.auth.test_oauth import start


@pytest.fixture
def auth_settings(oidc_server: FakeProvider) -> AuthSettings:
    return make_auth_settings(oidc_server.url, oauth_link_by_email=["oidc"])


async def test_verified_email_links_the_existing_account(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    created = await register(client, "social@example.com")
    _, callback = await start(client)
    response = await client.get(callback)
    assert response.status_code == 200, response.text
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert me.json()["id"] == created["id"]
    assert await count(app, OAuthAccount) == 1


async def test_a_squatted_unverified_account_loses_its_password(
    client: AsyncClient, provider: FakeProvider
) -> None:
    # Someone registered the address first and never verified it; the owner now signs in
    # with a provider that verified it: the squatter's password must stop working.
    await register(client, "social@example.com")
    _, callback = await start(client)
    assert (await client.get(callback)).status_code == 200
    response = await client.post(
        "/api/v1/auth/login",
        data={"username": "social@example.com", "password": "correct horse battery"},
    )
    assert_problem(response, 401)


async def test_claiming_a_squatted_account_ends_the_squatters_sessions_and_keys(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    await register(client, "social@example.com")
    squatter = await login(client, "social@example.com")
    key = await api_key_for(app, "social@example.com")
    _, callback = await start(client)
    assert (await client.get(callback)).status_code == 200
    me = "/api/v1/users/me"
    assert_problem(await client.get(me, headers={"X-API-Key": key}), 401)
    assert_problem(
        await client.get(me, headers={"Authorization": f"Bearer {squatter['access_token']}"}), 401
    )
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": squatter["refresh_token"]}
    )
    assert_problem(refresh, 401)


def test_only_known_providers_can_be_trusted_for_linking(oidc_server: FakeProvider) -> None:
    assert make_auth_settings(oidc_server.url, oauth_link_by_email="google, oidc")
    with pytest.raises(ValueError, match="oauth_link_by_email"):
        make_auth_settings(oidc_server.url, oauth_link_by_email=["gitlab"])
