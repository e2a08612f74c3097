"""Make one uv.lock per supported combination of modules, from pins.toml.

The combinations come from the post-generation hook's ``OPTIONS`` table
(every option besides "core" that brings requirements is a module) and the
pre-generation hook's ``REQUIRES`` (a module that needs another). For each
one this script renders the project's pyproject.toml with a fixed placeholder
name, pins it with the hook's own ``pin_pyproject`` and runs ``uv lock``; the
lock lands in ``{{cookiecutter.project_slug}}/.template/locks/<key>.lock``.
The hook keeps the matching one as the project's ``uv.lock`` (renamed to the
project's slug), so generation needs no network.

Adding a module (a row in OPTIONS, pins in pins.toml) means running this
again, nothing else. Run it after ``scripts/update_pins.py`` too.

Usage:
  python scripts/lock.py            write each missing or stale lock (needs the index)
  python scripts/lock.py --refresh  re-resolve every lock (newest transitive versions)
  python scripts/lock.py --check    exit 1 when a lock is missing, extra, or does not
                                    satisfy its pinned pyproject (offline: uv lock --check)
  python scripts/lock.py --list     print the combination keys
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import jinja2

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "{{cookiecutter.project_slug}}"
LOCKS = TEMPLATE / ".template" / "locks"
PINS = TEMPLATE / ".template" / "pins.toml"


def load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_{name}", ROOT / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


POST_GEN = load_hook("post_gen_project")
PRE_GEN = load_hook("pre_gen_project")


def combinations() -> list[tuple[str, ...]]:
    """Every set of modules the pre-generation hook accepts, in table order."""
    names = [o.name for o in POST_GEN.modules()]
    out: list[tuple[str, ...]] = []
    for size in range(len(names) + 1):
        for combo in itertools.combinations(names, size):
            chosen = set(combo)
            if all(needed in chosen for opt, needed in PRE_GEN.REQUIRES.items() if opt in chosen):
                out.append(combo)
    return out


def defaults() -> dict[str, object]:
    data = json.loads((ROOT / "cookiecutter.json").read_text(encoding="utf-8"))
    return {k: (v[0] if isinstance(v, list) else v) for k, v in data.items() if k[0] != "_"}


def pyproject_for(combo: tuple[str, ...]) -> str:
    """The project's pyproject.toml as the hook pins it, named with the placeholder."""
    context = defaults()
    context.update(
        project_slug=POST_GEN.LOCK_PLACEHOLDER,
        package_name=POST_GEN.LOCK_PLACEHOLDER.replace("-", "_"),
        **{name: True for name in combo},
    )
    text = (TEMPLATE / "pyproject.toml").read_text(encoding="utf-8")
    rendered = jinja2.Template(text, keep_trailing_newline=True).render(cookiecutter=context)
    options = [o for o in POST_GEN.OPTIONS if o.name == "core" or o.name in combo]
    return POST_GEN.pin_pyproject(rendered, options, POST_GEN.read_pins(PINS))


def uv() -> str:
    here = Path(sys.executable).parent / "uv"
    found = str(here) if here.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("lock.py: uv not found (make install puts it in .venv)")
    return found


def run_uv_lock(combo: tuple[str, ...], existing: str | None, *extra: str) -> tuple[int, str, str]:
    """`uv lock <extra>` on the placeholder project; (exit code, stderr, the lock after)."""
    with tempfile.TemporaryDirectory(prefix="lock-") as tmp:
        project = Path(tmp)
        (project / "pyproject.toml").write_text(pyproject_for(combo), encoding="utf-8")
        (project / "README.md").write_text("placeholder\n", encoding="utf-8")
        if existing is not None:
            (project / "uv.lock").write_text(existing, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
        env["UV_PYTHON_DOWNLOADS"] = "never"
        command = [uv(), "lock", "--quiet", "--project", str(project), *extra]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        lock_file = project / "uv.lock"
        after = lock_file.read_text(encoding="utf-8") if lock_file.exists() else ""
        return done.returncode, done.stderr, after


def lock(combo: tuple[str, ...]) -> str:
    """A fresh uv.lock text for one combination (needs the package index)."""
    code, stderr, text = run_uv_lock(combo, None)
    if code != 0:
        raise SystemExit(f"lock.py: uv lock failed for {combo}:\n{stderr}")
    return text


def is_current(combo: tuple[str, ...], text: str) -> tuple[bool, str]:
    """Does this lock satisfy the combination's pinned pyproject? Offline, no re-resolving."""
    code, stderr, _ = run_uv_lock(combo, text, "--check", "--offline")
    return code == 0, stderr.strip()


def path_for(combo: tuple[str, ...]) -> Path:
    return LOCKS / f"{POST_GEN.lock_key(combo)}.lock"


def main(argv: list[str]) -> int:
    combos = combinations()
    if "--list" in argv:
        for combo in combos:
            print(POST_GEN.lock_key(combo))
        return 0
    wanted = {path_for(c) for c in combos}
    if "--check" in argv:
        problems = [f"extra lock {p.name}" for p in sorted(LOCKS.glob("*.lock")) if p not in wanted]
        for combo in combos:
            path = path_for(combo)
            if not path.exists():
                problems.append(f"missing lock {path.name}")
            else:
                ok, why = is_current(combo, path.read_text(encoding="utf-8"))
                if not ok:
                    problems.append(f"stale lock {path.name} ({why}): run python scripts/lock.py")
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    LOCKS.mkdir(parents=True, exist_ok=True)
    for path in LOCKS.glob("*.lock"):
        if path not in wanted:
            path.unlink()
            print(f"removed {path.name}")
    for combo in combos:
        path = path_for(combo)
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old is not None and "--refresh" not in argv and is_current(combo, old)[0]:
            print(f"current {path.relative_to(ROOT)}")
            continue
        text = lock(combo)
        path.write_text(text, encoding="utf-8")
        print(f"{'unchanged' if old == text else 'wrote'} {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
