"""The admin module's contribution: SQLAdmin at /admin, built at the admin's first request.

The app mounts an `AdminSite` at /admin. SQLAdmin itself (its import with Jinja2 and
WTForms, the views, the templates) is set up when the admin is first used: a process
answers its probes and the API without paying for it (docs/benchmarks.md, start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.db import Database, RowSecurityBypassSession
from {{ cookiecutter.package_name }}.core.plugin import Module

if TYPE_CHECKING:
    from sqladmin import Admin
    from starlette.routing import BaseRoute

BASE_URL = "/admin"


def build_admin(app: FastAPI) -> Admin:
    """SQLAdmin with every view, on the app's engine, signed in through the auth module."""
    from sqladmin import Admin
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from starlette.applications import Starlette

    from {{ cookiecutter.package_name }}.admin.auth import AdminAuth
    from {{ cookiecutter.package_name }}.admin.registry import VIEWS

    database: Database = app.state.database
    backend = AdminAuth(app)
    admin = Admin(
        # SQLAdmin mounts its app on the one it is given: a stand-in, since the app mounts
        # the AdminSite at BASE_URL (the same path and name, so its URLs come out the same).
        Starlette(),
        # Its own sessionmaker on the app's engine: SQLAdmin reconfigures the one it gets.
        # The admin acts for no single tenant: its transactions pass row-level security.
        session_maker=async_sessionmaker(
            database.engine, expire_on_commit=False, sync_session_class=RowSecurityBypassSession
        ),
        base_url=BASE_URL,
        title=f"{app.title} admin",
        authentication_backend=backend,
    )
    backend.admin = admin
    admin.admin.state.database = database  # for views that call a module's services
    for view in VIEWS:
        admin.add_view(view)
    return admin


class AdminSite:
    """The ASGI app at /admin: SQLAdmin's own, built at the first request that reaches it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._sqladmin: Admin | None = None

    @property
    def sqladmin(self) -> Admin:
        # Built once: nothing awaits while it is built, so two first requests build one.
        if self._sqladmin is None:
            self._sqladmin = build_admin(self.app)
        return self._sqladmin

    @property
    def routes(self) -> list[BaseRoute]:
        """SQLAdmin's routes, for `request.url_for("admin:...")` through the app's router."""
        return self.sqladmin.admin.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.sqladmin.admin(scope, receive, send)


def install(app: FastAPI) -> None:
    site = AdminSite(app)
    app.mount(BASE_URL, site, name="admin")
    declare(site, requires="superuser (the admin's own sign-in)")
    app.state.admin = site


module = Module("admin", install=install)
