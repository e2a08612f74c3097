"""The app without an API key, and the settings' names."""

from __future__ import annotations

import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.ai.config import AISettings
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from tests.ai.conftest import http, stand_in_user


async def test_without_a_key_the_app_serves_and_ai_answers_503(
    settings: Settings, migrated: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")  # blank, as in a fresh .env
    app = create_app(settings)
    app.state.ai_settings = AISettings(_env_file=None)
    stand_in_user(app)
    async with LifespanManager(app), http(app) as client:
        assert (await client.get("/health/live")).status_code == 200
        chat = await client.post(
            "/api/v1/ai/chat", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        usage = await client.get("/api/v1/ai/usage")
    assert chat.status_code == 503
    assert chat.headers["content-type"] == "application/problem+json"
    assert "OPENAI_API_KEY" in chat.json()["detail"]
    assert chat.json()["missing_setting"] == "OPENAI_API_KEY"
    assert usage.status_code == 200  # the ledger is readable without a key


def test_settings_use_the_sdk_names_and_an_ai_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("AI_DEFAULT_MODEL", "llama3.2")
    monkeypatch.setenv("AI_ALLOWED_MODELS", "llama3.2, qwen2.5")
    monkeypatch.setenv("AI_MONTHLY_TOKEN_QUOTA", "5000")
    loaded = AISettings(_env_file=None)
    assert loaded.openai_api_key is not None
    assert loaded.openai_api_key.get_secret_value() == "sk-from-env"
    assert loaded.base_url == "http://localhost:11434/v1"
    assert loaded.models == {"llama3.2", "qwen2.5"}
    assert loaded.monthly_token_quota == 5000
    assert "sk-from-env" not in repr(loaded)


def test_bad_rate_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        AISettings(_env_file=None, rate_limit="lots")


def test_quota_cache_seconds_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """How stale this process's memory of totals and plans may be (docs/operations.md)."""
    monkeypatch.setenv("AI_QUOTA_CACHE_SECONDS", "60")
    assert AISettings(_env_file=None).quota_cache_seconds == 60
    monkeypatch.setenv("AI_QUOTA_CACHE_SECONDS", "61")
    with pytest.raises(ValidationError, match="less than or equal to 60"):
        AISettings(_env_file=None)
