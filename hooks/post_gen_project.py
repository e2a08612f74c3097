"""Finish the generated project: drop unselected options, pin, write secrets.

Cookiecutter renders this file and runs it inside the new project folder; a
non-zero exit makes cookiecutter delete the half-made project. It needs no
network. Jinja appears only inside the string literal below, so the file
imports as plain Python and each step is unit-tested directly.

Adding a module means adding its folders to the template and one `Option` row
to `OPTIONS` below (its paths, requirements and migration).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTEXT = r"""{{ cookiecutter | tojson }}"""

PINS_FILE = ".template/pins.toml"


@dataclass(frozen=True)
class Option:
    """What one yes/no answer brings into the project."""

    name: str  # the cookiecutter.json question; "core" is always on
    paths: tuple[str, ...] = ()  # removed when the option is off; "{package}" is expanded
    requires: tuple[str, ...] = ()  # runtime requirements, "name" or "name[extra]"
    dev_requires: tuple[str, ...] = ()  # dev-group requirements
    migration: str | None = None  # its Alembic revision file; chained in table order


OPTIONS: tuple[Option, ...] = (
    Option(
        "core",
        requires=(
            "fastapi",
            "uvicorn[standard]",
            "sqlalchemy[asyncio]",
            "aiosqlite",
            "asyncpg",
            "alembic",
            "pydantic",
            "pydantic-settings",
            "redis",
            "structlog",
            "limits",
        ),
        dev_requires=(
            "pytest",
            "pytest-asyncio",
            "httpx",
            "asgi-lifespan",
            "ruff",
            "mypy",
            "pre-commit",
            "uv",
        ),
        migration="migrations/versions/0001_baseline.py",
    ),
    Option("use_docker", paths=("Dockerfile", ".dockerignore", "compose.yaml")),
    Option(
        "use_ai",
        paths=("src/{package}/ai", "tests/ai"),
        requires=("openai[aiohttp]", "aiohttp", "httpx2"),
        migration="migrations/versions/0004_ai.py",
    ),
)

# CI provider -> its files; the others' files are removed.
CI_PATHS: dict[str, tuple[str, ...]] = {
    "github": (".github",),
    "gitlab": (".gitlab-ci.yml",),
}


class HookError(Exception):
    """A failure with a message meant for the person generating the project."""


def is_on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "on"}
    return bool(value)


def selected(answers: Mapping[str, Any]) -> list[Option]:
    return [o for o in OPTIONS if o.name == "core" or is_on(answers.get(o.name))]


def remove(root: Path, paths: Iterable[str], package: str) -> None:
    for rel in paths:
        path = root / rel.format(package=package)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_unselected(root: Path, answers: Mapping[str, Any]) -> None:
    package = str(answers["package_name"])
    keep = {o.name for o in selected(answers)}
    for option in OPTIONS:
        if option.name not in keep:
            remove(root, option.paths, package)
            if option.migration:
                remove(root, [option.migration], package)
    ci = str(answers.get("ci", "none"))
    for provider, paths in CI_PATHS.items():
        if provider != ci:
            remove(root, paths, package)


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower()


def pinned(requirements: Iterable[str], pins: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for req in requirements:
        name = requirement_name(req)
        if name not in pins:
            raise HookError(f"no pinned version for {name!r} in {PINS_FILE}")
        line = f"{req}=={pins[name]}"
        if line not in out:
            out.append(line)
    return sorted(out, key=str.lower)


def toml_list(items: list[str]) -> str:
    return "[\n" + "".join(f'    "{item}",\n' for item in items) + "]"


def write_pins(root: Path, answers: Mapping[str, Any]) -> None:
    """Fill `dependencies = []` and the `dev = []` group of pyproject.toml with pins."""
    pins_path = root / PINS_FILE
    try:
        pins = {k.lower(): v for k, v in tomllib.loads(pins_path.read_text())["pins"].items()}
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise HookError(f"cannot read the pinned versions in {PINS_FILE}: {exc}") from exc
    options = selected(answers)
    runtime = pinned((r for o in options for r in o.requires), pins)
    dev = pinned((r for o in options for r in o.dev_requires), pins)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    for marker, items in (("dependencies = []", runtime), ("dev = []", dev)):
        pattern = re.compile(rf"^{re.escape(marker)}$", re.MULTILINE)
        if len(pattern.findall(text)) != 1:
            raise HookError(f"pyproject.toml has no single {marker!r} line to pin into")
        text = pattern.sub(lambda _m, i=items, k=marker: k.replace("[]", toml_list(i)), text)
    pyproject.write_text(text)
    shutil.rmtree(root / ".template")


REVISION = re.compile(r'^revision(?:: str)? = "([^"]+)"$', re.MULTILINE)
DOWN_REVISION = re.compile(r"^down_revision(?:: .+?)? = .+$", re.MULTILINE)


def chain_migrations(root: Path, answers: Mapping[str, Any]) -> None:
    """Link the kept options' migrations in table order so there is exactly one head."""
    previous: str | None = None
    for option in selected(answers):
        if not option.migration:
            continue
        path = root / option.migration
        text = path.read_text()
        match = REVISION.search(text)
        if not match or not DOWN_REVISION.search(text):
            raise HookError(f"{option.migration} has no revision/down_revision line")
        down = "None" if previous is None else f'"{previous}"'
        text = DOWN_REVISION.sub(f"down_revision: str | None = {down}", text, count=1)
        path.write_text(text)
        previous = match.group(1)


def write_env(root: Path) -> None:
    """Write .env (git-ignored) from .env.example with a fresh SECRET_KEY."""
    example = (root / ".env.example").read_text()
    key = secrets.token_urlsafe(48)
    text, count = re.subn(r"^SECRET_KEY=.*$", f"SECRET_KEY={key}", example, flags=re.MULTILINE)
    if count != 1:
        raise HookError(".env.example has no single SECRET_KEY= line")
    env = root / ".env"
    env.write_text(text)
    env.chmod(0o600)


def next_steps(answers: Mapping[str, Any]) -> str:
    return (
        f"\nCreated {answers['project_slug']}. Next:\n"
        f"  cd {answers['project_slug']}\n"
        "  make install   # .venv with the pinned dependencies\n"
        "  make dev       # migrations, then http://127.0.0.1:8000/docs on SQLite\n"
        "  make test\n"
        "Your SECRET_KEY is in .env (git-ignored); set real secrets in production.\n"
    )


def main(root: Path, answers: Mapping[str, Any]) -> None:
    remove_unselected(root, answers)
    write_pins(root, answers)
    chain_migrations(root, answers)
    write_env(root)


if __name__ == "__main__":
    context = json.loads(CONTEXT)
    try:
        main(Path.cwd(), context)
    except (HookError, OSError) as exc:
        print(f"ERROR: could not finish the project: {exc}", file=sys.stderr)
        sys.exit(1)
    print(next_steps(context))
