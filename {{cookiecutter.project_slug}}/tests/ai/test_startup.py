"""The OpenAI SDK (and aiohttp, its transport) load at the first chat, not at start-up;
jsonschema at the first request that asks for structured output."""

from __future__ import annotations

from alembic.config import Config

from tests.startup import imported_at_start

SDK = {"openai", "aiohttp", "httpx2", "jsonschema"}


def test_starting_the_app_does_not_import_the_sdk(database_url: str, migrated: Config) -> None:
    loaded = imported_at_start(database_url, {"OPENAI_API_KEY": "sk-test-not-a-key"})
    assert "fastapi" in loaded  # the app did start
    assert loaded & SDK == set()
