"""Several instances on one PostgreSQL and one Redis, for the scale-out tests.

Each API instance is `uvicorn` in a process of its own, on a port of its own; each worker is
a worker process (`python -m <package> worker`, or the tests' worker with test jobs). They
share nothing but the database and Redis, as instances behind a load balancer do. A test
module starts its set once (a module-scoped fixture), talks to each instance by its URL and
stops them all at the end, whatever happened; a failed test shows their logs.

These tests need PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL); they skip
otherwise (SQLite is one machine's file, not something instances share).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis import Redis
from sqlalchemy.engine import make_url

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.ratelimit import RateLimiter
from tests.conftest import PROJECT_ROOT, clear_tables
from tests.loopback import free_port

PACKAGE = Settings.__module__.split(".")[0]
REDIS_URL = os.environ.get("TEST_REDIS_URL")
_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
ON_POSTGRESQL = bool(_DATABASE_URL) and make_url(_DATABASE_URL).get_backend_name() == "postgresql"

needs_postgresql_and_redis = pytest.mark.skipif(
    not (REDIS_URL and ON_POSTGRESQL),
    reason="several instances need a shared PostgreSQL and Redis: set TEST_DATABASE_URL "
    "(PostgreSQL) and TEST_REDIS_URL",
)

# The real commands: the app under uvicorn, and the project's worker.
APP = f"{PACKAGE}.main:app"
WORKER = (sys.executable, "-m", PACKAGE, "worker")
# Bounds: a loaded machine starts four interpreters with every module slowly.
START_WITHIN = 120.0
STOP_WITHIN = 20.0
LOG_TAIL = 6000  # characters of each process's log shown with a failure
# Variables of the test's own environment a child may need; nothing else is passed on
# (a developer's own DATABASE_URL or a provider's key must not reach the instances).
PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """What every instance and worker of a set reads: one database, one Redis, one queue."""
    assert REDIS_URL is not None
    env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    env.update(
        {
            # The project's package and its tests, installed or not.
            "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)]),
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": REDIS_URL,
            "SECRET_KEY": settings.secret_key.get_secret_value(),
            "LOG_LEVEL": "INFO",
            "DB_POOL_SIZE": "3",  # four processes on a server other tests use too
            "DB_SQLITE_BUSY_TIMEOUT": str(settings.db_sqlite_busy_timeout),
            "JOBS_QUEUE": f"test-scaleout-{uuid.uuid4().hex[:8]}",
            "JOBS_POLL_SECONDS": "0.2",
            "JOBS_CONCURRENCY": "4",
            "JOBS_SHUTDOWN_SECONDS": "2",
            "JOBS_SCHEDULER": "false",
        }
    )
    env.update(extra)
    return env


@asynccontextmanager
async def shared_database(settings: Settings) -> AsyncIterator[Database]:
    """The database the instances share, seen from the test; emptied at the end, when the
    rate limits in Redis are reset too (also at the start: no count left from elsewhere)."""
    database = Database.from_settings(settings)
    limiter = RateLimiter(REDIS_URL)
    await limiter.reset()
    try:
        yield database
    finally:
        await clear_tables(database)
        await limiter.reset()
        await database.engine.dispose()


@dataclass
class Process:
    """One child: its own process group, its output (stdout and stderr) in a file."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _mark: int = 0

    def command(self) -> list[str]:
        return list(self.argv)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
                self.command(),
                cwd=self.log_path.parent,  # no .env there
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopped with whatever it started
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> None:
        """Where this test's part of the log begins."""
        self._mark = len(self.output())

    def since_mark(self) -> str:
        return self.output()[self._mark :]

    def signal(self, signum: int) -> None:
        """`signum` to its whole group (what it started goes with it)."""
        if self.process is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)


def stop(processes: Sequence[Process], within: float = STOP_WITHIN) -> None:
    """SIGTERM to all at once; SIGKILL to those still there after `within` seconds."""
    for process in processes:
        if process.running():
            process.signal(signal.SIGTERM)
    deadline = time.monotonic() + within
    for process in processes:
        if process.process is None:
            continue
        try:
            process.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.signal(signal.SIGKILL)
            process.process.wait(timeout=10)
        process.signal(signal.SIGKILL)  # anything left in its group


@dataclass
class Api(Process):
    """`argv` is uvicorn's command line but for the address, which is this one's own."""

    port: int = 0
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*self.argv, "--host", "127.0.0.1", "--port", str(self.port)]

    def restart_elsewhere(self) -> bool:
        """Start again on another port if another process took this one meanwhile (the port
        is free when chosen, and taken seconds later, once the app has imported)."""
        collisions = self.output().count("address already in use")
        if self.restarts >= 3 or collisions <= self.restarts:
            return False
        self.restarts += 1
        self.port = free_port()
        self.start()
        return True


@dataclass
class Instances:
    """A running set: `apis[i].url` to call an instance, `workers[i].pid` to know who ran what."""

    apis: list[Api] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)

    @property
    def processes(self) -> list[Process]:
        return [*self.apis, *self.workers]

    def mark(self) -> None:
        for process in self.processes:
            process.mark()

    def failure_report(self) -> str:
        """For a failed test (tests/conftest.py): each process's log since the test began."""
        parts = []
        for process in self.processes:
            state = (
                "running"
                if process.running()
                else f"exited {process.process and process.process.returncode}"
            )
            text = process.since_mark()
            if len(text) > LOG_TAIL:
                text = "[...]\n" + text[-LOG_TAIL:]
            parts.append(f"--- {process.name} (pid {process.pid}, {state}) ---\n{text}")
        return "\n".join(parts)

    def assert_running(self) -> None:
        for process in self.processes:
            assert process.running(), f"{process.name} exited:\n{process.output()[-LOG_TAIL:]}"


def _wait_until_ready(instances: Instances, within: float) -> None:
    """Each API answers /health/ready with 200 and each worker has logged its start."""
    deadline = time.monotonic() + within
    waiting: list[Process] = list(instances.processes)
    with httpx.Client(timeout=5.0) as http:
        while waiting:
            for process in list(waiting):
                if not process.running():
                    if isinstance(process, Api) and process.restart_elsewhere():
                        continue
                    raise AssertionError(
                        f"{process.name} exited while starting:\n{process.output()[-LOG_TAIL:]}"
                    )
                if isinstance(process, Api):
                    try:
                        ready = http.get(f"{process.url}/health/ready").status_code == 200
                    except httpx.TransportError:
                        ready = False
                else:
                    ready = "worker_started" in process.output()
                if ready:
                    waiting.remove(process)
            if not waiting:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name} ---\n{p.output()[-LOG_TAIL:]}" for p in waiting)
                raise AssertionError(f"not ready within {within:.0f} s:\n{logs}")
            time.sleep(0.2)


@contextmanager
def running(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    app: str = APP,
    factory: bool = False,
    worker: Sequence[str] = WORKER,
    apis: int = 2,
    workers: int = 2,
    within: float = START_WITHIN,
) -> Iterator[Instances]:
    """`apis` uvicorn processes serving `app` (with `factory`, a function making the app)
    and `workers` processes running `worker`.

    All start at once; the set is yielded when every one is ready (at most `within`
    seconds), and every process is stopped at the end, also when starting failed.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    instances = Instances()
    argv = (sys.executable, "-m", "uvicorn", app, "--no-access-log", *(("--factory",) * factory))
    for i in range(apis):
        log = log_dir / f"api-{i}.log"
        instances.apis.append(Api(f"api-{i}", argv, env, log, port=free_port()))
    for i in range(workers):
        instances.workers.append(Process(f"worker-{i}", worker, env, log_dir / f"worker-{i}.log"))
    try:
        for process in instances.processes:
            process.start()
        _wait_until_ready(instances, within)
        yield instances
    finally:
        stop(instances.processes)
        if REDIS_URL and "JOBS_QUEUE" in env:
            with Redis.from_url(REDIS_URL) as redis:
                redis.delete(env["JOBS_QUEUE"])
