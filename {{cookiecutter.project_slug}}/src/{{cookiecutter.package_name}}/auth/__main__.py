"""`python -m {{ cookiecutter.package_name }}.auth create-superuser --email admin@example.com`.

The password comes from a prompt (typed twice), or from standard input with
`--password-stdin` (for scripts: `printf %s "$PASSWORD" | python -m ... --password-stdin`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from pydantic import TypeAdapter, ValidationError

from {{ cookiecutter.package_name }}.auth import service
from {{ cookiecutter.package_name }}.auth.schemas import Password, UserCreate
from {{ cookiecutter.package_name }}.core.config import Settings, get_settings
from {{ cookiecutter.package_name }}.core.db import Database


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise SystemExit("error: the passwords differ")
    return first


async def create_superuser(settings: Settings, email: str, password: str) -> str:
    database = Database.from_settings(settings)
    try:
        async with database.sessionmaker() as session, session.begin():
            user, created = await service.create_superuser(session, email, password)
            return f"{'Created' if created else 'Promoted'} superuser {user.email} ({user.id})"
    finally:
        await database.engine.dispose()


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m {{ cookiecutter.package_name }}.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-superuser", help="create a superuser, or promote a user")
    create.add_argument("--email", required=True)
    create.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    args = parser.parse_args(argv)
    password = read_password(args.password_stdin)
    try:
        checked = UserCreate(email=args.email, password=password)
        TypeAdapter(Password).validate_python(password)
    except ValidationError as exc:
        messages = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"error: {messages}") from None
    print(asyncio.run(create_superuser(settings or get_settings(), checked.email, password)))


if __name__ == "__main__":
    main()
