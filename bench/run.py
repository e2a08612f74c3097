"""Benchmark the generated app against a bare FastAPI app, and under overload.

    make bench                      # SQLite
    BENCH_DATABASE_URL=postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/postgres make bench

Renders the default project, starts it with one uvicorn worker (uvloop,
httptools, no access log) on 127.0.0.1, starts a bare FastAPI app with the
same server settings as the reference, drives both with wrk on loopback
(bounded runs after a warm-up, each run twice, the better run reported), and
prints one markdown table, also written to docs/benchmark-results.md.

The project runs from its source tree with the template's shared virtualenv,
which holds exactly the versions the project pins. Scenarios that need a
module (auth, ai) run when the default project has it.

Scenario "startup": start-up time and peak memory of one instance against bare FastAPI +
SQLAlchemy, several alternating starts each, PASS/FAIL against the targets (bench/startup.py).

Scenario "jobs": background jobs through Redis (BENCH_REDIS_URL, else a
redis-server of its own on a free port, else skipped) and 1 and 2 `worker`
processes (bench/jobs_bench.py). The request path with and without the outbox
is an A/B against an earlier commit: bench/ab.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = ROOT / "docs" / "benchmark-results.md"
WRK_SCRIPT = BENCH / "wrk_report.lua"
PASSWORD = "bench-password-123456"


@dataclass
class Result:
    scenario: str
    endpoint: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    timeouts: int
    peak_rss_mb: float
    reference: Result | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> str:
        if self.reference is None or not self.reference.rps:
            return ""
        return f"{self.rps / self.reference.rps:.0%}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {seconds:.0f} s")


class Server:
    """One uvicorn worker in its own process, the way production runs one per core."""

    def __init__(self, app: str, *, cwd: Path, env: Mapping[str, str], app_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "uvicorn", app,
            "--app-dir", str(app_dir),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
            "--backlog", "4096",
        ]  # fmt: skip
        self.process = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env})
        wait_until_up(self.url + "/health/live")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def serve(app: str, *, cwd: Path, env: Mapping[str, str], app_dir: Path) -> Iterator[Server]:
    server = Server(app, cwd=cwd, env=env, app_dir=app_dir)
    try:
        yield server
    finally:
        server.stop()


def wrk(
    url: str,
    connections: int,
    duration: float,
    *,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: str = "",
    timeout: float = 2.0,
) -> dict[str, Any]:
    env = {
        **os.environ,
        "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
        "WRK_METHOD": method,
        "WRK_BODY": body,
        "WRK_RUN": uuid.uuid4().hex[:8],  # a "{n}" in the body: unique across runs
    }
    threads = min(2, connections)
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s",
        f"--timeout={timeout:g}s", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    line = next(li for li in done.stdout.splitlines() if li.startswith("BENCH_JSON "))
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def measure(
    scenario: str,
    server: Server,
    path: str,
    connections: int,
    args: argparse.Namespace,
    **kwargs: Any,
) -> Result:
    url = server.url + path
    wrk(url, connections, args.warmup, **kwargs)
    runs = [wrk(url, connections, args.duration, **kwargs) for _ in range(args.runs)]
    best = max(runs, key=lambda r: r["rps"])
    errors = sum(best[k] for k in ("connect", "read", "write", "status"))
    result = Result(
        scenario=scenario,
        endpoint=f"{kwargs.get('method', 'GET')} {path}",
        connections=connections,
        rps=best["rps"],
        p50_ms=best["p50_us"] / 1000,
        p99_ms=best["p99_us"] / 1000,
        errors=errors,
        timeouts=best["timeout"],
        peak_rss_mb=server.peak_rss_mb(),
    )
    spread = [round(r["rps"]) for r in runs]
    result.notes.append(f"runs: {spread} req/s")
    print(
        f"  {scenario}: {result.rps:,.0f} req/s p50 {result.p50_ms:.1f} ms "
        f"p99 {result.p99_ms:.1f} ms errors {errors} timeouts {result.timeouts}",
        flush=True,
    )
    return result


# --- the project -------------------------------------------------------------------


def generation_times(count: int) -> list[float]:
    """`cookiecutter --no-input` with hooks, offline; seconds per run."""
    times = []
    cookiecutter = shutil.which("cookiecutter", path=str(Path(sys.executable).parent))
    assert cookiecutter, "cookiecutter is not installed in this venv"
    for _ in range(count):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            subprocess.run(
                [cookiecutter, "--no-input", "-o", out, str(ROOT)],
                check=True,
                capture_output=True,
                env={**os.environ, "no_proxy": "*", "HTTPS_PROXY": "http://127.0.0.1:9"},
            )
            times.append(time.perf_counter() - started)
    return times


def render(workdir: Path) -> tuple[Path, str]:
    from cookiecutter.main import cookiecutter

    project = Path(
        cookiecutter(
            str(ROOT),
            no_input=True,
            output_dir=str(workdir),
            extra_context={"project_name": "Bench App"},
        )
    )
    package = next(p.name for p in (project / "src").iterdir() if (p / "__init__.py").exists())
    return project, package


def database_url(workdir: Path) -> tuple[str, str]:
    """(url, description): a fresh PostgreSQL database, or a SQLite file."""
    server = os.environ.get("BENCH_DATABASE_URL")
    if not server:
        return f"sqlite+aiosqlite:///{workdir / 'bench.db'}", "SQLite (file, WAL)"
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", server)

    async def create() -> str:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        return str(version)

    version = asyncio.run(create())
    base, _, _ = server.rpartition("/")
    return f"{base}/{name}", f"PostgreSQL {version.split()[0]} (asyncpg)"


def drop_database(url: str) -> None:
    """Drop a database database_url() made (a SQLite file goes with its directory)."""
    server = os.environ.get("BENCH_DATABASE_URL")
    if not server or not url.startswith(server.rpartition("/")[0] + "/bench_"):
        return
    import asyncpg

    name = url.rpartition("/")[2]
    admin = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", server)

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def app_env(project: Path, url: str, **overrides: str) -> dict[str, str]:
    env = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": url,
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": "",
        "PYTHONPATH": str(project / "src"),
    }
    env.update(overrides)
    return env


def migrate(project: Path, env: Mapping[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=project,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )


# --- scenarios that need the auth module -------------------------------------------


def login(base_url: str, email: str, *, verify_in: str | None = None) -> str:
    """Register and sign in; with `verify_in` (a database URL), the address verified first."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        if verify_in:
            verify_email(verify_in, email)
        response = http.post("/api/v1/auth/login", data={"username": email, "password": PASSWORD})
        response.raise_for_status()
        return str(response.json()["access_token"])


def verify_email(url: str, email: str) -> None:
    """Mark an account's address verified in its database (API keys need one)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def update() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE users SET is_verified = :yes WHERE email = :email"),
                    {"yes": True, "email": email},
                )
        finally:
            await engine.dispose()

    asyncio.run(update())


def add_api_keys(base_url: str, token: str, count: int) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for i in range(count):
            response = http.post(
                "/api/v1/api-keys",
                json={"name": f"bench key {i}"},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()


def statements_per_list(project: Path, package: str, url: str, sizes: tuple[int, ...]) -> str:
    """SQL statements one list request costs, for each number of rows (in-process)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "count_statements.py"), str(project / "src"), package, url,
         *map(str, sizes)],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    return ", ".join(f"{rows} rows: {n} statements" for rows, n in counts)


# --- the run -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[list[Result], list[JobsResult], list[str]]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    results: list[Result] = []
    jobs: list[JobsResult] = []
    startup: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    url = ""
    try:
        project, package = render(workdir)
        url, db_label = database_url(workdir)
        args.db_label = db_label
        env = app_env(project, url)
        migrate(project, env)
        has_auth = (project / "src" / package / "auth").is_dir()
        app = f"{package}.main:app"
        print(f"project {project.name} ({package}) on {db_label}", flush=True)

        if "health" in args.scenarios:
            with serve("bare_app:app", cwd=BENCH, env={}, app_dir=BENCH) as bare:
                reference = measure("health, bare FastAPI", bare, "/health/live", 64, args)
            with serve(app, cwd=project, env=env, app_dir=project / "src") as server:
                health = measure("health", server, "/health/live", 64, args)
                health.reference = reference
                results += [reference, health]
        if has_auth and "auth" in args.scenarios:
            with serve(app, cwd=project, env=env, app_dir=project / "src") as server:
                token = login(server.url, f"me-{uuid.uuid4().hex[:8]}@example.com")
                bearer = {"Authorization": f"Bearer {token}"}
                for connections in (64, 256):
                    results.append(
                        measure("users/me", server, "/api/v1/users/me", connections, args,
                                headers=bearer)
                    )  # fmt: skip
                lister = login(
                    server.url, f"list-{uuid.uuid4().hex[:8]}@example.com", verify_in=url
                )
                add_api_keys(server.url, lister, 50)
                listing = measure(
                    "list 50 API keys", server, "/api/v1/api-keys", 64, args,
                    headers={"Authorization": f"Bearer {lister}"},
                )  # fmt: skip
                listing.notes.append(statements_per_list(project, package, url, (1, 10, 50)))
                results.append(listing)
        if has_auth and "overload" in args.scenarios:
            results.append(overload(project, app, url, args))
        if (project / "src" / package / "orgs").is_dir() and "orgs" in args.scenarios:
            results += orgs_scenario(project, package, url, args)
        if "startup" in args.scenarios:
            from startup import measure_startup, startup_table  # it imports this file

            startup = startup_table(measure_startup(project, package, url, args.startup_runs))
        if "jobs" in args.scenarios:
            with bench_redis(workdir) as redis_url:
                if redis_url is None:
                    print("jobs: skipped (no BENCH_REDIS_URL and no redis-server)", flush=True)
                else:
                    jobs = jobs_scenario(project, package, url, redis_url, args)
    finally:
        if url:
            drop_database(url)
        shutil.rmtree(workdir, ignore_errors=True)
    return results, jobs, startup


# Reads under a policy: the invitations (orgs), the billing subscription (with payments).
ORG_READS = ("/api/v1/orgs/{org_id}/invitations", "/api/v1/orgs/{org_id}/billing/subscription")
ORG_FALLBACK = "/api/v1/orgs/{org_id}"
ORG_MEMBERS = 20
ORG_MIN_ROUNDS = 5
ORG_TARGET = 0.15  # RLS on within 15% of RLS off


# Few connections: one worker is saturated by them already, and no request waits long
# enough to time out (wrk gives up on it, the server still spends CPU on it: CPU per
# completed request would then count work for requests that were not).
ORG_CONNECTIONS = 16
ORG_WRK_TIMEOUT = 20.0


@dataclass
class Turn:
    """One wrk run against one server: its rate, and the CPU time per request of the server
    process and of the PostgreSQL backends serving its connections."""

    data: dict[str, Any]
    cpu_us: float
    db_cpu_us: float

    @property
    def rps(self) -> float:
        return float(self.data["rps"])


def backends(url: str, user: str) -> list[int]:
    """The pids of the PostgreSQL backends of `user` on the database of `url` (but this one)."""
    import asyncpg

    admin = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)

    async def read() -> list[int]:
        conn = await asyncpg.connect(admin)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND usename = $1 AND pid <> pg_backend_pid()",
                user,
            )
        finally:
            await conn.close()
        return [row["pid"] for row in rows]

    return asyncio.run(read())


def cpu_of(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # gone (or not visible: a server in a container)
            found[pid] = cpu_seconds(pid)
    return found


def turn(server: Server, db: tuple[str, str], url: str, duration: float, **kwargs: Any) -> Turn:
    """A wrk run, with the CPU time (user + system, /proc) around it of the server process
    and of its database backends (a fixed pool: the same ones before and after)."""
    before, db_before = cpu_seconds(server.process.pid), cpu_of(backends(*db))
    data = wrk(url, ORG_CONNECTIONS, duration, timeout=ORG_WRK_TIMEOUT, **kwargs)
    spent, db_after = cpu_seconds(server.process.pid) - before, cpu_of(backends(*db))
    db_spent = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
    per = 1e6 / max(1, data["requests"])
    return Turn(data, spent * per, db_spent * per)


def orgs_scenario(project: Path, package: str, url: str, args: argparse.Namespace) -> list[Result]:
    """Org-scoped reads with row-level security holding the app, and without (PostgreSQL).

    The reads of ORG_READS the app has (else `GET /orgs/{org_id}`), for an organization of
    20 members, 19 pending invitations and an active subscription: the app as a role the
    policies hold ("RLS on") against the same app as the superuser, whom they never hold
    ("RLS off"). Both servers run side by side and take turns, off/on/off/on..., at least
    ORG_MIN_ROUNDS rounds each, so a busy machine weighs on both alike; each turn counts
    the server's CPU time per request as well as req/s, and the verdict is on the median of
    the rounds' on/off ratios (CPU per request holds when the machine's load swings the rate).
    """
    if not url.startswith("postgresql"):
        print("orgs: skipped (row-level security needs BENCH_DATABASE_URL)", flush=True)
        return []
    from orgs_bench import drop_role, make_role, seed, seed_billing

    app = f"{package}.main:app"
    role_url = make_role(url)
    # One SECRET_KEY: the token works on both servers. The seeded subscriptions' price is a plan.
    plans = '[{"key": "pro", "name": "Pro", "price_id": "price_bench"}]'
    env = app_env(project, url, PAYMENTS_PLANS=plans)
    out: list[Result] = []
    try:
        with (
            serve(app, cwd=project, env=env, app_dir=project / "src") as off,
            serve(app, cwd=project, env={**env, "DATABASE_URL": role_url},
                  app_dir=project / "src") as on,
        ):  # fmt: skip
            email = f"org-{uuid.uuid4().hex[:8]}@example.com"
            token = login(off.url, email)
            bearer = {"Authorization": f"Bearer {token}"}
            # The same sign-in on the other server: both processes have hashed a password
            # (Argon2 touches 64 MiB) before they are compared.
            httpx.post(on.url + "/api/v1/auth/login", data={"username": email,
                       "password": PASSWORD}, timeout=30).raise_for_status()  # fmt: skip
            org = httpx.post(off.url + "/api/v1/orgs", json={"name": "Bench"}, headers=bearer)
            org_id = org.raise_for_status().json()["id"]
            seed(url, org_id, ORG_MEMBERS - 1, ORG_MEMBERS - 1, 1)
            if (project / "src" / package / "payments").is_dir():
                seed_billing(url, org_id, others=200)
            reads = [
                p for p in ORG_READS
                if httpx.get(on.url + p.replace("{org_id}", org_id), headers=bearer).status_code
                == 200
            ] or [ORG_FALLBACK]  # fmt: skip
            for path in reads:
                out += org_read(project, package, url, role_url, path, org_id, off, on, bearer,
                                args)  # fmt: skip
        return out
    finally:
        drop_role(url, role_url)


def make_url_user(url: str) -> str | None:
    from sqlalchemy import make_url

    return make_url(url).username


def org_read(
    project: Path,
    package: str,
    url: str,
    role_url: str,
    path: str,
    org_id: str,
    off: Server,
    on: Server,
    bearer: Mapping[str, str],
    args: argparse.Namespace,
) -> list[Result]:
    read = path.replace("{org_id}", org_id)
    for server in (off, on):
        wrk(server.url + read, ORG_CONNECTIONS, args.warmup, headers=bearer)
    sides = {"RLS off (superuser)": off, "RLS on (app role)": on}
    users = {off: str(make_url_user(url)), on: str(make_url_user(role_url))}
    turns: dict[str, list[Turn]] = {label: [] for label in sides}
    for n in range(max(ORG_MIN_ROUNDS, args.runs)):
        # off/on/off/on...: every round has both; which goes first alternates as well
        order = list(sides.items()) if n % 2 == 0 else list(reversed(sides.items()))
        for label, server in order:
            turns[label].append(
                turn(server, (url, users[server]), server.url + read, args.duration,
                     headers=bearer)
            )  # fmt: skip
    pairs = list(zip(*turns.values(), strict=True))
    rps_ratios = [b.rps / a.rps for a, b in pairs]
    cpu_ratios = [b.cpu_us / a.cpu_us for a, b in pairs]
    db_ratios = [b.db_cpu_us / a.db_cpu_us for a, b in pairs if a.db_cpu_us]
    out = []
    for label, server in sides.items():
        runs = turns[label]
        middle = sorted(runs, key=lambda t: t.rps)[len(runs) // 2]  # the median run
        data = middle.data
        result = Result(
            scenario=f"org read, {label}",
            endpoint=f"GET {path}",
            connections=ORG_CONNECTIONS,
            rps=middle.rps,
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            errors=sum(t.data[k] for t in runs for k in ("connect", "read", "write", "status")),
            timeouts=sum(t.data["timeout"] for t in runs),
            peak_rss_mb=server.peak_rss_mb(),
            notes=[
                f"runs: {[round(t.rps) for t in runs]} req/s",
                f"server CPU per request: {[round(t.cpu_us) for t in runs]} µs "
                f"(median {statistics.median(t.cpu_us for t in runs):.0f})",
                f"its database backends' CPU per request: {[round(t.db_cpu_us) for t in runs]} "
                f"µs (median {statistics.median(t.db_cpu_us for t in runs):.0f})",
            ],
        )
        out.append(result)
        print(f"  org read {path}, {label}: {result.notes}", flush=True)
    out[1].reference = out[0]
    rps = statistics.median(rps_ratios)
    cpu = statistics.median(cpu_ratios)
    db = statistics.median(db_ratios) if db_ratios else float("nan")
    met = rps >= 1 - ORG_TARGET and cpu <= 1 + ORG_TARGET
    out[1].notes.append(
        f"RLS on / off, median of {len(rps_ratios)} interleaved rounds: req/s {rps:.0%} "
        f"(rounds {[f'{r:.0%}' for r in rps_ratios]}), server CPU per request {cpu:.0%} "
        f"(rounds {[f'{r:.0%}' for r in cpu_ratios]}), database CPU per request {db:.0%} "
        f"(rounds {[f'{r:.0%}' for r in db_ratios]}); target within {ORG_TARGET:.0%}: "
        + ("met" if met else "MISSED")
        + f"; load average {os.getloadavg()[0]:.1f}"
    )
    done = subprocess.run(
        [sys.executable, str(BENCH / "orgs_bench.py"), str(project / "src"), package, url,
         role_url, path, "1", "10", str(ORG_MEMBERS)],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    out[1].notes.append(
        ", ".join(f"{members} members: {n} statements" for members, n in counts)
        + " (RLS on, per request)"
    )
    print(f"  {out[1].notes[-2]}; {out[1].notes[-1]}", flush=True)
    return out


def overload(project: Path, app: str, url: str, args: argparse.Namespace) -> Result:
    """512 connections on users/me with a 5-connection pool: answers, never hangs."""
    env = app_env(project, url, DB_POOL_SIZE="5", DB_MAX_OVERFLOW="0", DB_POOL_TIMEOUT="2")
    with serve(app, cwd=project, env=env, app_dir=project / "src") as server:
        token = login(server.url, f"over-{uuid.uuid4().hex[:8]}@example.com")
        bearer = {"Authorization": f"Bearer {token}"}
        result = measure(
            "overload, pool of 5", server, "/api/v1/users/me", 512, args,
            headers=bearer, timeout=10.0,
        )  # fmt: skip
        started = time.perf_counter()
        statuses = [
            httpx.get(server.url + "/api/v1/users/me", headers=bearer, timeout=5).status_code
            for _ in range(5)
        ]
        after_ms = (time.perf_counter() - started) * 1000 / len(statuses)
        result.notes.append(f"right after: {statuses} in {after_ms:.0f} ms each")
        result.notes.append("non-2xx here are 503 problem+json when the pool is exhausted")
    return result


# --- background jobs through Redis and workers ---------------------------------------------


@dataclass
class JobsResult:
    workers: int
    phase: str  # "backlog", "burst" or "paced" (bench/jobs_bench.py)
    data: dict[str, Any]
    worker_cpu_ms: float  # the workers' CPU time over every phase and the warm-up, per job
    busy_before: float  # share of the cores in use just before (by other work)


@contextmanager
def bench_redis(workdir: Path) -> Iterator[str | None]:
    """BENCH_REDIS_URL, else a redis-server of our own on a free port, else None."""
    given = os.environ.get("BENCH_REDIS_URL")
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_share(seconds: float = 1.0) -> float:
    """Share of all cores in use over `seconds` (/proc/stat), whoever uses them."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def jobs_scenario(
    project: Path, package: str, url: str, redis_url: str, args: argparse.Namespace
) -> list[JobsResult]:
    """Enqueue-to-done with 1 and 2 `worker` processes: bench/jobs_bench.py."""
    results = []
    script = str(BENCH / "jobs_bench.py")
    # Rounds alternate the order (1 2, 2 1, ...) so that a busy machine weighs on both alike.
    order = [
        count
        for round_ in range(args.jobs_rounds)
        for count in (args.workers if round_ % 2 == 0 else args.workers[::-1])
    ]
    for count in order:
        queue = f"bench-{uuid.uuid4().hex[:8]}:jobs"
        env = {**os.environ, **app_env(project, url, REDIS_URL=redis_url, JOBS_QUEUE=queue)}
        busy = busy_share()  # before anything of ours starts: other work
        workers = [
            subprocess.Popen([sys.executable, script, "worker", package], cwd=project, env=env)
            for _ in range(count)
        ]
        try:
            before = sum(cpu_seconds(w.pid) for w in workers)
            done = subprocess.run(
                [sys.executable, script, "drive", package, str(args.jobs), f"{args.duration:g}",
                 f"{args.jobs_share:g}", str(args.enqueuers)],
                cwd=project, env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            cpu = sum(cpu_seconds(w.pid) for w in workers) - before
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.kill()
        line = next(li for li in done.stdout.splitlines() if li.startswith("BENCH_JOBS "))
        phases = json.loads(line.removeprefix("BENCH_JOBS "))
        ran = sum(p["jobs"] for p in phases.values()) + min(50, args.jobs)
        for phase, data in phases.items():
            results.append(JobsResult(count, phase, data, cpu * 1000 / ran, busy))
            print(
                f"  jobs, {count} worker(s), {phase}: {data['jobs_per_s']:,.0f} jobs/s "
                f"p50 {data['p50_ms']:.0f} ms p99 {data['p99_ms']:.0f} ms "
                f"not done {data['not_done']} runs per worker {data['by_process']}",
                flush=True,
            )
        clear_queue(redis_url, queue)
    return results


def clear_queue(redis_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(queue)
    finally:
        client.close()


def jobs_table(results: list[JobsResult], args: argparse.Namespace) -> list[str]:
    lines = [
        "",
        f"Background jobs ({args.db_label}, Redis): the job `bench.write` inserts one row, "
        f"committed with its done mark. An app process enqueues one job per transaction from "
        f"{args.enqueuers} concurrent tasks and publishes them to a Redis stream; `worker` "
        f"processes run them. Latency: from the enqueue's commit to the job's done mark. "
        f"Enqueued/s: commits per second of the burst's enqueueing. "
        f"Backlog: {args.jobs:,} jobs enqueued held back, then due at once (jobs/s: the workers' "
        f"own rate, first done mark to last; latency: from the release). Burst: {args.jobs:,} "
        f"jobs enqueued as fast as they go while the workers run them. Paced: "
        f"{args.jobs_share:.0%} of that run's burst rate for {args.duration:g} s: the latency "
        f"of a queue that keeps up. {args.jobs_rounds} run(s) per number of workers, the order "
        f"alternating; medians, (min-max) where there are several runs.",
        "",
        "| scenario | workers | enqueued/s | jobs/s | p50 ms | p99 ms | max ms | not done "
        "| retried | runs per worker | worker CPU ms/job | app statements per job: relay / sweep "
        "| cores busy before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(values: list[float], digits: int = 0) -> str:
        median = f"{statistics.median(values):,.{digits}f}"
        if len(values) == 1:
            return median
        return f"{median} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"

    for phase in ("backlog", "burst", "paced"):
        for workers in args.workers:
            runs = [r for r in results if r.phase == phase and r.workers == workers]
            if not runs:
                continue
            data = [r.data for r in runs]
            label = f"jobs, {phase}"
            if phase == "paced":
                label += f" at {cell([d['rate'] for d in data])}/s"
            per_worker = "; ".join(" / ".join(str(n) for n in d["by_process"]) for d in data)
            enqueued = cell([d["jobs"] / d["enqueue_s"] for d in data]) if phase == "burst" else ""
            lines.append(
                f"| {label} | {workers} | {enqueued} | {cell([d['jobs_per_s'] for d in data])} "
                f"| {cell([d['p50_ms'] for d in data])} | {cell([d['p99_ms'] for d in data])} "
                f"| {max(d['max_ms'] for d in data):,.0f} | {sum(d['not_done'] for d in data)} "
                f"| {sum(d['retried'] for d in data)} | {per_worker} "
                f"| {cell([r.worker_cpu_ms for r in runs], 1)} "
                f"| {statistics.median(d['app_statements']['relay'] for d in data):.2f} / "
                f"{statistics.median(d['app_statements']['sweep'] for d in data):.2f} "
                f"| {cell([r.busy_before * 100 for r in runs])}% |"
            )
    return lines


def table(
    results: list[Result],
    jobs: list[JobsResult],
    args: argparse.Namespace,
    gen: list[float],
    startup: list[str],
) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, one uvicorn worker "
        f"(uvloop, httptools, no access log), {args.db_label}, wrk on loopback, "
        f"{args.duration:g} s runs after a {args.warmup:g} s warm-up, best of {args.runs}.",
    ]
    if results:
        lines += [
            "",
            "| scenario | endpoint | connections | req/s | p50 ms | p99 ms "
            "| errors (non-2xx, socket) | timeouts | peak RSS MB | vs bare |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in results:
        lines.append(
            f"| {r.scenario} | `{r.endpoint}` | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.errors} | {r.timeouts} | {r.peak_rss_mb:.0f} | {r.ratio} |"
        )
    lines.append("")
    for r in results:
        if r.notes:
            lines.append(f"- {r.scenario} ({r.connections}): {'; '.join(r.notes)}")
    if gen:
        lines.append(
            f"- generation (`cookiecutter --no-input`, hooks included, offline): median "
            f"{statistics.median(gen):.2f} s over {len(gen)} runs"
        )
    if jobs:
        lines += jobs_table(jobs, args)
    lines += startup
    lines.append("")
    lines.append(f"Load average after the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--generations", type=int, default=7)
    parser.add_argument(
        "--scenarios",
        default="health,auth,overload,orgs,jobs,startup",
        help="comma list: health, auth, overload, orgs, jobs, startup",
    )
    parser.add_argument("--workers", default="1,2", help="jobs: worker processes, comma list")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs: the burst's size")
    parser.add_argument(
        "--jobs-share", type=float, default=0.5, help="jobs: paced rate, share of the burst's"
    )
    parser.add_argument("--enqueuers", type=int, default=16, help="jobs: enqueueing tasks")
    parser.add_argument(
        "--jobs-rounds", type=int, default=2, help="jobs: runs per number of workers"
    )
    parser.add_argument("--startup-runs", type=int, default=7, help="startup: starts of each side")
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args()
    args.scenarios = set(args.scenarios.split(","))
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.scenarios & {"health", "auth", "overload", "orgs"} and not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    gen = generation_times(args.generations) if args.generations else []
    results, jobs, startup = run(args)
    report = table(results, jobs, args, gen, startup)
    print()
    print(report)
    if args.output:
        args.output.write_text("# Benchmark results\n\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
