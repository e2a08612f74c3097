"""A person's path through the admin: headless Chromium signs in and searches a user.

Uses Debian's `chromium` (/usr/bin/chromium) driven by Playwright; no browser is
downloaded. Skipped, with the reason, where that browser is not installed. The
screenshot is kept in $TEST_ARTIFACTS_DIR (default: the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.main import create_app
from tests.admin.conftest import ADMIN_EMAIL, PASSWORD, make_user
from tests.conftest import clear_tables
from tests.loopback import serve_in_thread

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"{CHROMIUM} is not installed (apt-get install chromium); CI installs it",
)


@pytest.fixture
def live_server(settings: Settings, migrated: Config) -> Iterator[tuple[FastAPI, str]]:
    """The app served by uvicorn on 127.0.0.1 in a thread (its own event loop)."""
    app = create_app(settings)
    try:
        with serve_in_thread(app, "the app", lifespan="on") as url:
            yield app, url
    finally:
        asyncio.run(_clean(settings))


async def _clean(settings: Settings) -> None:
    database = Database.from_settings(settings)
    await clear_tables(database)
    await database.engine.dispose()


async def _seed(settings: Settings) -> None:
    """Accounts made in this thread's loop, on a connection pool of its own."""
    app = FastAPI()
    app.state.database = Database.from_settings(settings)
    await make_user(app, ADMIN_EMAIL, superuser=True)
    await make_user(app, "alice@example.com")
    await make_user(app, "bob@example.com")
    await app.state.database.engine.dispose()


@pytest.fixture
def artifacts_dir(tmp_path: Path) -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_superuser_signs_in_and_finds_a_user_by_email(
    live_server: tuple[FastAPI, str], settings: Settings, artifacts_dir: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    asyncio.run(_seed(settings))
    _, base = live_server
    screenshot = artifacts_dir / "admin-user-search.png"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.goto(f"{base}/admin/user/list")
            expect(page).to_have_url(f"{base}/admin/login")  # anonymous: sent to the form

            page.fill("input[name=username]", ADMIN_EMAIL)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/admin/")

            page.goto(f"{base}/admin/user/list")
            expect(page.locator("table")).to_contain_text("bob@example.com")
            page.fill("#search-input", "alice")
            page.click("#search-button")
            expect(page).to_have_url(f"{base}/admin/user/list?search=alice")
            table = page.locator("table")
            expect(table).to_contain_text("alice@example.com")
            expect(table).not_to_contain_text("bob@example.com")
            page.screenshot(path=str(screenshot), full_page=True)

            # An action from the admin's own page passes the cross-site guard.
            page.check("input.select-box")
            page.click("text=Actions")
            page.click("#action-customconfirm-deactivate")
            page.click("#action-custom-modal-deactivate")
            expect(page.locator("body")).to_contain_text("Deactivated 1 user(s).")
            page.goto(f"{base}/admin/user/list?is_active=false")
            expect(page.locator("table")).to_contain_text("alice@example.com")
        finally:
            context.close()
    print(f"admin screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0
