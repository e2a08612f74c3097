"""A/B of the request path: the default project of this tree against an earlier commit's.

    .venv/bin/python bench/ab.py --baseline 9133171                  # SQLite
    BENCH_DATABASE_URL=postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/ab.py --baseline 9133171

Renders the default project from the template at --baseline (A, `git archive` of that
commit) and from this tree (B; or from the commit --candidate), each on a fresh
database, and serves both at once, one uvicorn worker each, with the same settings as
bench/run.py. Then drives them with wrk
in rounds, alternating which goes first (A B, B A, ...), so that a machine busy with
other work slows both alike: `POST /api/v1/auth/register` (a new address per request)
and `GET /api/v1/users/me`. Prints, per scenario and side, every run, the median and the
spread, and B against A per round; also how busy the machine was (CPU use by others, a
1 s sample in each pause, and the load average). Needs wrk (apt-get install wrk).

With --trace-b, side B exports traces (OpenTelemetry, OTLP over HTTP) to a receiver on
127.0.0.1 that this script runs (it takes POST /v1/traces and drops them): with --baseline
HEAD that measures tracing on against off on the same code. --trace-a traces side A too
(tracing in an earlier commit against this tree's). OTEL_TRACES_SAMPLER and
OTEL_TRACES_SAMPLER_ARG in this script's environment reach the traced side(s).

Without --redis (or BENCH_REDIS_URL) there is no Redis: jobs run in the app process, whose
CPU then includes them. With it, both sides keep their rate limits in Redis and a side
with background jobs hands them to a `worker` process of its own (its CPU is shown apart).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from run import (
    BENCH,
    PASSWORD,
    ROOT,
    Server,
    app_env,
    busy_share,
    clear_queue,
    cpu_seconds,
    database_url,
    drop_database,
    login,
    migrate,
    wrk,
)

# No limit gets in the way of the measured routes (the limiter still counts every request).
LIMITS = {"AUTH_REGISTER_LIMIT_PER_CLIENT": "100000000/minute"}
SCENARIOS: dict[str, dict[str, Any]] = {
    "register": {
        "path": "/api/v1/auth/register",
        "method": "POST",
        "body": '{"email": "ab-{n}@example.com", "password": "' + PASSWORD + '"}',
        # Argon2 takes about 0.2-0.5 s of CPU per registration here (in a worker thread):
        # two at a time keep both cores busy without queueing hashes behind wrk's timeout.
        "connections": 2,
        "timeout": 10.0,
    },
    "users/me": {
        "path": "/api/v1/users/me",
        "method": "GET",
        "body": "",
        "connections": 64,
        "timeout": 2.0,
    },
}


def template_at(revision: str, workdir: Path) -> Path:
    """The template as it was at `revision` (a `git archive` of the repository)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision],
        check=True,
        capture_output=True,
    ).stdout
    target = workdir / f"template-{revision}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def render(template: Path, output: Path) -> tuple[Path, str]:
    from cookiecutter.main import cookiecutter

    project = Path(
        cookiecutter(
            str(template),
            no_input=True,
            output_dir=str(output),
            extra_context={"project_name": "Bench App"},
        )
    )
    package = next(p.name for p in (project / "src").iterdir() if (p / "__init__.py").exists())
    return project, package


class Side:
    def __init__(
        self,
        label: str,
        template: Path,
        workdir: Path,
        redis_url: str | None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.label = label
        here = workdir / label
        here.mkdir()
        self.project, self.package = render(template, here)
        self.url, self.db_label = database_url(here)
        package, url = self.package, self.url
        env = app_env(self.project, url, **LIMITS, **(extra_env or {}))
        migrate(self.project, env)
        self.worker: subprocess.Popen[bytes] | None = None
        self.redis_url, self.queue = redis_url, f"bench-ab-{secrets.token_hex(4)}:jobs"
        if redis_url:
            env.update(REDIS_URL=redis_url, JOBS_QUEUE=self.queue)
            if (self.project / "src" / package / "core" / "jobs").is_dir():
                self.worker = subprocess.Popen(
                    [sys.executable, "-m", package, "worker"],
                    cwd=self.project,
                    env={**os.environ, **env},
                )
        try:
            self.server = Server(
                f"{package}.main:app", cwd=self.project, env=env, app_dir=self.project / "src"
            )
        except BaseException:
            if self.worker:
                self.worker.kill()
            raise
        token = login(self.server.url, f"ab-me-{secrets.token_hex(4)}@example.com")
        self.bearer = {"Authorization": f"Bearer {token}"}
        self.runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}

    def drive(self, name: str, duration: float) -> dict[str, Any]:
        spec = SCENARIOS[name]
        headers = {"Content-Type": "application/json"} if spec["body"] else dict(self.bearer)
        pid = self.server.process.pid
        cpu = cpu_seconds(pid)
        worker_cpu = cpu_seconds(self.worker.pid) if self.worker else 0.0
        result = wrk(
            self.server.url + spec["path"],
            spec["connections"],
            duration,
            headers=headers,
            method=spec["method"],
            body=spec["body"],
            timeout=spec["timeout"],
        )
        # The app process's CPU time per answered request (its threads and, without Redis,
        # the jobs it runs itself included): less sensitive than req/s to a busy machine.
        result["cpu_ms"] = (cpu_seconds(pid) - cpu) * 1000 / max(1, result["requests"])
        if self.worker:  # with Redis: the jobs' run, in the worker process (a little later)
            worker_cpu = cpu_seconds(self.worker.pid) - worker_cpu
            result["worker_cpu_ms"] = worker_cpu * 1000 / max(1, result["requests"])
        return result

    def stop(self) -> None:
        self.server.stop()
        if self.worker:
            self.worker.terminate()
            self.worker.wait(timeout=30)
        if self.redis_url:
            clear_queue(self.redis_url, self.queue)


class _Receiver(BaseHTTPRequestHandler):
    """Takes OTLP/HTTP exports and drops them (counting what arrived).

    HTTP/1.1, so the exporter keeps its connection from one export to the next, as it does
    with a collector (HTTP/1.0 closed it after each, a new TCP connection per batch).
    """

    protocol_version = "HTTP/1.1"
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def otlp_receiver() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def register_counts(side: Side) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH / "register_statements.py"), str(side.project / "src"),
         side.package, side.url],
        cwd=side.project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    counts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def register_costs(sides: list[Side], repeats: int = 3) -> list[str]:
    """Statements per registration, and its CPU without Argon2 (A B, B A, A B: medians)."""
    found: dict[str, list[dict[str, Any]]] = {side.label: [] for side in sides}
    for repeat in range(repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            found[side.label].append(register_counts(side))
    lines = []
    for side in sides:
        runs = found[side.label]
        cpu = [r["cpu_ms_without_argon2"] for r in runs]
        lines.append(
            f"{side.label}: {runs[0]['request']} statements in the request, {runs[0]['jobs']} in "
            f"{runs[0]['jobs_run']} job(s) it enqueued; without Argon2, "
            f"{statistics.median(cpu):.2f} ms of CPU per registration "
            f"({', '.join(f'{x:.2f}' for x in cpu)})"
        )
    return lines


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    low, high = min(values), max(values)
    half = (high - low) / 2 / median if median else 0.0
    return f"{number(median)} ({number(low)}-{number(high)}, ±{half:.0%})"


def report(
    a: Side,
    b: Side,
    args: argparse.Namespace,
    busy: list[float],
    loads: list[str],
    statements: list[str],
) -> str:
    candidate = f"template at {args.candidate}" if args.candidate else "this tree"
    if args.trace_a or args.trace_b:
        sampler = os.environ.get("OTEL_TRACES_SAMPLER")
        sampled = (
            f"sampler {sampler} {os.environ.get('OTEL_TRACES_SAMPLER_ARG', '')}".rstrip()
            if sampler
            else "every request sampled (the default sampler)"
        )
        traced = "both sides" if args.trace_a and args.trace_b else "A" if args.trace_a else "B"
        candidate += (
            f"; {traced} tracing to an OTLP receiver on 127.0.0.1, {sampled} "
            f"({_Receiver.received} exports received)"
        )
    where_jobs = (
        "Redis for both sides (rate limits; jobs, if any, go to one worker process)"
        if args.redis
        else "no Redis (jobs, if any, run in the app process)"
    )
    lines = [
        f"A/B measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{os.cpu_count()} cores, one uvicorn worker each (uvloop, httptools, no access log), "
        f"{a.db_label}, {where_jobs}; A = template at "
        f"{args.baseline}, B = {candidate}. {args.rounds} rounds of {args.duration:g} s per "
        f"side and scenario after a {args.warmup:g} s warm-up, the order alternating "
        f"(A B, B A, ...).",
        "",
        "| scenario | connections | side | req/s per run | median req/s (min-max, ±half range) "
        "| median p50 ms | median p99 ms | errors | app CPU ms per request, median (min-max) "
        "| B/A req/s (median of the rounds' ratios) "
        "| B/A app CPU per request (median of the rounds' ratios) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, spec in SCENARIOS.items():
        if name not in args.scenarios:
            continue
        pairs = list(zip(a.runs[name], b.runs[name], strict=True))
        ratios = [rb["rps"] / ra["rps"] for ra, rb in pairs if ra["rps"]]
        # The server's own CPU time per request, B over A, round by round: each round's two
        # runs are back to back, so what other work does to one it mostly does to the other.
        cpu_ratios = [rb["cpu_ms"] / ra["cpu_ms"] for ra, rb in pairs if ra["cpu_ms"]]
        for side in (a, b):
            runs = side.runs[name]
            rps = [r["rps"] for r in runs]
            cpu = [r["cpu_ms"] for r in runs]
            worker = [r["worker_cpu_ms"] for r in runs if "worker_cpu_ms" in r]
            in_worker = f" + {statistics.median(worker):.1f} in the worker" if worker else ""
            errors = sum(r[k] for r in runs for k in ("connect", "read", "write", "status"))
            errors += sum(r["timeout"] for r in runs)
            ratio = (
                f"{statistics.median(ratios):.1%} (rounds: {', '.join(f'{x:.0%}' for x in ratios)})"
                if side is b
                else ""
            )
            cpu_ratio = (
                f"{statistics.median(cpu_ratios):.1%} "
                f"(rounds: {', '.join(f'{x:.0%}' for x in cpu_ratios)})"
                if side is b and cpu_ratios
                else ""
            )
            lines.append(
                f"| {name} | {spec['connections']} | {side.label} "
                f"| {', '.join(number(x) for x in rps)} | {spread(rps)} "
                f"| {statistics.median(r['p50_us'] for r in runs) / 1000:.1f} "
                f"| {statistics.median(r['p99_us'] for r in runs) / 1000:.1f} | {errors} "
                f"| {ms(statistics.median(cpu))} ({ms(min(cpu))}-{ms(max(cpu))}){in_worker} "
                f"| {ratio} | {cpu_ratio} |"
            )
    if statements:
        lines += [
            "",
            "One registration in-process (`bench/register_statements.py`, jobs run in the "
            "process, 3 runs alternating):",
            "",
            *(f"- {line}" for line in statements),
        ]
    lines += [
        "",
        f"Machine busy with other work between rounds (share of the {os.cpu_count()} cores, "
        f"1 s samples): {', '.join(f'{x:.0%}' for x in busy)}; load average: {'; '.join(loads)}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a commit of the template (side A)")
    parser.add_argument(
        "--candidate", help="a commit of the template for side B (default: this tree)"
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("BENCH_REDIS_URL") or None,
        help="REDIS_URL for both sides (rate limits there; jobs through it to one worker "
        "process per side that has jobs); default BENCH_REDIS_URL, else none",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--scenarios", default="register,users/me")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--trace-b",
        action="store_true",
        help="side B traces every request to an OTLP receiver on 127.0.0.1 run by this script",
    )
    parser.add_argument(
        "--trace-a",
        action="store_true",
        help="side A traces too (with --trace-b: the cost of tracing in A's code against B's)",
    )
    args = parser.parse_args()
    args.scenarios = args.scenarios.split(",")
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    sides: list[Side] = []
    try:
        extra = {}
        if args.trace_b or args.trace_a:
            receiver = otlp_receiver()
            extra["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.server_port}"
        baseline = template_at(args.baseline, workdir)
        sides.append(Side("A", baseline, workdir, args.redis, extra if args.trace_a else None))
        candidate = template_at(args.candidate, workdir) if args.candidate else ROOT
        sides.append(Side("B", candidate, workdir, args.redis, extra if args.trace_b else None))
        a, b = sides
        for name in args.scenarios:
            for side in sides:
                side.drive(name, args.warmup)
        busy: list[float] = []
        loads: list[str] = []
        for round_ in range(args.rounds):
            busy.append(busy_share())
            loads.append(", ".join(f"{x:.1f}" for x in os.getloadavg()))
            order = (a, b) if round_ % 2 == 0 else (b, a)
            for name in args.scenarios:
                for side in order:
                    result = side.drive(name, args.duration)
                    side.runs[name].append(result)
                    print(
                        f"  round {round_ + 1} {name} {side.label}: {number(result['rps'])} "
                        f"req/s p99 {result['p99_us'] / 1000:.1f} ms, "
                        f"{result['cpu_ms']:.1f} ms CPU per request",
                        flush=True,
                    )
        statements = register_costs(sides) if "register" in args.scenarios else []
        table = report(a, b, args, busy, loads, statements)
        print()
        print(table)
        if args.output:
            args.output.write_text(table)
    finally:
        for side in sides:
            side.stop()
            drop_database(side.url)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
