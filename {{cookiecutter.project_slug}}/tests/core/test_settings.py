from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.core import config
from {{ cookiecutter.package_name }}.core.config import Settings
from tests.conftest import PROJECT_ROOT

REDIS_URL = os.environ.get("TEST_REDIS_URL")


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


SAFE_PRODUCTION: dict[str, object] = {
    "environment": "production",
    "secret_key": "k" * 48,
    "allowed_hosts": ["api.example.com", "127.0.0.1"],
}


def test_production_accepts_a_long_random_key() -> None:
    assert settings(**SAFE_PRODUCTION).is_production


@pytest.mark.parametrize(
    ("unsafe", "setting"),
    [
        ({"allowed_hosts": ["*"]}, "ALLOWED_HOSTS"),
        ({"allowed_hosts": []}, "ALLOWED_HOSTS"),
        ({"cors_origins": ["*"]}, "CORS_ORIGINS=*"),
        ({"cors_origins": ["https://app.example.com", "*"]}, "CORS_ORIGINS=*"),
        ({"forwarded_allow_ips": ["*"]}, "FORWARDED_ALLOW_IPS=*"),
        ({"web_concurrency": 2}, "WEB_CONCURRENCY=2 without REDIS_URL"),
        ({"database_url": "sqlite+aiosqlite://"}, "in-memory SQLite"),
        ({"database_url": "sqlite+aiosqlite:///:memory:"}, "in-memory SQLite"),
        (
            {"database_url": "sqlite+aiosqlite:///file::memory:?cache=shared&uri=true"},
            "in-memory SQLite",
        ),
    ],
)
def test_production_refuses_unsafe_settings(
    monkeypatch: pytest.MonkeyPatch, unsafe: dict[str, object], setting: str
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ValidationError) as refused:
        settings(**{**SAFE_PRODUCTION, **unsafe})
    (error,) = refused.value.errors()
    message = str(error["msg"])
    assert message.count("\n") == 0, "one line per refused setting"
    assert setting in message
    assert "production" in message
    # The same values are fine outside production.
    assert not settings(**{**SAFE_PRODUCTION, **unsafe, "environment": "development"}).is_production


def test_production_names_every_refused_setting_on_its_own_line() -> None:
    with pytest.raises(ValidationError) as refused:
        settings(
            environment="production",
            secret_key="short-secret-9",
            allowed_hosts=["*"],
            cors_origins=["*"],
            database_url="postgresql+asyncpg://app:db-password-123@db/app",
        )
    lines = str(refused.value).splitlines()
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "CORS_ORIGINS"):
        assert sum(name in line for line in lines) == 1, lines
    # The refusal does not print the other settings (the database password, the key).
    text = str(refused.value)
    assert "db-password-123" not in text
    assert "short-secret-9" not in text


def test_several_workers_with_redis_are_fine_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    loaded = settings(**SAFE_PRODUCTION)
    assert loaded.web_concurrency == 4


def test_a_worker_of_several_without_redis_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`uvicorn --workers N` without WEB_CONCURRENCY: the process knows it was started by
    a server (multiprocessing), and its rate-limit counters would be its own."""
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert settings(**SAFE_PRODUCTION).is_production  # the test runner is no server's worker
    monkeypatch.setattr(config, "started_by_a_server", lambda: True)
    with pytest.raises(ValidationError) as refused:
        settings(**SAFE_PRODUCTION)
    (error,) = refused.value.errors()
    assert str(error["msg"]).count("\n") == 0
    assert "REDIS_URL is unset and this is one of several worker processes" in str(error["msg"])
    # With Redis the counters are shared; outside production it is allowed.
    assert settings(**SAFE_PRODUCTION, redis_url="redis://cache:6379/0").is_production
    assert not settings(**{**SAFE_PRODUCTION, "environment": "development"}).is_production


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(
    tmp_path: Path, database_url: str, workers: int, **extra: str
) -> tuple[subprocess.Popen[str], int]:
    """The app in production under a real uvicorn, as a deployment starts it."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))},
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "JOBS_SCHEDULER": "false",
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        **extra,
    }
    for name in ("REDIS_URL", "WEB_CONCURRENCY", "METRICS_PORT"):
        if name not in extra:
            env.pop(name, None)
    package = Settings.__module__.split(".")[0]
    server = subprocess.Popen(  # noqa: S603 - this interpreter, our own app
        [
            *(sys.executable, "-m", "uvicorn", f"{package}.main:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        ],
        cwd=tmp_path,  # no .env here
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return server, port


def stop(server: subprocess.Popen[str]) -> str:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return server.stderr.read() if server.stderr else ""


def test_uvicorn_workers_without_redis_do_not_start_in_production(
    tmp_path: Path, database_url: str, migrated: object
) -> None:
    """The real thing: `uvicorn --workers 2` (WEB_CONCURRENCY unset) and no REDIS_URL.

    Each worker stops at its import with the line; uvicorn starts it again (it gives up
    only on its own start-up failures), so no worker ever serves.
    """
    server, port = serve(tmp_path, database_url, workers=2)
    lines: list[str] = []
    assert server.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(server.stderr or ()), daemon=True)
    reader.start()
    refusal = "REDIS_URL is unset and this is one of several worker processes"
    try:
        deadline = time.monotonic() + 90
        while not any(refusal in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        with httpx.Client(timeout=2) as http, pytest.raises(httpx.TransportError):
            http.get(f"http://127.0.0.1:{port}/health/live")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        reader.join(10)
    assert sum(refusal in line for line in lines) >= 1


@pytest.mark.parametrize(
    "workers",
    [
        1,
        pytest.param(
            2, marks=pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to use Redis")
        ),
    ],
)
def test_a_correct_production_config_starts(
    tmp_path: Path, database_url: str, migrated: object, workers: int
) -> None:
    """One process without Redis, or several with it: production starts and answers."""
    extra = {}
    if workers > 1:
        assert REDIS_URL is not None
        extra = {"REDIS_URL": REDIS_URL, "JOBS_QUEUE": f"settings-{secrets.token_hex(8)}"}
    server, port = serve(tmp_path, database_url, workers, **extra)
    try:
        deadline = time.monotonic() + 90
        with httpx.Client(timeout=5) as http:
            while True:
                assert server.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not answer within 90 s"
                try:
                    live = http.get(f"http://127.0.0.1:{port}/health/live")
                    break
                except httpx.TransportError:
                    time.sleep(0.3)
        assert live.status_code == 200
    finally:
        err = stop(server)
    assert "refused in production" not in err, err


def test_workers_are_read_from_web_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ValidationError, match="WEB_CONCURRENCY=3 without REDIS_URL"):
        settings(**SAFE_PRODUCTION)


def test_forwarded_allow_ips_takes_addresses_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().forwarded_allow_ips == ["127.0.0.1"]
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8, 192.0.2.7,::1")
    assert settings().forwarded_allow_ips == ["10.0.0.0/8", "192.0.2.7", "::1"]
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "proxy.internal")
    with pytest.raises(ValidationError, match=r"FORWARDED_ALLOW_IPS: 'proxy\.internal'"):
        settings()


def test_max_body_bytes_has_a_default_and_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().max_body_bytes == 1024 * 1024
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    assert settings().max_body_bytes == 2048
    monkeypatch.setenv("MAX_BODY_BYTES", "0")
    with pytest.raises(ValidationError, match="max_body_bytes"):
        settings()


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


def test_the_app_refuses_to_start_naming_the_setting(tmp_path: Path) -> None:
    """The real start-up: importing the app (what uvicorn does) fails with one line per setting."""
    package = Settings.__module__.split(".")[0]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        "ENVIRONMENT": "production",
        "SECRET_KEY": "s" * 48,
        "ALLOWED_HOSTS": "*",
        "CORS_ORIGINS": "https://app.example.com,*",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'never.db'}?password=db-password-123",
    }
    started = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-c", f"import {package}.main"],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    err = started.stderr
    assert sum("ALLOWED_HOSTS" in line for line in err.splitlines()) == 1, err
    assert sum("CORS_ORIGINS=*" in line for line in err.splitlines()) == 1, err
    assert "SECRET_KEY" not in err
    assert "db-password-123" not in err
