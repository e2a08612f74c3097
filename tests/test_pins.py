"""Pins, locks, git and cruft: the promises that hold across every combination."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import bake

PINS = bake.TEMPLATE_DIR / ".template" / "pins.toml"
SCRIPTS = bake.ROOT / "scripts"


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=bake.ROOT,
        capture_output=True,
        text=True,
        timeout=bake.TOOL_TIMEOUT,
        check=False,
    )


def pins() -> dict[str, str]:
    return dict(tomllib.loads(PINS.read_text(encoding="utf-8"))["pins"])


# --- every pin installs together ----------------------------------------------


def test_every_pinned_version_is_installed_together() -> None:
    """The shared venv is the union of all options' pins: each at exactly its version."""
    wrong = []
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version}: not installed")
            continue
        if installed != version:
            wrong.append(f"{name}=={version}: {installed} installed")
    assert not wrong, "the union of the pins is not what is installed (make install):\n" + (
        "\n".join(wrong)
    )


def test_the_union_has_no_conflicts() -> None:
    proc = bake.run_tool(bake.ROOT, bake.tool("uv"), "pip", "check", "--python", sys.executable)
    assert proc.returncode == 0, bake.describe(proc)


# --- one lock per combination, each satisfying its pins ------------------------


def test_every_combination_has_a_current_lock() -> None:
    """scripts/lock.py --check: none missing or extra, each passes `uv lock --check --offline`."""
    proc = script(str(SCRIPTS / "lock.py"), "--check")
    assert proc.returncode == 0, bake.describe(proc)


def test_lock_combinations_follow_the_hook_tables() -> None:
    proc = script(str(SCRIPTS / "lock.py"), "--list")
    assert proc.returncode == 0, bake.describe(proc)
    keys = proc.stdout.split()
    assert keys[0] == "core"
    assert len(keys) == len(set(keys))
    files = sorted(p.stem for p in (bake.TEMPLATE_DIR / ".template" / "locks").glob("*.lock"))
    assert files == sorted(keys)


def test_versions_named_outside_pins_toml_agree() -> None:
    """uv and pre-commit-hooks appear in CI files, the Dockerfile and the pre-commit config."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import update_pins
    finally:
        sys.path.remove(str(SCRIPTS))
    wanted = pins()
    for name, places in update_pins.MENTIONS.items():
        for path, pattern in places:
            found = re.findall(pattern, path.read_text(encoding="utf-8"))
            assert found, f"{path}: no {name} version found"
            assert set(found) == {wanted[name]}, f"{path}: {name} {found} != {wanted[name]}"


def test_update_pins_dry_run_reports() -> None:
    proc = script(str(SCRIPTS / "update_pins.py"), "--dry-run")
    assert proc.returncode == 0, bake.describe(proc)
    assert proc.stdout.strip(), "update_pins.py printed nothing"


# --- validators really validate --------------------------------------------------


def test_actionlint_runs_shellcheck_on_run_steps(tmp_path: Path) -> None:
    workflow = tmp_path / "bad.yml"
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: for f in $(ls *.txt); do echo "$f"; done\n',
        encoding="utf-8",
    )
    proc = bake.run_tool(
        tmp_path,
        bake.tool("actionlint"),
        "-no-color",
        "-shellcheck",
        bake.tool("shellcheck"),
        str(workflow),
    )
    assert proc.returncode == 1 and "shellcheck" in proc.stdout, bake.describe(proc)


# --- init_git ---------------------------------------------------------------------


def test_init_git_no_leaves_no_repository(tmp_path: Path) -> None:
    project = bake.bake({"project_name": "Bake No Git", "init_git": False}, tmp_path)
    assert not (project / ".git").exists()
    assert (project / "uv.lock").exists()


def test_init_git_commits_everything_but_secrets(tmp_path: Path) -> None:
    project = bake.bake({"project_name": "Bake Git", "author_name": "Ada L"}, tmp_path)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project, capture_output=True, text=True, check=True
        ).stdout

    assert git("log", "--format=%an").strip() == "Ada L"
    assert git("status", "--porcelain") == ""
    tracked = git("ls-files").split()
    assert "uv.lock" in tracked and ".cruft.json" in tracked
    assert ".env" not in tracked


def test_without_git_generation_says_so_and_succeeds(tmp_path: Path) -> None:
    python = Path(sys.executable)
    bindir = tmp_path / "bin"  # only python on PATH: no git
    bindir.mkdir()
    (bindir / "python").symlink_to(python)
    proc = subprocess.run(
        [str(python), "-m", "cookiecutter", "--no-input", "-o", str(tmp_path / "out"), bake.ROOT],
        env={**bake.tool_env(), "PATH": str(bindir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, bake.describe(proc)
    assert "git is not on PATH: skipped git init and the first commit." in proc.stdout
    project = tmp_path / "out" / "my-saas"
    assert (project / "pyproject.toml").exists() and not (project / ".git").exists()


# --- cruft: a project generated months ago pulls in a template change -----------


def copy_template(dest: Path) -> None:
    """The template's files as git sees them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=bake.ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        source = bake.ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


def git_in(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        check=True,
    )


@pytest.mark.xdist_group("cruft")
def test_cruft_update_brings_a_template_change_in(tmp_path: Path) -> None:
    template = tmp_path / "template"
    copy_template(template)
    git_in(template, "init", "-q", "--initial-branch=main")
    git_in(template, "add", "-A")
    git_in(template, "commit", "-qm", "template v1")

    cruft = bake.tool("cruft")
    extra = json.dumps({"project_name": "Cruft Project", "author_name": "C"})
    created = bake.run_tool(
        tmp_path,
        cruft,
        "create",
        str(template),
        "--no-input",
        "--output-dir",
        str(tmp_path / "out"),
        "--extra-context",
        extra,
    )
    assert created.returncode == 0, bake.describe(created)
    project = tmp_path / "out" / "cruft-project"
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["template"] == str(template)
    assert not (project / ".git").exists(), "under cruft the hook leaves git to the user"
    assert "skipped git init" in created.stdout
    git_in(project, "init", "-q")
    git_in(project, "add", "-A")
    git_in(project, "commit", "-qm", "generated with cruft")

    checked = bake.run_tool(project, cruft, "check")
    assert checked.returncode == 0, bake.describe(checked)

    readme = template / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nA line from template v2.\n")
    git_in(template, "commit", "-qam", "template v2")

    stale = bake.run_tool(project, cruft, "check")
    assert stale.returncode != 0, bake.describe(stale)
    diff = bake.run_tool(project, cruft, "diff", "--exit-code", "--checkout", "main")
    assert diff.returncode != 0 and "A line from template v2." in diff.stdout, bake.describe(diff)

    updated = bake.run_tool(project, cruft, "update", "--skip-apply-ask")
    assert updated.returncode == 0, bake.describe(updated)
    assert "A line from template v2." in (project / "README.md").read_text(encoding="utf-8")
    fresh = bake.run_tool(project, cruft, "check")
    assert fresh.returncode == 0, bake.describe(fresh)
    # only the README and the recorded commit changed: no .env, .git or lock churn
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    changed = sorted(line[3:] for line in status if line.strip())
    assert changed == [".cruft.json", "README.md"], changed


def test_lock_combinations_come_from_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module added to OPTIONS (and REQUIRES) is all scripts/lock.py needs to know."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import lock
    finally:
        sys.path.remove(str(SCRIPTS))
    option = lock.POST_GEN.Option
    core = next(o for o in lock.POST_GEN.OPTIONS if o.name == "core")
    table = (
        core,
        option("use_a", requires=("fastapi",)),
        option("use_b", dev_requires=("pytest",)),
        option("use_c", requires=("redis",)),
        option("use_nothing", paths=("x",)),  # no requirements: not a module
    )
    monkeypatch.setattr(lock.POST_GEN, "OPTIONS", table)
    monkeypatch.setattr(lock.PRE_GEN, "REQUIRES", {"use_c": "use_a"})
    keys = [lock.POST_GEN.lock_key(c) for c in lock.combinations()]
    assert keys == [
        "core",
        "core+use_a",
        "core+use_b",
        "core+use_a+use_b",
        "core+use_a+use_c",
        "core+use_a+use_b+use_c",
    ]


@pytest.mark.xdist_group("install")
def test_make_install_installs_exactly_the_lock(tmp_path: Path) -> None:
    """The generated `make install` (uv sync --locked) gives the locked version of everything."""
    project = bake.bake({"project_name": "Bake Install", "init_git": False}, tmp_path)
    proc = bake.run_tool(project, "make", "install")
    assert proc.returncode == 0, bake.describe(proc)
    lock = tomllib.loads((project / "uv.lock").read_text(encoding="utf-8"))
    locked: dict[str, set[str]] = {}  # a universal lock may hold one version per Python range
    for package in lock["package"]:
        locked.setdefault(package["name"], set()).add(package["version"])
    freeze = bake.run_tool(
        project, str(project / ".venv" / "bin" / "uv"), "pip", "freeze", "--python", ".venv"
    )
    assert freeze.returncode == 0, bake.describe(freeze)
    installed = {}
    for line in freeze.stdout.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            installed[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert installed, freeze.stdout
    for seed in ("pip", "setuptools"):  # put there by `python -m venv`, not by uv
        if seed not in locked:
            installed.pop(seed, None)
    wrong = {n: (v, locked.get(n)) for n, v in installed.items() if v not in locked.get(n, ())}
    assert not wrong, f"installed (version, locked version) differ: {wrong}"
    assert "bake-install" in locked and "fastapi" in installed
