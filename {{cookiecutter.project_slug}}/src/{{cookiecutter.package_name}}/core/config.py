"""Settings from the environment and `.env`, named the way their ecosystems name them."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "change-me"  # noqa: S105 - the placeholder production refuses
MIN_SECRET_KEY_LENGTH = 32

# A request body larger than this answers 413 (MAX_BODY_BYTES).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

CommaList = Annotated[list[str], NoDecode]


def sqlite_in_memory(database_url: str) -> bool:
    """Whether DATABASE_URL names an in-memory SQLite database (each process has its own).

    Also `file::memory:?cache=shared`, which lives only while a connection is open.
    """
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return False
    return not url.database or ":memory:" in url.database or url.query.get("mode") == "memory"


def started_by_a_server() -> bool:
    """Whether this process is a worker a server process started (`uvicorn --workers N`).

    uvicorn starts each of its worker processes (and its `--reload` child) with
    multiprocessing; with one worker it serves in its own process. Gunicorn forks its
    workers without multiprocessing: it reads WEB_CONCURRENCY, which the settings see.
    """
    import multiprocessing

    return multiprocessing.parent_process() is not None


class UnsafeSettingsError(ValueError):
    """Production refuses to start with these settings; one line per setting, naming it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not print the others (DATABASE_URL holds a
    # password, SECRET_KEY is a secret) into the start-up log.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

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
    # SQLite only: seconds a write waits for the database's one write lock before it fails
    # ("database is locked"). At most 10 minutes: a writer held longer is a bug to see.
    db_sqlite_busy_timeout: float = Field(default=5.0, ge=0, le=600)
    db_echo: bool = False

    redis_url: str | None = None

    cors_origins: CommaList = []
    allowed_hosts: CommaList = ["*"]

    # Proxies whose X-Forwarded-For / X-Forwarded-Proto the app believes: addresses or networks
    # (uvicorn's and gunicorn's own name for it). Anyone else's forwarded headers are ignored,
    # so the client address (rate limits, logs) is the peer's own.
    forwarded_allow_ips: CommaList = ["127.0.0.1"]
    # Worker processes per instance (the variable uvicorn and gunicorn read for their default).
    web_concurrency: int = Field(default=1, ge=1)
    # Largest request body accepted, in bytes; larger ones answer 413.
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)

    # Background jobs (docs/jobs.md). "auto": Redis (Taskiq workers) when REDIS_URL is set,
    # otherwise inside the app process; "inprocess" runs them in the app even with Redis.
    jobs_backend: Literal["auto", "redis", "inprocess"] = "auto"
    # Jobs one process runs at once (the app in-process, or one worker).
    jobs_concurrency: int = Field(default=10, ge=1)
    # How often each process looks for due jobs (retries, other processes' commits).
    jobs_poll_seconds: float = Field(default=1.0, gt=0)
    # On stop, jobs still running after this many seconds are cancelled and left for redelivery.
    jobs_shutdown_seconds: float = Field(default=20.0, ge=0)
    # A running job whose process went silent for its timeout plus this is taken as lost.
    jobs_lease_grace_seconds: float = Field(default=30.0, ge=0)
    # A job handed to Redis but not started within this is handed over again.
    jobs_requeue_seconds: float = Field(default=300.0, gt=0)
    # Finished jobs are kept this many days (dead jobs are kept until replayed or deleted).
    jobs_keep_done_days: int = Field(default=7, ge=1)
    # Run the scheduler in this process (every process may: each tick runs once in all).
    jobs_scheduler: bool = True
    # The Redis stream the jobs go through; one per project sharing a Redis.
    jobs_queue: str = "{{ cookiecutter.package_name }}:jobs"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", "allowed_hosts", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_or_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS: {item!r} is not an IP address or network "
                    "(host names are not resolved)"
                ) from None
        return value

    @model_validator(mode="after")
    def _jobs_backend_has_redis(self) -> Settings:
        if self.jobs_backend == "redis" and self.redis_url is None:
            raise ValueError("JOBS_BACKEND=redis needs REDIS_URL (the job queue lives in Redis)")
        return self

    @model_validator(mode="after")
    def _production_refuses_unsafe_settings(self) -> Settings:
        if self.environment == "production":
            problems = self.production_problems()
            if problems:
                raise UnsafeSettingsError(problems)
        return self

    def production_problems(self) -> list[str]:
        """What production refuses in these settings: one line per setting, naming it."""
        problems: list[str] = []
        key = self.secret_key.get_secret_value()
        if not key or key == DEFAULT_SECRET_KEY:
            problems.append("SECRET_KEY must be set to a random value in production")
        elif len(key) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"SECRET_KEY is too short for production: use at least "
                f"{MIN_SECRET_KEY_LENGTH} characters (e.g. python -c "
                "'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if "*" in self.allowed_hosts or not self.allowed_hosts:
            problems.append(
                "ALLOWED_HOSTS must list the host names the API answers to in production, "
                "not * (e.g. api.example.com,127.0.0.1)"
            )
        if "*" in self.cors_origins:
            problems.append(
                "CORS_ORIGINS=* is refused in production: CORS allows credentials, so any site "
                "could call the API as the signed-in user; list the front-end origins"
            )
        if "*" in self.forwarded_allow_ips:
            problems.append(
                "FORWARDED_ALLOW_IPS=* is refused in production: every client could forge its "
                "address (and its rate limits); list the proxy's addresses or networks"
            )
        if self.redis_url is None and self.web_concurrency > 1:
            problems.append(
                f"WEB_CONCURRENCY={self.web_concurrency} without REDIS_URL is refused in "
                "production: each worker would keep its own rate-limit counters; set REDIS_URL "
                "or run one worker per instance"
            )
        elif self.redis_url is None and started_by_a_server():
            problems.append(
                "REDIS_URL is unset and this is one of several worker processes (uvicorn "
                "--workers): refused in production, each would keep its own rate-limit "
                "counters; set REDIS_URL or run one worker per instance (--reload is for "
                "development)"
            )
        if sqlite_in_memory(self.database_url):
            problems.append(
                "DATABASE_URL is an in-memory SQLite database, refused in production: each "
                "process would have a database of its own, gone when it stops; use a file or "
                "PostgreSQL"
            )
        return problems

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def jobs_use_redis(self) -> bool:
        """Whether jobs go through Redis to workers (otherwise they run in the app process)."""
        if self.jobs_backend == "auto":
            return self.redis_url is not None
        return self.jobs_backend == "redis"


@lru_cache
def get_settings() -> Settings:
    return Settings()
