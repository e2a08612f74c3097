"""`python -m {{ cookiecutter.package_name }} jobs ...`: look at jobs, replay or delete dead ones, run due ones.

jobs list [--status dead|pending|queued|running|done|all] [--limit N]
jobs replay ID [ID ...]    # dead jobs get fresh attempts and run as soon as possible
jobs delete ID [ID ...]    # dead jobs deleted for good
jobs run                   # run every due job here and now (the app does this by itself)

`replay` and `delete` of an id that is not a dead job exit with status 1 and print one line
per id to stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core.config import Settings, get_settings
from {{ cookiecutter.package_name }}.core.db import Database

from . import dead as dead_jobs
from .lifespan import get_jobs
from .models import JobStatus

STATUSES = [s.value for s in JobStatus] + ["all"]


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = sub.add_parser("jobs", help="list, replay or delete background jobs")
    action = jobs.add_subparsers(dest="action", required=True)
    listing = action.add_parser("list", help="the newest jobs, newest first (dead by default)")
    listing.add_argument("--status", choices=STATUSES, default=JobStatus.DEAD.value)
    listing.add_argument("--limit", type=positive, default=50)
    for name, what in (("replay", "run dead jobs again"), ("delete", "delete dead jobs")):
        command = action.add_parser(name, help=what)
        command.add_argument("ids", nargs="+", metavar="ID")
    action.add_parser("run", help="run every due job in this process, then stop")


async def run(
    args: argparse.Namespace, database: Database, app: Callable[[Settings], FastAPI]
) -> str:
    """One `jobs` command; returns what to print."""
    if args.action == "run":
        # Here and now: in this process (not handed to Redis), without adding scheduled runs.
        settings = get_settings().model_copy(
            update={"jobs_backend": "inprocess", "jobs_scheduler": False}
        )
        application = app(settings)
        async with application.router.lifespan_context(application):
            runtime = get_jobs(application)
            # Only drain() runs jobs in this command, so that each is counted: the loops the
            # app started (its relay would take some of them) stop before they do anything.
            await runtime.stop()
            ran = await runtime.drain(within=3600)
        return f"ran {ran} job(s)"
    async with database.engine.begin() as connection:
        if args.action == "list":
            status = None if args.status == "all" else JobStatus(args.status)
            rows = await dead_jobs.list_jobs(connection, status, args.limit)
            lines = [
                f"{r.id}\t{r.name}\t{r.status}\tattempts={r.attempts}/{r.max_attempts}"
                f"\t{(r.last_error or '').splitlines()[0] if r.last_error else ''}"
                for r in rows
            ]
            return "\n".join(lines) if lines else f"no {args.status} jobs"
        change: Callable[..., Awaitable[list[str]]] = (
            dead_jobs.replay if args.action == "replay" else dead_jobs.forget
        )
        done = await change(connection, args.ids)
    missing = [i for i in args.ids if i not in done]
    verb = "replayed" if args.action == "replay" else "deleted"
    lines = [f"{i}: {verb}" for i in done] + [f"{i}: no such dead job" for i in missing]
    if missing:
        raise SystemExit("\n".join(lines))
    return "\n".join(lines)
