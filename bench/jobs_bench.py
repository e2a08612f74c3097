"""The project side of the jobs benchmark: a benchmark-only job, its worker, the enqueuer.

    python bench/jobs_bench.py worker <package>                  # `<package> worker` + the job
    python bench/jobs_bench.py drive <package> COUNT SECONDS SHARE TASKS

Run with PYTHONPATH=<project>/src and the project's settings in the environment
(DATABASE_URL, REDIS_URL, JOBS_QUEUE, ...); bench/run.py does (scenario "jobs"). The job
(`bench.write`) does one small database write (a row in `bench_job_runs`, committed with
the job's done mark). It is added the way the project's tests add theirs:
`create_app(settings, modules=(*MODULES, Module("bench", jobs=(...))))`; nothing of it is
in the template's shipped code. `worker` is `python -m <package> worker` with that app.

`drive` creates the app (with REDIS_URL the app only publishes to Redis, as a web process
does), enqueues each job in its own transaction from TASKS concurrent tasks (as that many
requests would) and records the wall-clock time of each commit. A warm-up of 50 jobs,
then a backlog of COUNT jobs (enqueued held back, then made due at once: the workers'
own rate, measured from the first done mark to the last), then a burst of COUNT jobs
enqueued as fast as it can (enqueueing and running together), then SHARE of the burst's
rate, paced, for SECONDS. Latency is from the enqueue's commit to the job's
`finished_at` (the done mark, set just before the worker's commit). Prints one JSON line.

BENCH_PROFILE=/tmp/prof in the environment: each worker writes a cProfile of its run to
/tmp/prof.<pid> (a look at where a worker's time goes; it slows the worker down).
"""

# No `from __future__ import annotations`: the job decorator reads the handler's type hints,
# and the argument model is made inside a function.

import asyncio
import importlib
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, event, text

TABLE = "bench_job_runs"
JOB_TABLE: list[Any] = []  # the project's jobs table, once its package is imported


class Ping(BaseModel):
    n: int


def bench_module(package: str) -> tuple[Any, Any]:
    """(the Module to add, the job)."""
    jobs = importlib.import_module(f"{package}.core.jobs")
    JOB_TABLE[:] = [jobs.JobRecord.__table__]
    plugin = importlib.import_module(f"{package}.core.plugin")

    async def write(ctx: Any, args: Ping) -> None:
        await ctx.session.execute(
            text(f"INSERT INTO {TABLE} (job_id, n, pid) VALUES (:job_id, :n, :pid)"),
            {"job_id": ctx.job_id, "n": args.n, "pid": os.getpid()},
        )

    bench_job = jobs.job("bench.write", max_attempts=5, timeout=30.0)(write)
    return plugin.Module("bench", jobs=(bench_job,)), bench_job


def make_app(package: str) -> tuple[Any, Any]:
    main = importlib.import_module(f"{package}.main")
    modules = importlib.import_module(f"{package}.modules")
    config = importlib.import_module(f"{package}.core.config")
    module, bench_job = bench_module(package)
    app = main.create_app(config.get_settings(), modules=(*modules.MODULES, module))
    return app, bench_job


async def prepare(app: Any) -> None:
    async with app.state.database.engine.begin() as connection:
        await connection.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {TABLE} "
                "(job_id VARCHAR(255) PRIMARY KEY, n INTEGER, pid INTEGER)"
            )
        )


async def worker(package: str) -> None:
    serve = importlib.import_module(f"{package}.core.jobs.worker").serve
    app, _ = make_app(package)
    profile = os.environ.get("BENCH_PROFILE")  # a file: cProfile of the worker, for a look
    if not profile:
        await serve(app)
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await serve(app)
    finally:
        profiler.disable()
        profiler.dump_stats(f"{profile}.{os.getpid()}")


async def drive(
    package: str, count: int, seconds: float, share: float, tasks: int
) -> dict[str, Any]:
    """A warm-up; a backlog and a burst of `count` jobs; `share` of the burst's rate, paced."""
    jobs = importlib.import_module(f"{package}.core.jobs")
    app, bench_job = make_app(package)
    statements: Counter[str] = Counter()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements[kind(statement)] += 1

    event.listen(app.state.database.engine.sync_engine, "before_cursor_execute", record)

    async def outcome(
        committed: dict[str, float], started: float, enqueued: float, before: Counter[str]
    ) -> dict[str, Any]:
        result = await measured(app, committed, started, enqueued)
        spent = statements - before
        result["app_statements"] = {k: spent[k] / max(1, len(committed)) for k in KINDS}
        return result

    async with app.router.lifespan_context(app):
        await prepare(app)
        sessionmaker = app.state.database.sessionmaker

        async def one(n: int, committed: dict[str, float]) -> None:
            async with sessionmaker() as session:
                job_id = await jobs.enqueue(session, bench_job, Ping(n=n))
                await session.commit()
            committed[job_id] = time.time()

        async def burst(size: int) -> dict[str, Any]:
            committed: dict[str, float] = {}
            numbers = iter(range(size))

            async def enqueuer() -> None:
                for n in numbers:
                    await one(n, committed)

            before, started = statements.copy(), time.time()
            await asyncio.gather(*(enqueuer() for _ in range(tasks)))
            return await outcome(committed, started, time.time(), before)

        async def paced(rate: float) -> dict[str, Any]:
            committed: dict[str, float] = {}
            pending: set[asyncio.Task[None]] = set()
            before, started = statements.copy(), time.time()
            for n in range(int(rate * seconds)):
                delay = started + n / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(one(n, committed))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            result = await outcome(committed, started, time.time(), before)
            result["rate"] = rate
            return result

        async def backlog(size: int) -> dict[str, Any]:
            """`size` jobs held back while they are enqueued, then all due at once."""
            committed: dict[str, float] = {}
            numbers = iter(range(size))
            before = statements.copy()

            async def enqueuer() -> None:
                for n in numbers:
                    async with sessionmaker() as session:
                        job_id = await jobs.enqueue(session, bench_job, Ping(n=n), delay=3600)
                        await session.commit()
                    committed[job_id] = 0.0

            await asyncio.gather(*(enqueuer() for _ in range(tasks)))
            table = jobs.JobRecord.__table__
            async with app.state.database.engine.begin() as connection:
                due = datetime.now(UTC)
                await connection.execute(
                    table.update().where(table.c.id.in_(list(committed))).values(run_at=due)
                )
            released = time.time()
            for job_id in committed:
                committed[job_id] = released
            jobs.get_jobs(app).wake()
            result = await outcome(committed, released, released, before)
            finished = sorted(result.pop("finished"))
            # The workers' own rate on a queue that is full (the relays look every
            # JOBS_POLL_SECONDS, so the first done mark is where draining starts).
            result["jobs_per_s"] = (len(finished) - 1) / (finished[-1] - finished[0])
            return result

        await burst(min(50, count))  # the workers are up and warm
        drained = await backlog(count)
        flood = await burst(count)
        steady = await paced(max(1.0, flood["jobs_per_s"] * share))
    for phase in (flood, steady):
        phase.pop("finished")
    return {"backlog": drained, "burst": flood, "paced": steady}


KINDS = ("enqueue", "relay", "sweep")


def kind(statement: str) -> str:
    """What a statement of the app process is for (the runtime's, by their SQL)."""
    if statement.startswith("INSERT INTO jobs"):
        return "enqueue"
    if "jobs.queued_at <" in statement or "jobs.started_at <" in statement:
        return "sweep"  # JobRuntime.sweep: queued too long, running past its timeout
    if statement.startswith("UPDATE jobs SET status") and "WHERE jobs.id IN (SELECT" in statement:
        return "relay"  # JobRuntime._publish_due (and claim_due)
    if statement.startswith("SELECT jobs.id") and "jobs.run_at <=" in statement:
        return "relay"  # JobRuntime._any_due: the read before the claiming write
    return "other"  # this script's own look-ups, the job's write


async def measured(
    app: Any, committed: dict[str, float], started: float, enqueued: float
) -> dict[str, Any]:
    """Wait for the jobs, then: rate, latency from commit to done mark, retries, who ran them."""
    ids = list(committed)
    rows = await wait_done(app, ids, timeout=60.0)
    latencies = sorted((rows[i][0] - committed[i]) * 1000 for i in ids if i in rows)
    last = max((rows[i][0] for i in rows), default=enqueued)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        "jobs": len(ids),
        "enqueue_s": enqueued - started,
        "jobs_per_s": len(rows) / (last - started) if last > started else 0.0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "not_done": sum(1 for i in ids if rows.get(i, (0, 0, ""))[2] != "done"),
        "retried": sum(1 for i in rows if rows[i][1] > 1),
        "writes": await count_writes(app, ids),
        "by_process": await runs_by_process(app, ids),
        "finished": [rows[i][0] for i in rows],
    }


async def wait_done(app: Any, ids: list[str], timeout: float) -> dict[str, tuple[Any, ...]]:
    """{id: (finished_at as a timestamp, attempts, status)} once every job is done or dead."""
    table = JOB_TABLE[0]
    deadline = time.monotonic() + timeout
    found: dict[str, tuple[Any, ...]] = {}
    while True:
        remaining = [i for i in ids if i not in found]
        async with app.state.database.engine.connect() as connection:
            for start in range(0, len(remaining), 500):
                chunk = remaining[start : start + 500]
                result = await connection.execute(
                    table.select()
                    .with_only_columns(
                        table.c.id, table.c.finished_at, table.c.attempts, table.c.status
                    )
                    .where(table.c.id.in_(chunk), table.c.status.in_(["done", "dead"]))
                )
                for row in result:
                    finished = row.finished_at
                    if finished.tzinfo is None:  # SQLite gives back naive UTC
                        finished = finished.replace(tzinfo=UTC)
                    found[row.id] = (finished.timestamp(), row.attempts, row.status)
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def count_writes(app: Any, ids: list[str]) -> int:
    """Rows the job wrote for these ids (one each: its write commits with its done mark)."""
    query = text(f"SELECT count(*) FROM {TABLE} WHERE job_id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    total = 0
    async with app.state.database.engine.connect() as connection:
        for start in range(0, len(ids), 500):
            result = await connection.execute(query, {"ids": ids[start : start + 500]})
            total += int(result.scalar_one())
    return total


async def runs_by_process(app: Any, ids: list[str]) -> list[int]:
    """How many of these jobs each process ran (by its pid), largest first."""
    query = text(f"SELECT pid, count(*) FROM {TABLE} WHERE job_id IN :ids GROUP BY pid").bindparams(
        bindparam("ids", expanding=True)
    )
    counts: dict[int, int] = {}
    async with app.state.database.engine.connect() as connection:
        for start in range(0, len(ids), 500):
            for pid, n in await connection.execute(query, {"ids": ids[start : start + 500]}):
                counts[pid] = counts.get(pid, 0) + n
    return sorted(counts.values(), reverse=True)


def main(argv: list[str]) -> int:
    command, package, *rest = argv
    if command == "worker":
        asyncio.run(worker(package))
    elif command == "drive":
        count, seconds, share, tasks = rest
        result = asyncio.run(drive(package, int(count), float(seconds), float(share), int(tasks)))
        print("BENCH_JOBS " + json.dumps(result), flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
