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

# Matched with fullmatch: `$` alone would let a trailing newline through.
SLUG = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
PACKAGE = re.compile(r"[a-z][a-z0-9_]*")
HOST = r"([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+([a-z]+|xn--[a-z0-9-]*[a-z0-9])"
DOMAIN = re.compile(HOST, re.IGNORECASE)
# The WHATWG (HTML) definition of a valid email address, with a dot in the domain.
EMAIL = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@" + HOST, re.IGNORECASE)

# Free-text answers. Each lands in files of several types, and the template
# writes it escaped for each (tests/test_template_files.py holds every
# expression to this list):
#   Python strings (main.py's title and description, the package docstring):
#     ASCII only, `\`, `"` and every non-ASCII character escaped (python_escaped);
#   TOML strings (pyproject.toml): `\` and `"` escaped;
#   README.md and LICENSE: as given; .env.example and the Kubernetes manifests
#   (deploy/kubernetes/): domain_name, lowercased (a plain YAML scalar by its pattern).
# Each must be one line of printable text: a newline, tab or control character
# has no safe place in a one-line answer (TOML strings, email headers, Markdown
# headings), and spaces at either end would be stripped by the project's
# pre-commit hooks.
FREE_TEXT = ("project_name", "description", "author_name", "author_email", "domain_name")
# Cookiecutter renders answers given on the command line or in a config file,
# and those recorded in .cruft.json on every `cruft update`, as Jinja templates
# (full Python, not sandboxed). An answer that still holds template syntax
# after that would be evaluated again on the next `cruft update`. (Written in
# two halves: cookiecutter renders this file too.)
TEMPLATE_SYNTAX = tuple("{" + c for c in ("{", "%", "#"))
# Characters an answer may not hold, and why.
NOT_ALLOWED: dict[str, tuple[str, str]] = {
    # FastAPI puts the title into the /docs and /redoc pages without escaping it
    "project_name": ("<>", "it is the title of the HTML pages /docs and /redoc"),
    # ReDoc renders the HTML in the API description without sanitizing it
    "description": ("<>", "it is shown as HTML on the /redoc page"),
    # PEP 621: an email display name without commas; the build backend writes
    # `name <email>` into the package metadata unquoted
    "author_name": (
        '",;:<>@[]\\',
        "it is the display name of an email address in pyproject.toml's authors",
    ),
}
# The most characters an answer may take once written as a Python string (see
# python_escaped): its line in src/<package>/main.py is then exactly ruff's
# line-length, 100.
PYTHON_LINES = {"project_name": '        title="",', "description": '        description="",'}
PYTHON_BUDGET = {question: 100 - len(line) for question, line in PYTHON_LINES.items()}

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
REQUIRES: dict[str, str] = {
    "use_orgs": "use_auth",
    "use_payments": "use_auth",
    "use_admin": "use_auth",
}


def is_on(value: Any) -> bool:
    """Cookiecutter booleans arrive as bool, or as text when given on the command line."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "on"}
    return bool(value)


def python_escaped(text: str) -> str:
    r"""The text as the template writes it between double quotes in Python: ASCII only.

    The template's filter: `x.encode('unicode_escape').decode()`, then `"` replaced
    with `\x22` (ruff format would turn a string holding `\"` into a single-quoted
    one, and leaves `\x22` alone; ASCII keeps ruff's confusable-character rules quiet).
    """
    return text.encode("unicode_escape").decode("ascii").replace('"', "\\x22")


def host_ok(host: str) -> bool:
    """DNS limits: labels of at most 63 characters, 253 in all; a top-level domain of 2 or more."""
    labels = host.split(".")
    return (
        len(host) <= 253
        and all(len(label) <= 63 for label in labels)
        and 2 <= len(labels[-1]) <= 63
    )


def free_text_error(question: str, value: Any) -> str | None:
    """What is wrong with one free-text answer, or None."""
    if not isinstance(value, str):
        return f"{question} {value!r} is not text: give it as a string."
    if not value.strip():
        return f"{question} {value!r} is empty: give it a value."
    if not value.isprintable():
        return (
            f"{question} {value!r} is not allowed: use one line of printable text (no "
            "newline, tab, control or invisible formatting character, no space but the "
            "plain one)."
        )
    if value != value.strip():
        return f"{question} {value!r} is not allowed: remove the spaces at its start or end."
    if any(marker in value for marker in TEMPLATE_SYNTAX):
        return (
            f"{question} {value!r} is not allowed: it holds template syntax ("
            + ", ".join(TEMPLATE_SYNTAX)
            + "), which cookiecutter and cruft would evaluate as code; remove it."
        )
    chars, why = NOT_ALLOWED.get(question, ("", ""))
    if bad := sorted({c for c in value if c in chars}):
        return (
            f"{question} {value!r} is not allowed: remove {' '.join(bad)} ({why}; it "
            f"cannot hold any of {' '.join(chars)})."
        )
    budget = PYTHON_BUDGET.get(question)
    if budget is not None and len(python_escaped(value)) > budget:
        return (
            f"{question} {value!r} is too long: it takes {len(python_escaped(value))} "
            f"characters as a Python string in main.py, at most {budget} fit on the line "
            "(a non-ASCII character takes 4 to 10, a quote 4)."
        )
    return None


def validate(answers: Mapping[str, Any]) -> list[str]:
    """Return one message per bad answer (empty when all is well)."""
    errors: list[str] = []
    wrong: set[str] = set()  # free-text answers already refused
    for question in FREE_TEXT:
        error = free_text_error(question, answers.get(question, ""))
        if error:
            errors.append(error)
            wrong.add(question)
    slug = str(answers.get("project_slug", ""))
    if not SLUG.fullmatch(slug):
        errors.append(
            f"project_slug {slug!r} is not allowed: use lowercase letters, digits and "
            "single hyphens, starting with a letter (for example 'my-saas')."
        )
    package = str(answers.get("package_name", ""))
    if not PACKAGE.fullmatch(package) or not package.isidentifier() or keyword.iskeyword(package):
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
    email = answers.get("author_email", "")
    if "author_email" not in wrong and not (
        EMAIL.fullmatch(email) and host_ok(email.rpartition("@")[2])
    ):
        errors.append(
            f"author_email {email!r} is not an email address: use the form name@example.com "
            "(letters, digits and .!#$%&'*+/=?^_`|~- before the @)."
        )
    domain = answers.get("domain_name", "")
    if "domain_name" not in wrong and not (DOMAIN.fullmatch(domain) and host_ok(domain)):
        errors.append(
            f"domain_name {domain!r} is not a domain name: use the form api.example.com "
            "(no scheme, no path, no port; an internationalized name in its xn-- form)."
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
