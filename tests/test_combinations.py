"""Every valid combination of modules bakes, lints, type-checks and migrates.

`COMBOS` (tests/bake.py) picks the rows whose whole project suite runs; this file
covers the rest of the combinations of module answers with a lighter check, so
that no combination a user can choose is left unbuilt: ruff, `mypy --strict`,
upgrade / one head / no drift / downgrade on SQLite (and PostgreSQL when
TEST_DATABASE_URL is set) and, with organizations on, the orgs tests on both
databases (their seams with payments, AI and the admin change with each row).

Every bake here has the same package name, so one mypy cache per xdist worker
checks each after the first in a few seconds.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import bake

MODULES = ("use_auth", "use_orgs", "use_payments", "use_ai", "use_admin")
# Options that need another one (the pre-generation hook refuses the others).
NEEDS = {"use_orgs": "use_auth", "use_payments": "use_auth", "use_admin": "use_auth"}


def valid_combinations() -> list[dict[str, bool]]:
    rows = []
    for values in itertools.product((True, False), repeat=len(MODULES)):
        answers = dict(zip(MODULES, values, strict=True))
        if all(answers[needed] for option, needed in NEEDS.items() if answers[option]):
            rows.append(answers)
    return rows


def fully_checked() -> set[tuple[bool, ...]]:
    """The module answers of the COMBOS rows (their whole suite runs in test_bake.py)."""
    return {tuple(bake.is_on(bake.options(c["context"])[m]) for m in MODULES) for c in bake.COMBOS}


def combo_id(answers: Mapping[str, bool]) -> str:
    return "-".join(m.removeprefix("use_") for m in MODULES if answers[m]) or "core"


LIGHT = [a for a in valid_combinations() if tuple(a.values()) not in fully_checked()]


def test_the_combinations_are_the_ones_the_hook_accepts() -> None:
    """NEEDS here is the pre-generation hook's REQUIRES; 18 module combinations in all."""
    from hooks.conftest import load

    assert load("pre_gen_project").REQUIRES == NEEDS
    assert len(valid_combinations()) == 18
    assert len(LIGHT) + len(fully_checked()) == 18


@pytest.fixture
def light_bake(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers: dict[str, Any] = dict(request.param)
    base = tmp_path_factory.mktemp(f"combo-{combo_id(answers)}")
    context = {
        "project_name": "Combo Check",
        "database": "sqlite",
        "ci": "none",
        "use_docker": False,
        "init_git": False,
        **answers,
    }
    return bake.bake(context, base)


@pytest.mark.parametrize(
    "light_bake",
    [
        pytest.param(a, id=combo_id(a), marks=pytest.mark.xdist_group(f"combo-{combo_id(a)}"))
        for a in LIGHT
    ],
    indirect=True,
)
def test_combination_builds_and_migrates(
    light_bake: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = light_bake
    bake.check(project, "ruff", "check", ".")
    bake.check(project, "ruff", "format", "--check", ".")
    cache = tmp_path_factory.getbasetemp() / "mypy-cache-combos"
    bake.check(project, "mypy", "--strict", "src", "tests", env={"MYPY_CACHE_DIR": str(cache)})
    scratch = project.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    bake.migration_checks(project, f"sqlite+aiosqlite:///{scratch / 'migrations.db'}")
    orgs = (project / "tests" / "orgs").is_dir()
    if orgs:
        bake.check(project, "pytest", "-q", "-p", "no:cacheprovider", "tests/orgs")
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        return
    name, url = bake.create_database(server, "combo")
    try:
        bake.migration_checks(project, url)
        if orgs:
            env = {"TEST_DATABASE_URL": url}
            bake.check(project, "pytest", "-q", "-p", "no:cacheprovider", "tests/orgs", env=env)
    finally:
        bake.drop_database(server, name)
