"""The deploy files: the container files (with use_docker): production stays production, no proxy
trusted by default, a worker service that shuts down gracefully; `make worker`.

Compose gives a service's `environment:` precedence over its `env_file:`, and the process
environment wins over `.env` in the settings; so an explicit ENVIRONMENT under the app's
`environment:` is what keeps a `.env` written for development (ENVIRONMENT=development)
from turning the container back into development.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.config import Config
from redis.asyncio import Redis
from sqlalchemy import delete

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.email import Email, send_email
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, enqueue
from tests.conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
COMPOSE = PROJECT_ROOT / "compose.yaml"
MAKEFILE = PROJECT_ROOT / "Makefile"
PACKAGE = Settings.__module__.split(".")[0]
REDIS_URL = os.environ.get("TEST_REDIS_URL")


def block(lines: list[str], start: int) -> list[str]:
    """The lines indented deeper than lines[start], up to the next one that is not."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return body


@pytest.mark.skipif(not COMPOSE.exists(), reason="no compose.yaml (use_docker is off)")
def test_compose_runs_the_app_in_production_whatever_env_says() -> None:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    services = block(lines, lines.index("services:"))
    app = block(services, services.index("  app:"))
    assert "    env_file: .env" in app
    environment = block(app, app.index("    environment:"))
    assert "      ENVIRONMENT: production" in environment


@pytest.mark.skipif(not DOCKERFILE.exists(), reason="no Dockerfile (use_docker is off)")
def test_the_image_trusts_no_forwarded_header_by_default() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    allowed = re.findall(r"FORWARDED_ALLOW_IPS=(\S+)", text)
    assert allowed == ["127.0.0.1"]
    assert "ENVIRONMENT=production" in text
    # The app applies the forwarded headers itself; uvicorn must not do it with other rules.
    (command,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    assert "--no-proxy-headers" in command
    assert "--forwarded-allow-ips" not in command


def compose_services() -> dict[str, list[str]]:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    services = block(lines, lines.index("services:"))
    return {
        line.strip().rstrip(":"): block(services, i)
        for i, line in enumerate(services)
        if re.fullmatch(r"  [a-z]+:", line)
    }


def mapping(service: list[str], key: str) -> dict[str, str]:
    """The `key:` block of a service as name -> value (its direct `name: value` lines)."""
    found: dict[str, str] = {}
    for line in block(service, service.index(f"    {key}:")):
        if re.match(r"      [A-Za-z_]", line):
            name, _, value = line.strip().partition(":")
            found[name] = value.strip().strip('"')
    return found


def seconds(duration: str) -> float:
    """A compose duration such as `30s` or `1m30s`."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match, duration
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def worker_command_of_compose() -> list[str]:
    (command,) = [line for line in compose_services()["worker"] if line.startswith("    command:")]
    words: list[str] = json.loads(command.partition(":")[2])
    return words


def worker_shutdown_seconds() -> float:
    """JOBS_SHUTDOWN_SECONDS as the worker service gets it (else the setting's default)."""
    environment = mapping(compose_services()["worker"], "environment")
    default = Settings.model_fields["jobs_shutdown_seconds"].default
    return float(environment.get("JOBS_SHUTDOWN_SECONDS", default))


@pytest.mark.skipif(not COMPOSE.exists(), reason="no compose.yaml (use_docker is off)")
def test_compose_runs_a_worker_like_the_app() -> None:
    services = compose_services()
    app, worker = services["app"], services["worker"]
    # the same image, built from the same Dockerfile, running the worker instead of the API
    for key in ("    build:", "    image:", "    env_file:"):
        (line,) = [line for line in app if line.startswith(key)]
        assert line in worker, key
    assert worker_command_of_compose() == ["python", "-m", PACKAGE, "worker"]
    # production whatever .env says, the app's database and Redis
    app_environment = mapping(app, "environment")
    environment = mapping(worker, "environment")
    assert environment["ENVIRONMENT"] == "production"
    assert environment["DATABASE_URL"] == app_environment["DATABASE_URL"]
    assert environment["REDIS_URL"] == app_environment["REDIS_URL"]
    if "    volumes:" in app:  # SQLite: the app's file, on the app's volume
        assert block(worker, worker.index("    volumes:")) == block(app, app.index("    volumes:"))
    # started when the app would be: what it needs is healthy, the migrations are applied
    assert mapping(worker, "depends_on") == mapping(app, "depends_on")
    assert conditions(worker) == conditions(app)
    # no port, and the image's HTTP health check switched off (the worker serves no HTTP)
    assert not any(line.startswith("    ports:") for line in worker)
    assert "      disable: true" in block(worker, worker.index("    healthcheck:"))
    assert "    restart: unless-stopped" in worker


def conditions(service: list[str]) -> dict[str, str]:
    """depends_on as service -> condition."""
    lines = block(service, service.index("    depends_on:"))
    names = [line.strip().rstrip(":") for line in lines if re.fullmatch(r"      [a-z]+:", line)]
    found = [line.partition(":")[2].strip() for line in lines if "condition:" in line]
    assert len(names) == len(found), lines
    return dict(zip(names, found, strict=True))


@pytest.mark.skipif(not COMPOSE.exists(), reason="no compose.yaml (use_docker is off)")
def test_compose_migrates_once_before_the_app_and_the_worker_start() -> None:
    """Two API replicas applying the migrations at once would race: one service applies
    them and exits; the replicas and the workers wait until it succeeded, and apply none."""
    services = compose_services()
    migrate, app = services["migrate"], services["app"]
    (command,) = [line for line in migrate if line.startswith("    command:")]
    assert json.loads(command.partition(":")[2]) == ["alembic", "upgrade", "head"]
    for key in ("    build:", "    image:", "    env_file:"):
        (line,) = [line for line in app if line.startswith(key)]
        assert line in migrate, key
    assert mapping(migrate, "environment") == {
        name: value
        for name, value in mapping(app, "environment").items()
        if name in {"ENVIRONMENT", "DATABASE_URL", "REDIS_URL"}
    }
    assert '    restart: "no"' in migrate
    for name in ("app", "worker"):
        assert conditions(services[name])["migrate"] == "service_completed_successfully"
    assert mapping(app, "environment")["RUN_MIGRATIONS"] == "0"


@pytest.mark.skipif(not COMPOSE.exists(), reason="no compose.yaml (use_docker is off)")
def test_compose_serves_two_app_replicas_behind_the_proxy() -> None:
    """Only the proxy is published; it reaches the replicas on the edge network, whose
    subnet is the one proxy the app believes for X-Forwarded-For, and the Caddyfile
    sends to the app's port."""
    services = compose_services()
    app, proxy = services["app"], services["proxy"]
    assert "      replicas: 2" in block(app, app.index("    deploy:"))
    assert not any(line.startswith("    ports:") for line in app)
    assert block(proxy, proxy.index("    ports:")) == ['      - "8000:80"']
    assert block(proxy, proxy.index("    networks:")) == ["      - edge"]
    assert "      - edge" in block(app, app.index("    networks:"))
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    networks = block(lines, lines.index("networks:"))
    (subnet,) = [line.split("subnet:")[1].strip() for line in networks if "subnet:" in line]
    assert mapping(app, "environment")["FORWARDED_ALLOW_IPS"] == subnet
    (mount,) = block(proxy, proxy.index("    volumes:"))
    source, target, mode = mount.strip().removeprefix("- ").split(":")
    assert (target, mode) == ("/etc/caddy/Caddyfile", "ro")
    caddyfile = (PROJECT_ROOT / source).read_text(encoding="utf-8")
    assert re.search(r"^\s+name app$", caddyfile, re.M)
    (port,) = re.findall(r"^EXPOSE (\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert re.search(rf"^\s+port {port}$", caddyfile, re.M)
    assert re.search(r"^:80 \{$", caddyfile, re.M)


@pytest.mark.skipif(not COMPOSE.exists(), reason="no compose.yaml (use_docker is off)")
def test_compose_gives_running_jobs_time_to_finish() -> None:
    """Docker kills a container stop_grace_period after SIGTERM (10 s unless set): the worker
    must have stopped by then, its running jobs finished within JOBS_SHUTDOWN_SECONDS."""
    worker = compose_services()["worker"]
    (grace,) = [line for line in worker if line.startswith("    stop_grace_period:")]
    assert seconds(grace.partition(":")[2].strip()) >= worker_shutdown_seconds() + 5


def worker_command_of_makefile() -> list[str]:
    """What `make worker` runs (make's own dry run), with this interpreter."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    dry_run = subprocess.run(  # noqa: S603 - make, fixed arguments
        [make, "--no-print-directory", "-n", "worker", f"BIN={Path(sys.executable).parent}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = dry_run.stdout.splitlines()
    return shlex.split(line)


def test_make_worker_runs_the_worker() -> None:
    text = MAKEFILE.read_text(encoding="utf-8")
    (rule,) = [line for line in text.splitlines() if line.startswith("worker:")]
    assert "## " in rule  # its help text
    assert "REDIS_URL" in rule
    assert worker_command_of_makefile() == [
        str(Path(sys.executable).parent / "python"),
        "-m",
        PACKAGE,
        "worker",
    ]


@pytest.fixture
async def database(settings: Settings, migrated: Config) -> AsyncIterator[Database]:
    db = Database.from_settings(settings)
    async with db.engine.begin() as connection:  # what an earlier test may have left
        await connection.execute(delete(JobRecord))
    yield db
    async with db.engine.begin() as connection:
        await connection.execute(delete(JobRecord))
    await db.engine.dispose()


@pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to run a worker on a real Redis")
@pytest.mark.parametrize("source", ["Makefile", "compose.yaml"])
async def test_the_worker_command_runs_jobs_and_stops_in_time(
    database: Database, database_url: str, tmp_path: Path, source: str
) -> None:
    """The command `make worker` (or the compose service) runs, in production as compose
    runs it: it takes a job from Redis and, on SIGTERM, stops within the grace period."""
    if source == "compose.yaml":
        if not COMPOSE.exists():
            pytest.skip("no compose.yaml (use_docker is off)")
        command = [sys.executable, *worker_command_of_compose()[1:]]
        shutdown = worker_shutdown_seconds()
        (grace_line,) = [
            line
            for line in compose_services()["worker"]
            if line.startswith("    stop_grace_period:")
        ]
        grace = seconds(grace_line.partition(":")[2].strip())
    else:
        command = worker_command_of_makefile()
        shutdown = Settings.model_fields["jobs_shutdown_seconds"].default
        grace = 10.0  # what Docker and Kubernetes give by default
    assert REDIS_URL is not None
    async with database.sessionmaker() as session:
        email = Email(to="a@example.com", subject="Hello", body="From the worker.")
        job_id = await enqueue(session, send_email, email)
        await session.commit()
    log = tmp_path / "worker.log"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        "ENVIRONMENT": "production",
        "SECRET_KEY": "a-production-grade-secret-key-0123456789abcdef",
        "ALLOWED_HOSTS": "api.example.com",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "JOBS_QUEUE": f"test-worker-{uuid.uuid4().hex}",
        "JOBS_SHUTDOWN_SECONDS": str(shutdown),
        "JOBS_POLL_SECONDS": "0.2",
        "SMTP_HOST": "",
        "LOG_LEVEL": "INFO",
    }
    with log.open("w") as err:
        worker = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, env=environment, stdout=err, stderr=err
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            async with database.sessionmaker() as session:
                row = await session.get(JobRecord, job_id)
                assert row is not None
                if row.status == "done":
                    break
            assert worker.returncode is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), grace) == 0, log.read_text()
        assert time.monotonic() - stopping < grace
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        async with Redis.from_url(REDIS_URL) as redis:
            await redis.delete(environment["JOBS_QUEUE"])
    assert "worker_started" in log.read_text()
