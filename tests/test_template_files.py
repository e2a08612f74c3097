"""Jinja stays where it is needed: a known, short list of files holds conditionals."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "{{cookiecutter.project_slug}}"

# Files allowed to hold Jinja statements ({% ... %}), relative to the project
# template folder. Module wiring, dependency pins, settings examples and files
# whose content is by nature per-option. Keep it short; say why for each.
JINJA_STATEMENTS_ALLOWED = {
    "src/{{cookiecutter.package_name}}/modules.py",  # the one wiring file
    "src/{{cookiecutter.package_name}}/admin/registry.py",  # the admin views of each module
    "src/{{cookiecutter.package_name}}/ai/seams.py",  # the ai module's one auth/payments seam
    ".env.example",  # each module's settings
    "compose.yaml",  # the chosen database
    ".gitlab-ci.yml",  # docker job only with use_docker
    "LICENSE",  # the chosen license text
}

# Files that must not go through Jinja at all (bots and tools rewrite them,
# or they are full of `${{ }}`): no `{{ cookiecutter` either.
NO_JINJA = {
    ".pre-commit-config.yaml",
    ".github/workflows/ci.yml",
    ".github/dependabot.yml",
    "renovate.json",
    ".template/pins.toml",
    *(str(p.relative_to(PROJECT)) for p in (PROJECT / ".template" / "locks").glob("*.lock")),
}

# Copied as they are (cookiecutter's _copy_without_render): workflows are full
# of `${{ }}`, bots rewrite their configs, locks are large machine output.
COPIED_AS_IS = {
    ".github/workflows/ci.yml",
    ".github/dependabot.yml",
    "renovate.json",
    *(str(p.relative_to(PROJECT)) for p in (PROJECT / ".template" / "locks").glob("*.lock")),
}


def template_files() -> list[Path]:
    return [p for p in PROJECT.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_jinja_statements_only_in_the_known_files() -> None:
    holding = {
        str(p.relative_to(PROJECT))
        for p in template_files()
        if "{%" in p.read_text(errors="replace")
    }
    assert holding <= JINJA_STATEMENTS_ALLOWED, sorted(holding - JINJA_STATEMENTS_ALLOWED)


def test_files_tools_rewrite_hold_no_jinja() -> None:
    for rel in NO_JINJA:
        text = (PROJECT / rel).read_text()
        assert "{%" not in text and "{{ cookiecutter" not in text, rel


def test_copy_without_render_covers_the_workflows() -> None:
    patterns = json.loads((ROOT / "cookiecutter.json").read_text())["_copy_without_render"]
    for path in (PROJECT / ".github" / "workflows").glob("*"):
        rel = str(path.relative_to(PROJECT))
        assert any(fnmatch(rel, pattern) for pattern in patterns), rel


def test_copy_without_render_covers_bot_configs_and_locks() -> None:
    patterns = json.loads((ROOT / "cookiecutter.json").read_text())["_copy_without_render"]
    assert any(p.endswith(".lock") for p in COPIED_AS_IS), "no locks in .template/locks"
    for rel in COPIED_AS_IS:
        assert any(fnmatch(rel, pattern) for pattern in patterns), rel


def test_template_code_is_ruff_clean() -> None:
    """The template's own hooks, tests and scripts pass ruff, like the projects they make."""
    import subprocess
    import sys

    for args in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "hooks", "tests", "scripts", "bench"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
