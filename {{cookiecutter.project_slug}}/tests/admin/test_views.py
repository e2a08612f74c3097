"""Each view lists its rows; hashes never show; the deactivate and revoke actions work."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth.models import ApiKey, OAuthAccount, RefreshToken, User, utcnow
from {{ cookiecutter.package_name }}.auth.security import new_api_key, token_hash
from {{ cookiecutter.package_name }}.core.db import Database
from tests.admin.conftest import get_user, make_user


async def add_api_key(app: FastAPI, user: User, name: str = "deploy script") -> ApiKey:
    database: Database = app.state.database
    key, prefix = new_api_key()
    async with database.sessionmaker() as session:
        api_key = ApiKey(
            user_id=user.id, name=name, prefix=prefix, key_hash=token_hash(key), scope="read"
        )
        session.add(api_key)
        await session.commit()
        return api_key


async def add_oauth_account(app: FastAPI, user: User) -> OAuthAccount:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        account = OAuthAccount(
            user_id=user.id, provider="github", subject="gh-4242", email=user.email
        )
        session.add(account)
        await session.commit()
        return account


async def add_refresh_token(app: FastAPI, user: User) -> None:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        session.add(
            RefreshToken(
                user_id=user.id,
                family_id=user.id,
                token_hash=token_hash(f"refresh-{user.id}"),
                expires_at=utcnow() + timedelta(days=1),
            )
        )
        await session.commit()


def identities(app: FastAPI) -> set[str]:
    return {view.identity for view in app.state.admin.sqladmin.views}


async def test_the_views_of_the_enabled_modules_are_there(app: FastAPI) -> None:
    assert {"user", "o-auth-account", "api-key"} <= identities(app)


async def test_users_are_listed_without_password_hashes(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    alice = await make_user(app, "alice@example.com")
    assert alice.hashed_password
    edit = await admin_client.get(f"/admin/user/edit/{alice.id}")
    assert edit.status_code == 200
    assert 'name="is_superuser"' in edit.text  # the form holds the flags only
    pages = [
        await admin_client.get("/admin/user/list"),
        await admin_client.get(f"/admin/user/details/{alice.id}"),
        await admin_client.get("/admin/user/export/csv"),
    ]
    for page in [*pages, edit]:
        assert page.status_code == 200, page.url
        if page is not edit:
            assert "alice@example.com" in page.text, page.url
        assert alice.hashed_password not in page.text, page.url
        assert "hashed_password" not in page.text.lower(), page.url
        assert "argon2" not in page.text, page.url


async def test_users_are_searched_by_email_and_filtered(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    await make_user(app, "alice@example.com")
    await make_user(app, "bob@example.com", active=False)
    found = await admin_client.get("/admin/user/list", params={"search": "alice"})
    assert "alice@example.com" in found.text
    assert "bob@example.com" not in found.text
    inactive = await admin_client.get("/admin/user/list", params={"is_active": "false"})
    assert "bob@example.com" in inactive.text
    assert "alice@example.com" not in inactive.text
    supers = await admin_client.get("/admin/user/list", params={"is_superuser": "true"})
    assert superuser.email in supers.text
    assert "alice@example.com" not in supers.text
    unverified = await admin_client.get("/admin/user/list", params={"is_verified": "false"})
    assert "alice@example.com" in unverified.text


async def test_deactivate_ends_sessions_and_spares_the_acting_superuser(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    alice = await make_user(app, "alice@example.com")
    bob = await make_user(app, "bob@example.com")
    await add_refresh_token(app, alice)
    response = await admin_client.get(
        "/admin/user/action/deactivate",
        params={"pks": f"{alice.id},{superuser.id},not-a-uuid"},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 302
    assert response.headers["location"].endswith("/admin/user/list")
    assert not (await get_user(app, alice.id)).is_active
    assert (await get_user(app, bob.id)).is_active
    assert (await get_user(app, superuser.id)).is_active
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        tokens = (
            await session.scalars(select(RefreshToken).where(RefreshToken.user_id == alice.id))
        ).all()
    assert tokens
    assert all(t.revoked_at is not None for t in tokens)
    listing = await admin_client.get("/admin/user/list")
    assert "Deactivated 1 user(s)." in listing.text


async def test_oauth_accounts_are_listed(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    await add_oauth_account(app, superuser)
    page = await admin_client.get("/admin/o-auth-account/list")
    assert page.status_code == 200
    assert "gh-4242" in page.text
    assert "github" in page.text


async def test_api_keys_are_listed_without_hashes_and_revoked(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    alice = await make_user(app, "alice@example.com")
    key = await add_api_key(app, alice)
    other = await add_api_key(app, alice, name="other key")
    pages = [
        await admin_client.get("/admin/api-key/list"),
        await admin_client.get(f"/admin/api-key/details/{key.id}"),
        await admin_client.get("/admin/api-key/export/csv"),
    ]
    for page in pages:
        assert page.status_code == 200, page.url
        assert "deploy script" in page.text, page.url
        assert "alice@example.com" in page.text or str(alice.id) in page.text, page.url
        assert key.key_hash not in page.text, page.url
        assert "key_hash" not in page.text.lower(), page.url
    assert (await admin_client.get(f"/admin/api-key/edit/{key.id}")).status_code == 403

    response = await admin_client.get("/admin/api-key/action/revoke", params={"pks": str(key.id)})
    assert response.status_code == 302
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        revoked = await session.get(ApiKey, key.id)
        untouched = await session.get(ApiKey, other.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert untouched is not None
    assert untouched.revoked_at is None
