"""Starting the app leaves the garbage collector on, with the frozen heap and thresholds of
`main.tune_gc` (it is off only while the app is imported); SMTP's client waits for the
first message, and an app loads its own database's SQLAlchemy dialect only."""

from __future__ import annotations

import gc

from alembic.config import Config

from tests.startup import imported_at_start


def test_the_collector_is_back_on_after_the_import(database_url: str, migrated: Config) -> None:
    loaded = imported_at_start(database_url, {})  # asserts gc.isenabled() there
    assert "fastapi" in loaded
    assert "aiosmtplib" not in loaded
    if database_url.startswith("sqlite"):
        assert "sqlalchemy.dialects.postgresql" not in loaded


def test_this_process_too() -> None:
    assert gc.isenabled()
    assert gc.get_threshold()[0] == 20_000
    assert gc.get_freeze_count() > 0
