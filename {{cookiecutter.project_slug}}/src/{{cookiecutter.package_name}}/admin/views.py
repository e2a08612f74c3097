"""Admin views of the auth module's tables: users, linked OAuth accounts, API keys.

Password hashes and API key hashes are never listed, shown, exported or editable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from sqladmin import Flash, ModelView, action
from sqladmin.authentication import get_current_user_id
from sqladmin.filters import AllUniqueStringValuesFilter, BooleanFilter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from {{ cookiecutter.package_name }}.auth.models import ApiKey, OAuthAccount, User, utcnow
from {{ cookiecutter.package_name }}.auth.service import revoke_user_sessions
from {{ cookiecutter.package_name }}.core.db import Database


def sessions(view: ModelView) -> async_sessionmaker[AsyncSession]:
    """The view's sessionmaker (the admin is always given an async one)."""
    maker = view.session_maker
    assert isinstance(maker, async_sessionmaker)
    return maker


def app_database(request: Request) -> Database:
    """The app's Database, from inside the admin (module.install puts it on its state)."""
    database: Database = request.app.state.database
    return database


def selected_ids(request: Request) -> list[uuid.UUID]:
    """The primary keys an action was run on (`?pks=a,b`); malformed ones are ignored."""
    out: list[uuid.UUID] = []
    for raw in request.query_params.get("pks", "").split(","):
        try:
            out.append(uuid.UUID(raw.strip()))
        except ValueError:
            continue
    return out


def back_to_list(request: Request, view: ModelView) -> Response:
    return RedirectResponse(request.url_for("admin:list", identity=view.identity), 302)


class UserAdmin(ModelView, model=User):
    name = "User"
    name_plural = "Users"
    icon = "fa-solid fa-user"
    category = "Accounts"

    column_list: ClassVar[Sequence[Any]] = [
        User.email,
        User.is_active,
        User.is_verified,
        User.is_superuser,
        User.created_at,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [
        User.id,
        User.email,
        User.is_active,
        User.is_verified,
        User.is_superuser,
        User.created_at,
        User.updated_at,
    ]
    column_export_list: ClassVar[list[Any]] = [User.id, *column_list]
    column_labels: ClassVar[dict[Any, str]] = {
        User.id: "ID",
        User.email: "Email",
        User.is_active: "Active",
        User.is_verified: "Verified",
        User.is_superuser: "Superuser",
        User.created_at: "Created",
        User.updated_at: "Updated",
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [User.email]
    column_filters: ClassVar[Sequence[Any]] = [
        BooleanFilter(User.is_active, title="Active"),
        BooleanFilter(User.is_verified, title="Verified"),
        BooleanFilter(User.is_superuser, title="Superuser"),
    ]
    column_default_sort: ClassVar[Any] = (User.created_at, True)
    # Accounts are made through the API or `python -m <package>.auth create-superuser`;
    # here only their flags change. Deactivate instead of deleting.
    form_columns: ClassVar[Sequence[Any]] = [User.is_active, User.is_verified, User.is_superuser]
    can_create = False
    can_delete = False

    async def after_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        if isinstance(model, User) and not model.is_active:
            async with sessions(self)() as session:
                await revoke_user_sessions(session, model.id)
                await session.commit()

    @action(
        name="deactivate",
        label="Deactivate",
        confirmation_message="Deactivate the selected users and end their sessions?",
    )
    async def deactivate(self, request: Request) -> Response:
        me = str(get_current_user_id(request))
        ids = [i for i in selected_ids(request) if str(i) != me]  # never lock yourself out
        async with sessions(self)() as session:
            users = (await session.scalars(select(User).where(User.id.in_(ids)))).all()
            for user in users:
                user.is_active = False
                await revoke_user_sessions(session, user.id)
            await session.commit()
        Flash.success(request, f"Deactivated {len(users)} user(s).")
        return back_to_list(request, self)


class OAuthAccountAdmin(ModelView, model=OAuthAccount):
    name = "OAuth account"
    name_plural = "OAuth accounts"
    icon = "fa-solid fa-link"
    category = "Accounts"

    column_list: ClassVar[Sequence[Any]] = [
        OAuthAccount.provider,
        OAuthAccount.email,
        OAuthAccount.subject,
        OAuthAccount.user_id,
        OAuthAccount.created_at,
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        OAuthAccount.provider: "Provider",
        OAuthAccount.email: "Email at the provider",
        OAuthAccount.subject: "Subject",
        OAuthAccount.user_id: "User ID",
        OAuthAccount.created_at: "Linked",
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [OAuthAccount.email, OAuthAccount.subject]
    column_filters: ClassVar[Sequence[Any]] = [
        AllUniqueStringValuesFilter(OAuthAccount.provider, title="Provider")
    ]
    column_default_sort: ClassVar[Any] = (OAuthAccount.created_at, True)
    # Read-only; deleting a row unlinks the provider identity from its user.
    can_create = False
    can_edit = False


class ApiKeyAdmin(ModelView, model=ApiKey):
    name = "API key"
    name_plural = "API keys"
    icon = "fa-solid fa-key"
    category = "Accounts"

    column_list: ClassVar[Sequence[Any]] = [
        ApiKey.name,
        ApiKey.prefix,
        ApiKey.user,
        ApiKey.scope,
        ApiKey.created_at,
        ApiKey.last_used_at,
        ApiKey.expires_at,
        ApiKey.revoked_at,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [ApiKey.id, ApiKey.user_id, *column_list]
    column_export_list: ClassVar[list[Any]] = [
        ApiKey.id,
        ApiKey.user_id,
        *(c for c in column_list if c is not ApiKey.user),
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        ApiKey.id: "ID",
        ApiKey.user_id: "User ID",
        ApiKey.name: "Name",
        ApiKey.prefix: "Prefix",
        ApiKey.user: "User",
        ApiKey.scope: "Scopes",
        ApiKey.created_at: "Created",
        ApiKey.last_used_at: "Last used",
        ApiKey.expires_at: "Expires",
        ApiKey.revoked_at: "Revoked",
    }
    column_formatters: ClassVar[dict[Any, Any]] = {
        ApiKey.user: lambda model, _attr: model.user.email,
    }
    column_formatters_detail: ClassVar[dict[Any, Any]] = column_formatters
    column_searchable_list: ClassVar[Sequence[Any]] = [ApiKey.name, ApiKey.prefix]
    column_default_sort: ClassVar[Any] = (ApiKey.created_at, True)
    # Keys are shown once, to their owner, when made through the API; here they are revoked.
    can_create = False
    can_edit = False
    can_delete = False

    @action(
        name="revoke",
        label="Revoke",
        confirmation_message="Revoke the selected API keys? Scripts using them stop working.",
    )
    async def revoke(self, request: Request) -> Response:
        ids = selected_ids(request)
        async with sessions(self)() as session:
            keys = (
                await session.scalars(
                    select(ApiKey).where(ApiKey.id.in_(ids), ApiKey.revoked_at.is_(None))
                )
            ).all()
            now = utcnow()
            for key in keys:
                key.revoked_at = now
            await session.commit()
        Flash.success(request, f"Revoked {len(keys)} API key(s).")
        return back_to_list(request, self)


VIEWS: tuple[type[ModelView], ...] = (UserAdmin, OAuthAccountAdmin, ApiKeyAdmin)
