"""The admin module's contribution: SQLAdmin mounted at /admin on the app."""

from __future__ import annotations

from fastapi import FastAPI
from sqladmin import Admin
from sqlalchemy.ext.asyncio import async_sessionmaker

from {{ cookiecutter.package_name }}.admin.auth import BASE_URL, AdminAuth
from {{ cookiecutter.package_name }}.admin.registry import VIEWS
from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.db import Database, RowSecurityBypassSession
from {{ cookiecutter.package_name }}.core.plugin import Module


def install(app: FastAPI) -> None:
    database: Database = app.state.database
    backend = AdminAuth(app)
    admin = Admin(
        app,
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
    declare(admin.admin, requires="superuser (the admin's own sign-in)")
    admin.admin.state.database = database  # for views that call a module's services
    for view in VIEWS:
        admin.add_view(view)
    app.state.admin = admin


module = Module("admin", install=install)
