"""SQLAdmin (with WTForms and Jinja2) is set up at the admin's first request, not at start-up."""

from __future__ import annotations

from alembic.config import Config
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.admin.module import AdminSite
from tests.startup import imported_at_start


def test_starting_the_app_does_not_import_sqladmin(database_url: str, migrated: Config) -> None:
    loaded = imported_at_start(database_url, {})
    assert "fastapi" in loaded  # the app did start
    assert loaded & {"sqladmin", "wtforms", "jinja2"} == set()


async def test_the_admin_is_built_at_its_first_request(app: FastAPI, client: AsyncClient) -> None:
    site: AdminSite = app.state.admin

    def built() -> bool:
        return site._sqladmin is not None

    assert not built()
    response = await client.get("/admin/login")
    assert response.status_code == 200
    assert built()
    # Its pages' links (url_for through the app's router) lead where they did before.
    assert 'action="http://testserver/admin/login"' in response.text
    assert 'href="http://testserver/admin/statics/css/main.css"' in response.text
    assert app.url_path_for("admin:list", identity="user") == "/admin/user/list"
