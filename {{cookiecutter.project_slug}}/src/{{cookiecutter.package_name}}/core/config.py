"""Settings from the environment and `.env`, named the way their ecosystems name them."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "change-me"  # noqa: S105 - the placeholder production refuses
MIN_SECRET_KEY_LENGTH = 32

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    database_url: str = "sqlite+aiosqlite:///./{{ cookiecutter.package_name }}.db"
    db_pool_size: int = Field(default=10, ge=1)
    # Connections opened above the pool size are closed again as soon as they are returned:
    # under steady load that is a new connection per request (see docs/benchmarks.md).
    db_max_overflow: int = Field(default=0, ge=0)
    # Seconds to wait for a pooled connection before answering 503.
    db_pool_timeout: float = Field(default=5.0, gt=0)
    # Seconds after which a pooled connection is replaced.
    db_pool_recycle: int = Field(default=1800, ge=-1)
    db_pool_pre_ping: bool = False
    db_echo: bool = False

    redis_url: str | None = None

    cors_origins: CommaList = []
    allowed_hosts: CommaList = ["*"]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> Settings:
        if self.environment == "production":
            key = self.secret_key.get_secret_value()
            if not key or key == DEFAULT_SECRET_KEY:
                raise ValueError("SECRET_KEY must be set to a random value in production")
            if len(key) < MIN_SECRET_KEY_LENGTH:
                raise ValueError(
                    f"SECRET_KEY is too short for production: use at least "
                    f"{MIN_SECRET_KEY_LENGTH} characters (e.g. python -c "
                    "'import secrets; print(secrets.token_urlsafe(48))')"
                )
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


@lru_cache
def get_settings() -> Settings:
    return Settings()
