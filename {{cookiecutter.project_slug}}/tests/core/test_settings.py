from __future__ import annotations

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.core.config import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_defaults_run_on_sqlite_with_no_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert settings().database_url.startswith("sqlite+aiosqlite:///")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "SECRET_KEY must be set"),
        ("change-me", "SECRET_KEY must be set"),
        ("short", "SECRET_KEY is too short"),
    ],
)
def test_production_refuses_weak_secret_key(
    monkeypatch: pytest.MonkeyPatch, key: str | None, message: str
) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    values: dict[str, object] = {"environment": "production"}
    if key is not None:
        values["secret_key"] = key
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def test_production_accepts_a_long_random_key() -> None:
    assert settings(environment="production", secret_key="k" * 48).is_production


def test_environment_variables_use_ecosystem_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@db:5432/app")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    loaded = settings()
    assert loaded.database_url == "postgresql+asyncpg://u:p@db:5432/app"
    assert loaded.redis_url == "redis://cache:6379/0"
    assert loaded.cors_origins == ["https://a.example", "https://b.example"]
    assert loaded.log_level == "DEBUG"


def test_blank_redis_url_means_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    assert settings().redis_url is None


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(ValidationError, match="environment"):
        settings(environment="staging")
