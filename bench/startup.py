"""Start-up time and memory of one instance, all modules on, against bare FastAPI + SQLAlchemy.

    .venv/bin/python bench/startup.py                          # renders the default project
    .venv/bin/python bench/startup.py --project demo/my-saas    # a project already rendered
    BENCH_ARGS="--scenarios startup --generations 0" make bench

Each run starts one uvicorn worker the way bench/run.py serves the app (uvloop,
httptools, no access log, `ENVIRONMENT=production`) and times it from just before the
process is started to the first 200 from `GET /health/live` over HTTP: the interpreter's
start, every import, the app's build, the lifespan (database engine, the modules'
start-up, the jobs runtime) and the first request. Right after that answer it reads the
worker's CPU time (user + system: the steady figure when other work keeps the cores busy,
which the wall time is not) and its peak resident memory (`VmHWM` in /proc), then stops
it. The reference, bench/bare_db_app.py (FastAPI, an SQLAlchemy asyncio engine on the
same DATABASE_URL, one route), is served and measured the same way. One warm-up of each,
then the runs alternate (R A, A R, ...) so that other work on the machine weighs on both
alike; medians.

Targets (issue 17): start-up and peak memory each within 1.6x of the reference. PASS or
FAIL is printed per target; like the other bench scripts, a miss does not change the exit
status (the figures are what is reported; a busy machine moves them).

Both sides run on the project's own dependencies, as deployed: a virtualenv made from its
uv.lock without the dev group (`uv sync --locked --no-dev`, from uv's cache when it can).
The template's shared virtualenv also holds the dev tools, and with `rich` installed
structlog imports it (about 40 ms more at every start); `--python` picks an interpreter,
and without uv the bench falls back to its own, saying so.

Python writes no .pyc with PYTHONDONTWRITEBYTECODE set, and then compiles every module at
every start: the variable is removed from the servers' environment and the project is
compiled once first, so neither side measures compilation.
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from run import (
    BENCH,
    app_env,
    cpu_seconds,
    database_url,
    drop_database,
    free_port,
    login,
    migrate,
    render,
)

TARGET_RATIO = 1.6
REFERENCE = "bare_db_app:app"
# Every module configured, as in production: a module without its key would not even try
# to build its client. Nothing is called with them (no request reaches a provider).
CONFIGURED = {
    "OPENAI_API_KEY": "sk-bench-not-a-key",
    "STRIPE_SECRET_KEY": "sk_test_bench_not_a_key",
    "STRIPE_WEBHOOK_SECRET": "whsec_bench_not_a_secret",
    "GOOGLE_CLIENT_ID": "bench.apps.googleusercontent.com",
    "GOOGLE_CLIENT_SECRET": "bench-not-a-secret",
}


@dataclass
class Sample:
    seconds: float  # process start to the first 200 from /health/live
    cpu_seconds: float  # the worker's CPU time (user + system) at that answer
    peak_rss_mb: float  # VmHWM right after that answer
    rss_mb: float  # VmRSS at the same moment


@dataclass
class StartupResult:
    reference: list[Sample] = field(default_factory=list)
    app: list[Sample] = field(default_factory=list)
    # One more start of the app, then a sign-up and a sign-in: Argon2 (64 MiB per hash).
    after_login: Sample | None = None
    interpreter: str = ""
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def median(self, side: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in getattr(self, side))

    def ratio(self, attr: str) -> float:
        return self.median("app", attr) / self.median("reference", attr)


def server_env(env: dict[str, str]) -> dict[str, str]:
    merged = {**os.environ, **env}
    merged.pop("PYTHONDONTWRITEBYTECODE", None)
    return merged


def first_answer(port: int, process: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    """Poll GET /health/live every 5 ms until a 200 (the process exiting is an error)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health/live")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.005)
    raise RuntimeError(f"no answer from port {port} in {seconds:.0f} s")


def memory_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident memory of a process, MB."""
    status = Path(f"/proc/{pid}/status").read_text()

    def field_mb(name: str) -> float:
        match = re.search(rf"{name}:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    return field_mb("VmHWM"), field_mb("VmRSS")


@dataclass(frozen=True)
class Side:
    app: str  # module:attribute, for uvicorn
    cwd: Path
    app_dir: Path
    env: dict[str, str]
    python: str


def deployed_python(project: Path, workdir: Path) -> str | None:
    """The interpreter of a virtualenv with the project's runtime dependencies only."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        return None
    venv = workdir / "deployed-venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    for offline in (["--offline"], []):
        done = subprocess.run(
            [uv, "sync", "--locked", "--no-dev", "--quiet", "--python", sys.executable,
             *offline],
            cwd=project, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return str(venv / "bin" / "python")
    return None


def start_once(side: Side, *, then_login: bool = False) -> Sample:
    """Start, wait for the first answer, measure (after a sign-up and a sign-in), stop."""
    port = free_port()
    cmd = [
        side.python, "-m", "uvicorn", side.app,
        "--app-dir", str(side.app_dir),
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=side.cwd, env=side.env)
    try:
        first_answer(port, process)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(process.pid)
        if then_login:
            login(f"http://127.0.0.1:{port}", "startup-bench@example.com")
        peak, current = memory_mb(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return Sample(elapsed, cpu, peak, current)


def measure_startup(
    project: Path,
    package: str,
    url: str,
    runs: int,
    *,
    python: str | None = None,
    log: bool = True,
) -> StartupResult:
    """`runs` start-ups of the project and of the reference, alternating, after a warm-up.

    `python`: the servers' interpreter; by default one with the project's runtime
    dependencies only (`deployed_python`), else this one.
    """
    compileall.compile_dir(project / "src", quiet=1)
    compileall.compile_file(BENCH / "bare_db_app.py", quiet=1)
    workdir = Path(tempfile.mkdtemp(prefix="bench-startup-venv-"))
    try:
        interpreter = python or deployed_python(project, workdir)
        label = (
            f"`{python}`"
            if python
            else "the project's runtime dependencies (`uv sync --locked --no-dev`)"
            if interpreter
            else "the bench's own interpreter (uv not found: dev tools included)"
        )
        interpreter = interpreter or sys.executable
        sides = {
            "reference": Side(
                REFERENCE, BENCH, BENCH, server_env({"DATABASE_URL": url}), interpreter
            ),
            "app": Side(
                f"{package}.main:app",
                project,
                project / "src",
                server_env(app_env(project, url, **CONFIGURED)),
                interpreter,
            ),
        }
        result = run_sides(sides, project, package, runs, log=log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.interpreter = label
    return result


def run_sides(
    sides: dict[str, Side], project: Path, package: str, runs: int, *, log: bool
) -> StartupResult:
    result = StartupResult(load_before=os.getloadavg())
    # The warm-up: caches (the page cache, .pyc files of anything not compiled yet) filled.
    start_once(sides["reference"])
    start_once(sides["app"])
    for run in range(runs):
        order = ("reference", "app") if run % 2 == 0 else ("app", "reference")
        for side in order:
            sample = start_once(sides[side])
            getattr(result, side).append(sample)
            if log:
                print(
                    f"  startup {side}: {sample.seconds:.2f} s, peak RSS "
                    f"{sample.peak_rss_mb:.0f} MB",
                    flush=True,
                )
    result.load_after = os.getloadavg()
    if (project / "src" / package / "auth").is_dir():
        result.after_login = start_once(sides["app"], then_login=True)
    return result


def verdict(ratio: float) -> str:
    return "PASS" if ratio <= TARGET_RATIO else "FAIL"


def startup_table(result: StartupResult) -> list[str]:
    """Markdown lines: the medians, the ratios against the targets, PASS or FAIL."""

    def cell(side: str, attr: str, unit: str, digits: int) -> str:
        values = [getattr(s, attr) for s in getattr(result, side)]
        return (
            f"{statistics.median(values):.{digits}f} {unit} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})"
        )

    def row(label: str, side: str) -> str:
        return (
            f"| {label} | {cell(side, 'seconds', 's', 2)} | {cell(side, 'cpu_seconds', 's', 2)} "
            f"| {cell(side, 'peak_rss_mb', 'MB', 0)} | {cell(side, 'rss_mb', 'MB', 0)} |"
        )

    time_ratio, memory_ratio = result.ratio("seconds"), result.ratio("peak_rss_mb")
    cpu_ratio = result.ratio("cpu_seconds")
    lines = [
        "",
        f"Start-up of one instance (uvicorn, one worker): from the process's start to the first "
        f"200 from `GET /health/live` over HTTP (wall time, and the worker's CPU time by then), "
        f"and the worker's peak resident memory (VmHWM) right after that answer. Every module "
        f"on and configured (keys set, nothing called). Reference: bare FastAPI + an "
        f"SQLAlchemy asyncio engine, one route (`bench/bare_db_app.py`), served the same way. "
        f"Both on {result.interpreter}. {len(result.app)} runs each after a warm-up, "
        f"alternating; medians (min-max). Load average before/after: "
        f"{', '.join(f'{x:.1f}' for x in result.load_before)} / "
        f"{', '.join(f'{x:.1f}' for x in result.load_after)}.",
        "",
        "| | start-up to first answer | CPU time by then | peak RSS | RSS after the answer |",
        "|---|---|---|---|---|",
        row("reference: FastAPI + SQLAlchemy asyncio", "reference"),
        row("the project, all modules on", "app"),
        f"| ratio (target: at most {TARGET_RATIO}x) | {time_ratio:.2f}x {verdict(time_ratio)} "
        f"| {cpu_ratio:.2f}x | {memory_ratio:.2f}x {verdict(memory_ratio)} | |",
    ]
    if result.after_login is not None:
        after = result.after_login
        lines.append(
            f"| the project after a sign-up and a sign-in (one run; Argon2 takes 64 MiB a "
            f"hash) | | | {after.peak_rss_mb:.0f} MB | {after.rss_mb:.0f} MB |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a rendered project (default: render one)")
    parser.add_argument("--runs", type=int, default=7, help="start-ups of each side")
    parser.add_argument(
        "--python", help="the servers' interpreter (default: the project's runtime venv)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    url = ""
    try:
        if args.project:
            project = args.project.resolve()
            package = next(
                p.name for p in (project / "src").iterdir() if (p / "__init__.py").exists()
            )
        else:
            project, package = render(workdir)
        url, label = database_url(workdir)
        migrate(project, app_env(project, url))
        print(f"project {project.name} ({package}) on {label}", flush=True)
        result = measure_startup(project, package, url, args.runs, python=args.python)
    finally:
        if url:
            drop_database(url)
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(startup_table(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
