"""Production refuses a plain-http AUTH_FRONTEND_URL at start-up: its links carry tokens."""

from __future__ import annotations

import pytest
from asgi_lifespan import LifespanManager

from {{ cookiecutter.package_name }}.core.config import UnsafeSettingsError
from {{ cookiecutter.package_name }}.main import create_app
from tests.auth.conftest import make_auth_settings
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://app.example.com", True),
        ("app.example.com/verify", True),
        ("https://app.example.com", False),
        ("http://localhost:3000", False),  # the links never leave the machine
        ("http://127.0.0.1:3000/", False),
    ],
)
async def test_production_refuses_a_plain_http_frontend_url(
    database_url: str, migrated: object, url: str, refused: bool
) -> None:
    app = create_app(
        make_settings(database_url, environment="production", allowed_hosts=["api.example.com"])
    )
    app.state.auth_settings = make_auth_settings("http://127.0.0.1:1", frontend_url=url)
    if not refused:
        async with LifespanManager(app):
            pass
        return
    with pytest.raises(UnsafeSettingsError) as error:
        async with LifespanManager(app):
            pass
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"AUTH_FRONTEND_URL={url} ")
    assert "https://" in line
    await app.state.database.engine.dispose()


async def test_outside_production_any_frontend_url_starts(
    database_url: str, migrated: object
) -> None:
    app = create_app(make_settings(database_url))
    app.state.auth_settings = make_auth_settings(
        "http://127.0.0.1:1", frontend_url="http://app.example.com"
    )
    async with LifespanManager(app):
        pass
