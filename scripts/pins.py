"""Print the requirement lines for the template's shared test virtualenv.

The union of the template's own tool pins (``[dependency-groups] dev`` in the
root pyproject.toml) and every pin in the generated project's single source of
truth, ``{{cookiecutter.project_slug}}/.template/pins.toml``. Where both name
the same distribution, pins.toml wins: the generated projects' checks must run
with exactly the versions the projects pin.

Extras (``sqlalchemy[asyncio]``, ``uvicorn[standard]``) are not in pins.toml:
they come from the requirement table of ``hooks/post_gen_project.py`` (its
``OPTIONS``), which imports as plain Python; every extra any option asks for
is installed.

Usage: python scripts/pins.py [--template-only]
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "{{cookiecutter.project_slug}}" / ".template" / "pins.toml"
POST_GEN_HOOK = ROOT / "hooks" / "post_gen_project.py"
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


def hook_extras() -> dict[str, set[str]]:
    """canonical name -> extras, from every requirement in the post-gen hook's table."""
    if not POST_GEN_HOOK.is_file():
        return {}
    spec = importlib.util.spec_from_file_location("_post_gen_project", POST_GEN_HOOK)
    if spec is None or spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken hook fails its own tests
        print(f"pins.py: cannot import {POST_GEN_HOOK.name} for extras: {exc}", file=sys.stderr)
        return {}
    finally:
        sys.modules.pop(spec.name, None)
    out: dict[str, set[str]] = {}
    for option in getattr(module, "OPTIONS", ()):
        for req in (*getattr(option, "requires", ()), *getattr(option, "dev_requires", ())):
            match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\[([^\]]*)\]", str(req))
            if match:
                extras = {e.strip() for e in match.group(2).split(",") if e.strip()}
                out.setdefault(canonical(match.group(1)), set()).update(extras)
    return out


def with_extras(name: str, extras: set[str]) -> str:
    base, _, given = name.partition("[")
    merged = set(extras) | {e.strip() for e in given.rstrip("]").split(",") if e.strip()}
    return f"{base}[{','.join(sorted(merged))}]" if merged else base


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
        for key, extras in hook_extras().items():
            if key in merged:
                name, version = merged[key]
                merged[key] = (with_extras(name, extras), version)
    for _, (name, version) in sorted(merged.items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
