"""The post-generation hook, step by step, on a real rendered tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

TEMPLATE = Path(__file__).resolve().parents[2]
PROJECT_TEMPLATE = TEMPLATE / "{{cookiecutter.project_slug}}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the unrendered project (the hook only needs file layout and markers)."""
    root = tmp_path / "project"
    shutil.copytree(PROJECT_TEMPLATE, root)
    pkg = root / "src" / "{{cookiecutter.package_name}}"
    pkg.rename(root / "src" / "acme")
    return root


def answers(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "project_slug": "acme",
        "package_name": "acme",
        "ci": "github",
        "use_docker": True,
        "use_auth": True,
    }
    values.update(changes)
    return values


def test_unselected_option_paths_are_removed(post_gen: ModuleType, tree: Path) -> None:
    post_gen.remove_unselected(tree, answers(use_docker=False, ci="gitlab"))
    assert not (tree / "Dockerfile").exists()
    assert not (tree / "compose.yaml").exists()
    assert not (tree / ".github").exists()
    assert (tree / ".gitlab-ci.yml").exists()


def test_selected_option_paths_stay(post_gen: ModuleType, tree: Path) -> None:
    post_gen.remove_unselected(tree, answers())
    assert (tree / "Dockerfile").exists()
    assert (tree / ".github").exists()
    assert not (tree / ".gitlab-ci.yml").exists()


def test_auth_off_drops_its_package_tests_and_migration(post_gen: ModuleType, tree: Path) -> None:
    post_gen.remove_unselected(tree, answers(use_auth=False))
    assert not (tree / "src" / "acme" / "auth").exists()
    assert not (tree / "tests" / "auth").exists()
    assert not (tree / "migrations" / "versions" / "0002_auth.py").exists()
    assert (tree / "src" / "acme" / "core").exists()


def test_auth_on_keeps_it_and_pins_its_requirements(post_gen: ModuleType, tree: Path) -> None:
    post_gen.remove_unselected(tree, answers())
    assert (tree / "src" / "acme" / "auth" / "module.py").exists()
    post_gen.write_pins(tree, answers())
    text = (tree / "pyproject.toml").read_text()
    assert '"authlib==' in text
    assert '"pwdlib[argon2]==' in text
    assert '"aiosmtpd==' in text
    post_gen.chain_migrations(tree, answers())
    auth = (tree / "migrations" / "versions" / "0002_auth.py").read_text()
    assert 'down_revision: str | None = "0001_baseline"' in auth


def test_ci_none_keeps_no_provider(post_gen: ModuleType, tree: Path) -> None:
    post_gen.remove_unselected(tree, answers(ci="none"))
    assert not (tree / ".github").exists()
    assert not (tree / ".gitlab-ci.yml").exists()


def test_every_option_path_exists_in_the_template(post_gen: ModuleType, tree: Path) -> None:
    for option in post_gen.OPTIONS:
        for rel in [*option.paths, *([option.migration] if option.migration else [])]:
            assert (tree / rel.format(package="acme")).exists(), (option.name, rel)


def test_pins_are_exact_and_only_for_selected_options(
    post_gen: ModuleType, tree: Path
) -> None:
    post_gen.write_pins(tree, answers())
    text = (tree / "pyproject.toml").read_text()
    assert '"fastapi==' in text
    assert '"uvicorn[standard]==' in text
    assert '"pytest==' in text
    assert "dependencies = []" not in text
    assert not (tree / ".template").exists()
    import tomllib

    project = tomllib.loads(text.replace("{{", "").replace("}}", ""))
    for req in [*project["project"]["dependencies"], *project["dependency-groups"]["dev"]]:
        assert req.count("==") == 1, req


def test_missing_pin_is_a_clear_error(post_gen: ModuleType, tree: Path) -> None:
    pins = tree / ".template" / "pins.toml"
    pins.write_text(pins.read_text().replace('fastapi = "', 'not-fastapi = "'))
    with pytest.raises(post_gen.HookError, match="no pinned version for 'fastapi'"):
        post_gen.write_pins(tree, answers())


def test_env_gets_a_fresh_secret_and_the_example_keeps_none(
    post_gen: ModuleType, tree: Path
) -> None:
    post_gen.write_env(tree)
    first = (tree / ".env").read_text()
    post_gen.write_env(tree)
    second = (tree / ".env").read_text()
    key = next(line for line in first.splitlines() if line.startswith("SECRET_KEY="))
    assert len(key) > len("SECRET_KEY=") + 40
    assert key not in second
    assert key not in (tree / ".env.example").read_text()
    assert (tree / ".env").stat().st_mode & 0o077 == 0
    assert ".env\n" in (tree / ".gitignore").read_text()


def test_migrations_are_chained_into_one_head(post_gen: ModuleType, tree: Path) -> None:
    post_gen.chain_migrations(tree, answers())
    kept = [o.migration for o in post_gen.selected(answers()) if o.migration]
    previous = "None"
    for rel in kept:
        text = (tree / rel).read_text()
        assert f"down_revision: str | None = {previous}" in text
        previous = '"' + post_gen.REVISION.search(text).group(1) + '"'


def test_hook_failure_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    # Run the hook script as cookiecutter would, in a folder missing its files.
    script = (TEMPLATE / "hooks" / "post_gen_project.py").read_text()
    script = script.replace('r"""{{ cookiecutter | tojson }}"""', repr(
        '{"project_slug": "acme", "package_name": "acme", "ci": "none", "use_docker": false}'
    ))
    hook = tmp_path / "hook.py"
    hook.write_text(script)
    done = subprocess.run(
        [sys.executable, str(hook)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr.startswith("ERROR: could not finish the project: ")
    assert len(done.stderr.strip().splitlines()) == 1
