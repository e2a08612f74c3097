"""Bake every supported combination and check the generated project.

Each test takes the module-scoped ``baked`` fixture (see conftest.py), so a
combo is rendered once and all its checks run against that render.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bake

# --- the render itself --------------------------------------------------------


def test_expected_files(baked: bake.Baked) -> None:
    present, absent = bake.expected_paths(baked.options, baked.package)
    missing = [p for p in present if not (baked.path / p).exists()]
    leftover = [p for p in absent if (baked.path / p).exists()]
    assert not missing, f"missing for {baked.options}: {missing}"
    assert not leftover, f"should have been dropped for {baked.options}: {leftover}"


def test_no_unrendered_template_syntax(baked: bake.Baked) -> None:
    problems = bake.unrendered(baked.path)
    assert not problems, "unrendered template syntax:\n" + "\n".join(problems)


def test_dropped_modules_leave_no_trace(baked: bake.Baked) -> None:
    problems = bake.module_traces(baked.path, baked.options)
    assert not problems, "a dropped module is still referred to:\n" + "\n".join(problems)


def test_env_file_holds_secret_and_is_git_ignored(baked: bake.Baked) -> None:
    env_file = baked.path / ".env"
    example = baked.path / ".env.example"
    assert env_file.is_file(), ".env was not written"
    secret = bake.read_env_file(env_file).get("SECRET_KEY", "")
    assert len(secret) >= 32, f"SECRET_KEY in .env missing or short: {secret!r}"
    assert secret not in example.read_text(encoding="utf-8"), "SECRET_KEY leaked into .env.example"
    if not (baked.path / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=baked.path, check=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=baked.path, check=False)
    assert ignored.returncode == 0, ".env is not git-ignored"
    tracked = subprocess.run(
        ["git", "check-ignore", "-q", ".env.example"], cwd=baked.path, check=False
    )
    assert tracked.returncode == 1, ".env.example is git-ignored but must be committed"


def test_dependencies_pinned(baked: bake.Baked) -> None:
    problems = bake.unpinned_dependencies(baked.path / "pyproject.toml")
    assert not problems, "dependencies not pinned with ==:\n" + "\n".join(problems)


def test_shared_venv_has_the_pinned_versions(baked: bake.Baked) -> None:
    """The shared venv runs this project's tools: it must hold exactly its pins."""
    problems = bake.venv_mismatches(baked.path / "pyproject.toml")
    assert not problems, "shared .venv differs from the project's pins (make install?):\n" + (
        "\n".join(problems)
    )


def test_secret_key_differs_between_bakes(tmp_path: Path) -> None:
    context = {"project_name": "Bake Secret Twice"}
    first = bake.bake(context, tmp_path / "one")
    second = bake.bake(context, tmp_path / "two")
    secrets = [bake.read_env_file(p / ".env").get("SECRET_KEY") for p in (first, second)]
    assert secrets[0], "no SECRET_KEY in .env"
    assert secrets[0] != secrets[1], "two bakes got the same SECRET_KEY"


# --- tools inside the project, with the shared venv's interpreter -------------


def test_ruff_check(baked: bake.Baked) -> None:
    bake.check(baked.path, "ruff", "check", ".")


def test_ruff_format(baked: bake.Baked) -> None:
    bake.check(baked.path, "ruff", "format", "--check", ".")


def test_mypy_strict(baked: bake.Baked, tmp_path_factory: pytest.TempPathFactory) -> None:
    # One cache per xdist worker (its basetemp): later bakes on the worker
    # reuse the third-party part; bakes never share a cache concurrently.
    cache = tmp_path_factory.getbasetemp() / "mypy-cache"
    env = {"MYPY_CACHE_DIR": str(cache)}
    bake.check(baked.path, "mypy", "--strict", "src", "tests", env=env)


def test_project_pytest_sqlite(baked: bake.Baked, redis_env: dict[str, str]) -> None:
    bake.check(baked.path, "pytest", "-q", "-p", "no:cacheprovider", env=redis_env)


def test_migrations_sqlite(baked: bake.Baked) -> None:
    url = f"sqlite+aiosqlite:///{baked.scratch / 'migrations.db'}"
    bake.migration_checks(baked.path, url)


def test_project_pytest_postgresql(
    baked: bake.Baked, postgres_urls: dict[str, str], redis_env: dict[str, str]
) -> None:
    env = {"TEST_DATABASE_URL": postgres_urls["tests"], **redis_env}
    bake.check(baked.path, "pytest", "-q", "-p", "no:cacheprovider", env=env)


def test_migrations_postgresql(baked: bake.Baked, postgres_urls: dict[str, str]) -> None:
    bake.migration_checks(baked.path, postgres_urls["migrate"])


# --- documentation -------------------------------------------------------------


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    if not (bake.ROOT / "mkdocs.yml").is_file():
        pytest.skip("no mkdocs.yml yet")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=bake.ROOT,
        capture_output=True,
        text=True,
        timeout=bake.TOOL_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, bake.describe(proc)
