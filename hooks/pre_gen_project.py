"""Validate the answers before anything is generated.

Cookiecutter renders this file and runs it inside the new project folder; a
non-zero exit makes cookiecutter delete that folder, so bad input leaves
nothing behind. Jinja appears only inside the string literal below, so the
file imports as plain Python and `validate()` is unit-tested directly.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Mapping
from typing import Any

CONTEXT = r"""{{ cookiecutter | tojson }}"""

SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

# Import names the generated project depends on (or will, with a module on):
# a package with one of these names would shadow it.
DEPENDENCY_NAMES = frozenset(
    """
    fastapi starlette pydantic pydantic_settings pydantic_core sqlalchemy alembic
    aiosqlite asyncpg redis limits structlog uvicorn uvloop httptools httpx anyio
    h11 click typer jinja2 authlib joserfc jwt pwdlib argon2 aiosmtplib aiosmtpd
    email_validator multipart stripe openai aiohttp sqladmin itsdangerous wtforms
    orjson pytest mypy ruff playwright alembic_utils greenlet yaml dotenv
    tests test src migrations app main core
    """.split()
)

CHOICES = {
    "python_version": ("3.12", "3.13", "3.11"),
    "database": ("postgresql", "sqlite"),
    "ci": ("github", "gitlab", "none"),
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary"),
}

# Options that only make sense with another one: option -> the option it needs.
REQUIRES: dict[str, str] = {"use_payments": "use_auth", "use_admin": "use_auth"}


def is_on(value: Any) -> bool:
    """Cookiecutter booleans arrive as bool, or as text when given on the command line."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "on"}
    return bool(value)


def validate(answers: Mapping[str, Any]) -> list[str]:
    """Return one message per bad answer (empty when all is well)."""
    errors: list[str] = []
    name = str(answers.get("project_name", ""))
    if not name.strip() or any(c in name for c in '"\\') or not name.isprintable():
        errors.append(
            f"project_name {name!r} is not allowed: use printable text without quotes or "
            "backslashes (it is written into Python and TOML strings)."
        )
    slug = str(answers.get("project_slug", ""))
    if not SLUG.match(slug):
        errors.append(
            f"project_slug {slug!r} is not allowed: use lowercase letters, digits and "
            "single hyphens, starting with a letter (for example 'my-saas')."
        )
    package = str(answers.get("package_name", ""))
    if not PACKAGE.match(package) or not package.isidentifier() or keyword.iskeyword(package):
        errors.append(
            f"package_name {package!r} is not allowed: use a Python identifier of lowercase "
            "letters, digits and underscores, starting with a letter, that is not a keyword."
        )
    elif package in DEPENDENCY_NAMES or package in sys.stdlib_module_names:
        errors.append(
            f"package_name {package!r} is not allowed: it would shadow the standard library "
            "or a dependency of the project; choose a more specific name (for example "
            f"'{package}_app')."
        )
    email = str(answers.get("author_email", ""))
    if not EMAIL.match(email):
        errors.append(
            f"author_email {email!r} is not an email address: use the form name@example.com."
        )
    domain = str(answers.get("domain_name", "")).lower()
    if not DOMAIN.match(domain):
        errors.append(
            f"domain_name {domain!r} is not a domain name: use the form api.example.com "
            "(no scheme, no path)."
        )
    for question, allowed in CHOICES.items():
        value = str(answers.get(question, ""))
        if value not in allowed:
            errors.append(
                f"{question} {value!r} is not allowed: choose one of {', '.join(allowed)}."
            )
    for option, needed in REQUIRES.items():
        if is_on(answers.get(option)) and not is_on(answers.get(needed)):
            errors.append(f"{option} needs {needed}: answer {needed}=yes, or {option}=no.")
    return errors


def main() -> int:
    errors = validate(json.loads(CONTEXT))
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
