"""Benchmark of the AI chat endpoint against a slow upstream.

Renders the default project (or uses --project), starts a fake OpenAI-compatible
upstream that answers after --delay seconds, migrates the database, serves the
app with one uvicorn worker (uvloop, httptools, no access log, LOG_LEVEL=WARNING),
warms it up (--warmup seconds at 64 callers), then drives POST /api/v1/ai/chat
with wrk at each --connections for --duration seconds while probing
GET /health/live (is the event loop free?).
The usage ledger and the quota check run on every request, as in production.
With --route conversation it drives POST /api/v1/ai/conversations/{id}/messages
instead (needs the auth module): --conversations conversations, each seeded with
--history messages, picked at random per request; AI_MAX_MESSAGES is set to
--history + 1, so every request sends the newest --history stored messages and the
new one, reads them and stores the question and the answer (each in a batch shared
with the requests arriving meanwhile, see docs/ai.md).

    .venv/bin/python bench/ai_chat.py                      # SQLite, 64 and 256 callers
    .venv/bin/python bench/ai_chat.py --database-url postgresql+asyncpg://...
    .venv/bin/python bench/ai_chat.py --route conversation       # 10-message history
    BENCH_DATABASE_URL=postgresql+asyncpg://... .venv/bin/python bench/ai_chat.py   # the same

Needs wrk (apt-get install wrk). Prints req/s, latency p50/p99, errors, timeouts
and the share of the ideal (connections / delay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"messages":[{"role":"user","content":"Say hello"}]}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def render(workdir: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-o",
            str(workdir),
            str(ROOT),
            "project_name=Bench Ai",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return workdir / "bench-ai"


def sign_in(base: str) -> str:
    """With the auth module on, chat needs a user: register one and log in."""
    email, password = f"bench-{os.getpid()}-{time.time_ns()}@example.com", "bench-password-123456"
    register = urllib.request.Request(
        base + "/api/v1/auth/register",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(register, timeout=30):
        pass
    form = urllib.parse.urlencode({"username": email, "password": password}).encode()
    with urllib.request.urlopen(base + "/api/v1/auth/login", data=form, timeout=30) as answer:
        return str(json.loads(answer.read())["access_token"])


def post_json(base: str, path: str, token: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        result: dict[str, object] = json.loads(answer.read())
        return result


def seed_conversations(base: str, token: str, count: int, history: int) -> list[str]:
    """`count` conversations with `history` stored messages each (half asked, half answers)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        made = post_json(base, "/api/v1/ai/conversations", token, {"title": f"bench {i}"})
        conversation = str(made["id"])
        for turn in range(history // 2):
            path = f"/api/v1/ai/conversations/{conversation}/messages"
            post_json(base, path, token, {"content": f"Question {turn} of conversation {i}?"})
        return conversation

    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(one, range(count)))


def conversation_script(ids: list[str]) -> str:
    """wrk: each request posts to one of the conversations, at random."""
    listed = ", ".join(f'"{i}"' for i in ids)
    return (
        f"local ids = {{{listed}}}\n"
        "request = function()\n"
        "  local path = '/api/v1/ai/conversations/' .. ids[math.random(#ids)] .. '/messages'\n"
        "  return wrk.format('POST', path, nil, '{\"content\":\"Say hello\"}')\n"
        "end\n"
    )


def package_of(project: Path) -> str:
    return next(p.name for p in (project / "src").iterdir() if (p / "__init__.py").is_file())


async def probe(url: str, stop: asyncio.Event, samples: list[float]) -> None:
    """GET /health/live every 20 ms on a fresh connection; record each latency."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    request = f"GET /health/live HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
            writer.write(request)
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
            samples.append(time.perf_counter() - started)
        except (OSError, TimeoutError):
            samples.append(float("inf"))
        await asyncio.sleep(0.02)


def run_wrk(
    url: str, connections: int, duration: int, script: Path, timeout: int
) -> dict[str, int]:
    threads = min(2, connections)
    proc = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            f"--timeout={timeout}s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, int] = json.loads(line.removeprefix("RESULT "))
    return result


async def measure(
    url: str, health: str, connections: int, duration: int, script: Path, timeout: int
) -> tuple[dict[str, int], list[float]]:
    stop = asyncio.Event()
    samples: list[float] = []
    prober = asyncio.create_task(probe(health, stop, samples))
    try:
        result = await asyncio.to_thread(run_wrk, url, connections, duration, script, timeout)
    finally:
        stop.set()
        await prober
    return result, samples


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--project", type=Path, help="a generated project (default: render one)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or None,
        help="default: BENCH_DATABASE_URL, else a fresh SQLite file",
    )
    parser.add_argument("--connections", default="64,256")
    parser.add_argument("--duration", type=int, default=10)
    # After a 3 s warm-up the first measured run was often the slowest of a script
    # run (its 64-caller p99 the highest in 6 of 8 script runs, docs/ai.md).
    parser.add_argument("--warmup", type=int, default=10, help="seconds at 64 callers first")
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--transport", choices=["fast", "sdk"], default="fast")
    parser.add_argument("--route", choices=["chat", "conversation"], default="chat")
    parser.add_argument("--history", type=int, default=10, help="conversation: stored messages")
    parser.add_argument("--conversations", type=int, default=256, help="conversation: how many")
    parser.add_argument(
        "--wrk-timeout", type=int, default=2, help="seconds before wrk counts a timeout"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="ai-bench-"))
    project = args.project.resolve() if args.project else render(work)
    package = package_of(project)
    database_url = args.database_url or f"sqlite+aiosqlite:///{work / 'bench.db'}"
    upstream_port, app_port = free_port(), free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "AI_DEFAULT_MODEL": "bench-model",
        "AI_TRANSPORT": args.transport,
        "AI_MAX_RETRIES": "0",
        # Both still checked (and the quota reserved) on every request, just never reached.
        "AI_RATE_LIMIT": "100000000/minute",
        "AI_MONTHLY_TOKEN_QUOTA": str(10**15),
        # With payments the allowance is the plan's: a free plan as large, not unlimited
        # (an unlimited caller reserves nothing, and the bench would skip that work).
        "PAYMENTS_FREE_PLAN": json.dumps(
            {"key": "free", "name": "Free", "ai_monthly_tokens": 10**15}
        ),
        "PYTHONPATH": str(project / "src"),
    }
    if args.route == "conversation":
        # The newest --history stored messages and the new one, however long it grows.
        env["AI_MAX_MESSAGES"] = str(args.history + 1)
        env["AI_HISTORY_TOKEN_BUDGET"] = str(10**6)
    script = work / "chat.lua"
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "fake_upstream.py"),
                "--port",
                str(upstream_port),
                "--delay",
                str(args.delay),
            ]
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"{package}.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(app_port),
                "--workers",
                "1",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                "--backlog",
                "4096",
            ],
            cwd=project,
            env=env,
        ),
    ]
    url = f"http://127.0.0.1:{app_port}/api/v1/ai/chat"
    health = f"http://127.0.0.1:{app_port}/health/live"
    try:
        wait_port(upstream_port)
        wait_http(health)
        lua = WRK_SCRIPT
        base = f"http://127.0.0.1:{app_port}"
        if (project / "src" / package / "auth").is_dir():
            token = sign_in(base)
            lua = f'wrk.headers["Authorization"] = "Bearer {token}"\n' + lua
            if args.route == "conversation":
                ids = seed_conversations(base, token, args.conversations, args.history)
                lua += conversation_script(ids)
        elif args.route == "conversation":
            raise SystemExit("--route conversation needs a project with the auth module")
        script.write_text(lua)
        print(
            f"project {project} ({package}), database {database_url.split('://')[0]}, "
            f"transport {args.transport}, upstream delay {args.delay * 1000:.0f} ms, "
            f"route {args.route}"
            + (f" ({args.history}-message history)" if args.route == "conversation" else "")
        )
        run_wrk(url, 64, args.warmup, script, args.wrk_timeout)
        print(
            f"{'callers':>7} {'req/s':>7} {'ideal':>6} {'share':>6} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'errors':>6} {'timeouts':>8} {'live p50':>8} {'live p99':>8} {'app CPU':>7}"
        )
        for connections in (int(c) for c in args.connections.split(",")):
            cpu_before = cpu_seconds(procs[1].pid)
            result, live = asyncio.run(
                measure(url, health, connections, args.duration, script, args.wrk_timeout)
            )
            cpu = (cpu_seconds(procs[1].pid) - cpu_before) / (result["duration_us"] / 1e6)
            rps = result["requests"] / (result["duration_us"] / 1e6)
            ideal = connections / args.delay
            errors = result["connect"] + result["read"] + result["write"] + result["status"]
            print(
                f"{connections:>7} {rps:>7.0f} {ideal:>6.0f} {rps / ideal:>6.0%} "
                f"{result['p50_us'] / 1000:>7.0f} {result['p99_us'] / 1000:>7.0f} "
                f"{errors:>6} {result['timeout']:>8} "
                f"{pct(live, 0.5) * 1000:>8.1f} {pct(live, 0.99) * 1000:>8.1f} {cpu:>7.0%}"
            )
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"app CPU: share of one core used by the app; load average after: {load}")
    finally:
        for proc in reversed(procs):  # the app first: its last requests still reach the upstream
            proc.terminate()
            proc.wait(timeout=10)
        if not args.project:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
