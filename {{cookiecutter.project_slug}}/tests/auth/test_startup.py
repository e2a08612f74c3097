"""Authlib at the first social login, Jinja2 at the first email, joserfc's keys (and
cryptography) at the first token: none at start-up; no password is hashed then either."""

from __future__ import annotations

import os
import subprocess
import sys

import argon2
from alembic.config import Config

from {{ cookiecutter.package_name }}.auth import security
from tests.startup import SRC, imported_at_start


def test_starting_the_app_does_not_import_authlib(database_url: str, migrated: Config) -> None:
    google = {
        "GOOGLE_CLIENT_ID": "test.apps.googleusercontent.com",
        "GOOGLE_CLIENT_SECRET": "not-a-secret",
    }
    loaded = imported_at_start(database_url, google)
    assert "fastapi" in loaded  # the app did start
    # (httpx is there: the probe's own client imports it)
    assert loaded & {"authlib", "jinja2", "cryptography"} == set()


def test_no_password_is_hashed_at_import() -> None:
    """Argon2 costs about 0.15 s of CPU and 64 MiB a hash: not one before a request needs it."""
    script = """
import pwdlib

hashed = []
real = pwdlib.PasswordHash.hash


def counted(self, *args, **kwargs):
    hashed.append(1)
    return real(self, *args, **kwargs)


pwdlib.PasswordHash.hash = counted
import {{ cookiecutter.package_name }}.auth.security

print(len(hashed))
"""
    done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
        [sys.executable, "-c", script],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["0"]


async def test_an_unknown_email_costs_a_full_argon2_check() -> None:
    """The stand-in hash verified for unknown emails has the parameters of a real one, so
    verifying against it costs the same; no password matches it."""
    real = await security.hash_password("correct horse battery")
    assert argon2.extract_parameters(security._DUMMY_HASH) == argon2.extract_parameters(real)
    check = await security.verify_password("correct horse battery", None)
    assert check == security.PasswordCheck(ok=False, new_hash=None)
    assert not security._password_hash.verify("", security._DUMMY_HASH)
