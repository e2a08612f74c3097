"""Refresh pins.toml to the newest versions on the package index that work together.

Resolves every name in ``{{cookiecutter.project_slug}}/.template/pins.toml``
together (with the extras the post-generation hook asks for) with
``uv pip compile --universal``: the newest versions that install together on
every Python the projects support. Rewrites the pins in place (comments and
order stay), prints each change, and carries the uv and pre-commit-hooks
versions into the files that name them outside pins.toml (CI files, the
Dockerfile, the pre-commit config, this repository's Makefile).

Then: ``python scripts/lock.py`` (new locks) and ``make test`` (prove the set).

Usage: python scripts/update_pins.py [--dry-run]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lock import PINS, ROOT, TEMPLATE, uv
from pins import canonical, hook_extras

LOWEST_PYTHON = "3.11"

# Versions written outside pins.toml: (file, pattern whose group 1 is the
# version) for each pin. A template test checks they agree with pins.toml.
MENTIONS: dict[str, list[tuple[Path, str]]] = {
    "uv": [
        (TEMPLATE / ".github" / "workflows" / "ci.yml", r'UV_VERSION: "([^"]+)"'),
        (TEMPLATE / ".gitlab-ci.yml", r'UV_VERSION: "([^"]+)"'),
        (TEMPLATE / "Dockerfile", r"ghcr\.io/astral-sh/uv:([0-9][^ ]*) "),
        (ROOT / "Makefile", r"UV_VERSION := (\S+)"),
    ],
    "pre-commit-hooks": [
        (TEMPLATE / ".pre-commit-config.yaml", r'"pre-commit-hooks==([^"]+)"'),
    ],
}

_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)\s*(;.*)?$")


def current() -> dict[str, str]:
    return dict(tomllib.loads(PINS.read_text(encoding="utf-8"))["pins"])


def newest(names: list[str]) -> dict[str, str]:
    """The versions `uv pip compile` picks for these names, resolved together."""
    extras = hook_extras()
    lines = []
    for name in names:
        wanted = sorted(extras.get(canonical(name), set()))
        lines.append(f"{name}[{','.join(wanted)}]" if wanted else name)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        done = subprocess.run(
            [
                uv(),
                "pip",
                "compile",
                "--quiet",
                "--universal",
                "--python-version",
                LOWEST_PYTHON,
                "--no-header",
                "--no-annotate",
                str(source),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"update_pins.py: uv pip compile failed:\n{done.stderr}")
    found: dict[str, set[str]] = {}
    for line in done.stdout.splitlines():
        match = _LINE.match(line.strip())
        if match:
            found.setdefault(canonical(match.group(1)), set()).add(match.group(2))
    out: dict[str, str] = {}
    for name in names:
        versions = found.get(canonical(name), set())
        if len(versions) != 1:
            raise SystemExit(f"update_pins.py: {name}: expected one version, got {versions}")
        out[name] = versions.pop()
    return out


def rewrite_pins(text: str, changes: dict[str, str]) -> str:
    for name, version in changes.items():
        text = re.sub(
            rf'^({re.escape(name)}\s*=\s*)"[^"]*"', rf'\g<1>"{version}"', text, flags=re.MULTILINE
        )
    return text


def rewrite_mentions(pins: dict[str, str], dry_run: bool) -> list[str]:
    changed: list[str] = []
    for name, places in MENTIONS.items():
        version = pins.get(name)
        if version is None:
            continue
        for path, pattern in places:
            text = path.read_text(encoding="utf-8")
            new = re.sub(pattern, lambda m, v=version: m.group(0).replace(m.group(1), v), text)
            if new != text:
                changed.append(f"{path.relative_to(ROOT)}: {name} {version}")
                if not dry_run:
                    path.write_text(new, encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    dry_run = "--dry-run" in argv
    pins = current()
    latest = newest(list(pins))
    changes = {n: v for n, v in latest.items() if v != pins[n]}
    for name, version in changes.items():
        print(f"{name}: {pins[name]} -> {version}")
    if not changes:
        print("pins.toml: every pin is the newest version")
    if not dry_run and changes:
        PINS.write_text(rewrite_pins(PINS.read_text(encoding="utf-8"), changes), encoding="utf-8")
    for line in rewrite_mentions({**pins, **changes}, dry_run):
        print(line)
    if changes and not dry_run:
        print("next: python scripts/lock.py && make test")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
