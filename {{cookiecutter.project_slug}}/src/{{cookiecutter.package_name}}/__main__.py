"""Command line: `python -m {{ cookiecutter.package_name }} serve | worker | jobs ...`."""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from fastapi import FastAPI

from .core.config import Settings, get_settings
from .core.db import Database
from .core.jobs import cli as jobs_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.package_name }}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    # Unset: uvicorn reads WEB_CONCURRENCY (1 without it), as the production check does.
    serve.add_argument("--workers", type=int, default=None)
    sub.add_parser("worker", help="run background jobs from Redis (needs REDIS_URL)")
    jobs_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        uvicorn.run(
            "{{ cookiecutter.package_name }}.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            # The app applies X-Forwarded-* itself, from FORWARDED_ALLOW_IPS (core/security.py).
            proxy_headers=False,
            access_log=False,
        )
    elif args.command == "worker":
        from .core.jobs.worker import serve as serve_worker
        from .main import app  # the app and its modules: only for this command

        asyncio.run(serve_worker(app))
    elif args.command == "jobs":
        print(asyncio.run(_jobs(args)))


async def _jobs(args: argparse.Namespace) -> str:
    database = Database.from_settings(get_settings())

    def app(settings: Settings) -> FastAPI:
        from .main import create_app

        return create_app(settings)

    try:
        return await jobs_cli.run(args, database, app)
    finally:
        await database.engine.dispose()


if __name__ == "__main__":
    main()
