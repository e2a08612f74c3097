"""Bake every supported combination and check the generated project.

Each test takes the module-scoped ``baked`` fixture (see conftest.py), so a
combo is rendered once and all its checks run against that render.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
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


def test_nothing_refers_to_auth_without_it(baked: bake.Baked) -> None:
    if bake.is_on(baked.options.get("use_auth")):
        pytest.skip("auth is on in this combination")
    found = bake.mentions(baked.path, bake.AUTH_MENTION)
    assert not found, "the project refers to the auth module it does not have:\n" + "\n".join(found)


def test_nothing_refers_to_admin_without_it(baked: bake.Baked) -> None:
    if bake.is_on(baked.options.get("use_admin")):
        pytest.skip("admin is on in this combination")
    found = bake.mentions(baked.path, bake.ADMIN_MENTION)
    assert not found, "the project refers to the admin module it does not have:\n" + "\n".join(
        found
    )


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


# --- the lock ------------------------------------------------------------------


def test_lock_names_the_project_and_holds_its_pins(baked: bake.Baked) -> None:
    lock = tomllib.loads((baked.path / "uv.lock").read_text(encoding="utf-8"))
    versions = {p["name"]: p["version"] for p in lock["package"]}
    slug = baked.path.name  # cookiecutter names the folder after the slug
    assert versions.get(slug) == "0.1.0", f"uv.lock has no project {slug!r}"
    project = tomllib.loads((baked.path / "pyproject.toml").read_text(encoding="utf-8"))
    deps = [*project["project"]["dependencies"], *project["dependency-groups"]["dev"]]
    for dep in deps:
        name, _, version = dep.partition("==")
        name = name.split("[")[0].lower()
        assert versions.get(name) == version, f"{dep}: uv.lock has {versions.get(name)}"


def test_lock_is_current_offline(baked: bake.Baked) -> None:
    """`uv sync --locked` (make install, CI) accepts this lock: checked with no network."""
    env = {"UV_OFFLINE": "1", "UV_CACHE_DIR": str(baked.scratch / "uv-cache")}
    proc = bake.run_tool(baked.path, bake.tool("uv"), "lock", "--check", "--offline", env=env)
    assert proc.returncode == 0, bake.describe(proc)
    # and it is byte for byte what uv writes (the renamed project sits where uv sorts it)
    before = (baked.path / "uv.lock").read_bytes()
    proc = bake.run_tool(baked.path, bake.tool("uv"), "lock", "--offline", env=env)
    assert proc.returncode == 0, bake.describe(proc)
    assert (baked.path / "uv.lock").read_bytes() == before, "uv lock rewrote the kept lock"


# --- every rendered CI, bot and container file passes its validator ----------


def test_github_workflows_pass_actionlint_and_shellcheck(baked: bake.Baked) -> None:
    workflows = sorted(str(p) for p in (baked.path / ".github" / "workflows").glob("*.y*ml"))
    if not workflows:
        pytest.skip("no GitHub workflows in this combination")
    proc = bake.run_tool(
        baked.path,
        bake.tool("actionlint"),
        "-no-color",
        "-shellcheck",
        bake.tool("shellcheck"),
        *workflows,
    )
    assert proc.returncode == 0, bake.describe(proc)


SCHEMAS = {
    ".github/workflows/ci.yml": "vendor.github-workflows",
    ".github/dependabot.yml": "vendor.dependabot",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
    "renovate.json": "vendor.renovate",
    "compose.yaml": "vendor.compose-spec",
}


@pytest.mark.parametrize("rel", sorted(SCHEMAS))
def test_file_matches_its_schema(baked: bake.Baked, rel: str) -> None:
    if not (baked.path / rel).exists():
        pytest.skip(f"no {rel} in this combination")
    proc = bake.run_tool(
        baked.path,
        bake.tool("check-jsonschema"),
        "--builtin-schema",
        SCHEMAS[rel],
        rel,
    )
    assert proc.returncode == 0, bake.describe(proc)


def test_dockerfile_passes_hadolint(baked: bake.Baked) -> None:
    if not (baked.path / "Dockerfile").exists():
        pytest.skip("no Dockerfile in this combination")
    proc = bake.run_tool(baked.path, bake.tool("hadolint"), "--no-color", "Dockerfile")
    assert proc.returncode == 0, bake.describe(proc)


def test_pre_commit_passes_without_github(
    baked: bake.Baked, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every hook is local; pre-commit-hooks comes from PyPI into one shared PRE_COMMIT_HOME."""
    import yaml

    config = yaml.safe_load((baked.path / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert {repo["repo"] for repo in config["repos"]} == {"local"}, "a hook would be cloned"
    if not (baked.path / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=baked.path, check=True)
        subprocess.run(["git", "add", "-A"], cwd=baked.path, check=True)
    env = {
        "PRE_COMMIT_HOME": str(bake.PRE_COMMIT_HOME),
        "MYPY_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "mypy-cache"),
    }
    proc = bake.run(
        baked.path, "pre_commit", "run", "--all-files", "--show-diff-on-failure", env=env
    )
    assert proc.returncode == 0, bake.describe(proc)


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


ROUTE_TABLE = re.compile(r"<!-- route-table:start -->\n(.*?)<!-- route-table:end -->", re.S)


def test_auth_docs_route_table_is_the_apps(baked: bake.Baked) -> None:
    """docs/auth.md's route -> requirement table is the all-modules project's, as it is."""
    if baked.combo_id != "defaults":
        pytest.skip("the table in docs/auth.md is the one of the project with every module")
    code = (
        f"from {baked.package}.main import app\n"
        f"from {baked.package}.core.contract import markdown_table\n"
        "print(markdown_table(app), end='')\n"
    )
    proc = bake.run_tool(baked.path, sys.executable, "-c", code, env={"PYTHONPATH": "src"})
    assert proc.returncode == 0, bake.describe(proc)
    documented = ROUTE_TABLE.search((bake.ROOT / "docs" / "auth.md").read_text(encoding="utf-8"))
    assert documented, "docs/auth.md has no route-table markers"
    assert documented.group(1).strip() == proc.stdout.strip(), (
        "docs/auth.md's route table differs from the app's; paste this between its markers:\n"
        + proc.stdout
    )


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
