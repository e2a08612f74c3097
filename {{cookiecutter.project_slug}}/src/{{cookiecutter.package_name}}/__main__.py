"""Command line: `python -m {{ cookiecutter.package_name }} serve`."""

from __future__ import annotations

import argparse

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.package_name }}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    # Unset: uvicorn reads WEB_CONCURRENCY (1 without it), as the production check does.
    serve.add_argument("--workers", type=int, default=None)
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


if __name__ == "__main__":
    main()
