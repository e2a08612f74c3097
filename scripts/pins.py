"""Print the requirement lines for the template's shared test virtualenv.

The union of the template's own tool pins (``[dependency-groups] dev`` in the
root pyproject.toml) and every pin in the generated project's single source of
truth, ``{{cookiecutter.project_slug}}/.template/pins.toml``. Where both name
the same distribution, pins.toml wins: the generated projects' checks must run
with exactly the versions the projects pin.

Usage: python scripts/pins.py [--template-only]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "{{cookiecutter.project_slug}}" / ".template" / "pins.toml"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def template_pins() -> dict[str, tuple[str, str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    out: dict[str, tuple[str, str]] = {}
    for line in data["dependency-groups"]["dev"]:
        match = _NAME.match(line)
        if match is None:
            raise SystemExit(f"pyproject.toml: dev dependency not pinned with ==: {line!r}")
        name, extras, version = match.groups()
        out[canonical(name)] = (name + (extras or ""), version)
    return out


def project_pins() -> dict[str, tuple[str, str]]:
    if not PINS.is_file():
        return {}
    data = tomllib.loads(PINS.read_text(encoding="utf-8"))
    out: dict[str, tuple[str, str]] = {}
    for name, version in data.get("pins", {}).items():
        if not isinstance(version, str) or not version.strip():
            raise SystemExit(f"{PINS}: [pins] {name} must be an exact version string")
        out[canonical(name.split("[")[0])] = (name, version.strip().removeprefix("=="))
    return out


def main(argv: list[str]) -> int:
    merged = template_pins()
    if "--template-only" not in argv:
        for key, (name, version) in project_pins().items():
            old = merged.get(key)
            if old is not None and old[1] != version:
                print(
                    f"pins.py: {name}: pins.toml {version} overrides template {old[1]}",
                    file=sys.stderr,
                )
            merged[key] = (name, version)
    for _, (name, version) in sorted(merged.items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
