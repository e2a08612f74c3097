"""The post-generation hook, step by step, on a real rendered tree."""

from __future__ import annotations

import os
import re
import shutil
import stat
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
    assert not (tree / "deploy").exists()  # the Kubernetes manifests and the compose proxy
    assert not (tree / ".github").exists()
    assert (tree / ".gitlab-ci.yml").exists()


def test_selected_option_paths_stay(post_gen: ModuleType, tree: Path) -> None:
    post_gen.remove_unselected(tree, answers())
    assert (tree / "Dockerfile").exists()
    assert (tree / "deploy" / "kubernetes" / "base" / "kustomization.yaml").exists()
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


def test_pins_are_exact_and_only_for_selected_options(post_gen: ModuleType, tree: Path) -> None:
    post_gen.write_pins(tree, answers())
    text = (tree / "pyproject.toml").read_text()
    assert '"fastapi==' in text
    assert '"uvicorn[standard]==' in text
    assert '"pytest==' in text
    assert "dependencies = []" not in text
    import tomllib

    # the template's own expressions (the answers, escaped for TOML) become plain text
    project = tomllib.loads(re.sub(r"\{\{.*?\}\}", "x", text))
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
    assert post_gen.write_env(tree) == ""
    first = (tree / ".env").read_text()
    (tree / ".env").unlink()
    post_gen.write_env(tree)
    second = (tree / ".env").read_text()
    key = next(line for line in first.splitlines() if line.startswith("SECRET_KEY="))
    assert len(key) > len("SECRET_KEY=") + 40
    assert key not in second
    assert key not in (tree / ".env.example").read_text()
    assert (tree / ".env").stat().st_mode & 0o077 == 0
    assert ".env\n" in (tree / ".gitignore").read_text()


def test_env_is_private_from_the_start(
    post_gen: ModuleType, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0600 comes from creating the file so, not from a chmod once the secret is in it."""

    def no_chmod(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the mode was set after the file was written")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    old_umask = os.umask(0)  # a plain create would then give 0666
    try:
        post_gen.write_env(tree)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tree / ".env").stat().st_mode) == 0o600


def test_an_existing_env_is_kept(post_gen: ModuleType, tree: Path) -> None:
    """Regenerating over a project (cookiecutter -f) keeps the user's own .env."""
    (tree / ".env").write_text("SECRET_KEY=mine\nOPENAI_API_KEY=theirs\n")
    line = post_gen.write_env(tree)
    assert (tree / ".env").read_text() == "SECRET_KEY=mine\nOPENAI_API_KEY=theirs\n"
    assert line == "Kept the existing .env (its SECRET_KEY and settings are unchanged)."


def test_env_does_not_write_through_a_symlink(
    post_gen: ModuleType, tree: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    (tree / ".env").symlink_to(elsewhere)  # dangling: a plain open would create it
    post_gen.write_env(tree)
    assert not elsewhere.exists()
    assert (tree / ".env").is_symlink()


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
    script = script.replace(
        'r"""{{ cookiecutter | tojson }}"""',
        repr('{"project_slug": "acme", "package_name": "acme", "ci": "none", "use_docker": false}'),
    )
    hook = tmp_path / "hook.py"
    hook.write_text(script)
    done = subprocess.run(
        [sys.executable, str(hook)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr.startswith("ERROR: could not finish the project: ")
    assert len(done.stderr.strip().splitlines()) == 1


# --- the lock ------------------------------------------------------------------


def test_lock_key_is_core_plus_modules_in_table_order(post_gen: ModuleType) -> None:
    assert post_gen.lock_key(["core"]) == "core"
    names = [o.name for o in post_gen.modules()]
    assert post_gen.lock_key(["core", *reversed(names)]) == "+".join(["core", *names])
    assert all(o.requires or o.dev_requires for o in post_gen.modules())


LOCK = """version = 1
requires-python = ">=3.11"

[[package]]
name = "alembic"
version = "1.0"

[[package]]
name = "placeholder-name"
version = "0.1.0"
source = { editable = "." }

[[package]]
name = "zope"
version = "2.0"
"""


def test_rename_in_lock_keeps_uv_order(post_gen: ModuleType) -> None:
    text = post_gen.rename_in_lock(LOCK, "placeholder-name", "acme")
    names = [line for line in text.splitlines() if line.startswith("name = ")]
    assert names == ['name = "acme"', 'name = "alembic"', 'name = "zope"']
    assert text.endswith('version = "2.0"\n')
    assert "placeholder" not in text


def test_rename_in_lock_needs_the_placeholder(post_gen: ModuleType) -> None:
    with pytest.raises(post_gen.HookError, match="no single package named"):
        post_gen.rename_in_lock(LOCK, "other", "acme")


def test_keep_lock_writes_uv_lock_and_drops_the_template_folder(
    post_gen: ModuleType, tree: Path
) -> None:
    post_gen.keep_lock(tree, answers())
    text = (tree / "uv.lock").read_text()
    assert 'name = "acme"\nversion = "0.1.0"\nsource = { editable = "." }' in text
    assert post_gen.LOCK_PLACEHOLDER not in text
    assert not (tree / ".template").exists()


def test_missing_lock_is_a_clear_error(post_gen: ModuleType, tree: Path) -> None:
    (tree / post_gen.LOCKS_DIR / "core.lock").unlink()
    with pytest.raises(post_gen.HookError, match="no lock for 'core'"):
        post_gen.keep_lock(tree, answers(use_auth=False))


# --- Dependabot ------------------------------------------------------------------


def test_dependabot_drops_docker_without_docker(post_gen: ModuleType, tree: Path) -> None:
    post_gen.trim_dependabot(tree, answers(use_docker=False))
    text = (tree / post_gen.DEPENDABOT).read_text()
    assert 'package-ecosystem: "docker"' not in text
    assert 'package-ecosystem: "uv"' in text and 'package-ecosystem: "github-actions"' in text


def test_dependabot_keeps_docker_with_docker(post_gen: ModuleType, tree: Path) -> None:
    before = (tree / post_gen.DEPENDABOT).read_text()
    post_gen.trim_dependabot(tree, answers())
    assert (tree / post_gen.DEPENDABOT).read_text() == before


def test_gitlab_gets_renovate_and_github_dependabot(post_gen: ModuleType, tree: Path) -> None:
    post_gen.remove_unselected(tree, answers(ci="gitlab"))
    assert (tree / "renovate.json").exists()
    assert not (tree / ".github").exists()


# --- init_git --------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_init_git_makes_a_first_commit_with_the_answers_author(
    post_gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no user git config
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "README.md").write_text("hi\n")
    line = post_gen.init_git(
        tmp_path / "p", {"author_name": "Ada Lovelace", "author_email": "ada@example.com"}
    )
    assert line.startswith("Initialized a git repository")
    assert git(tmp_path / "p", "log", "--format=%an <%ae>") == "Ada Lovelace <ada@example.com>"
    assert git(tmp_path / "p", "status", "--porcelain") == ""
    assert git(tmp_path / "p", "branch", "--show-current") == "main"


def test_init_git_off_does_nothing(post_gen: ModuleType, tmp_path: Path) -> None:
    assert post_gen.init_git(tmp_path, {"init_git": False}) == ""
    assert not (tmp_path / ".git").exists()


def test_init_git_under_cruft_leaves_git_to_the_user(post_gen: ModuleType, tmp_path: Path) -> None:
    line = post_gen.init_git(tmp_path, {"init_git": True, "_commit": "abc"})
    assert "skipped git init" in line
    assert not (tmp_path / ".git").exists()


def test_init_git_without_git_says_so(
    post_gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(post_gen.shutil, "which", lambda _name: None)
    line = post_gen.init_git(tmp_path, {"init_git": True})
    assert line == "git is not on PATH: skipped git init and the first commit."
    assert not (tmp_path / ".git").exists()


def test_init_git_failure_is_a_warning_not_an_error(
    post_gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\necho 'fatal: broken' >&2\nexit 128\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    (tmp_path / "keep.txt").write_text("mine\n")
    line = post_gen.init_git(tmp_path, {})
    assert line.startswith("WARNING: `git init` failed (fatal: broken)")
    assert (tmp_path / "keep.txt").exists()


# --- .cruft.json ------------------------------------------------------------------


def test_template_url_expands_abbreviations(post_gen: ModuleType, tmp_path: Path) -> None:
    assert post_gen.template_url("gh:acme/tpl", "") == "https://github.com/acme/tpl.git"
    assert post_gen.template_url("https://x.test/t.git", "") == "https://x.test/t.git"
    assert post_gen.template_url(".", str(tmp_path)) == str(tmp_path.resolve())


def test_cruft_state_from_a_git_checkout(post_gen: ModuleType, tmp_path: Path) -> None:
    repo = tmp_path / "tpl"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "cookiecutter.json").write_text("{}")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "t")
    context = {"project_slug": "acme", "_template": str(repo), "_repo_dir": str(repo)}
    context["_output_dir"] = str(tmp_path)
    state = post_gen.cruft_state(context)
    commit = git(repo, "rev-parse", "HEAD")
    assert state["template"] == str(repo.resolve())
    assert state["commit"] == commit
    inner = state["context"]["cookiecutter"]
    assert inner["_commit"] == commit and inner["project_slug"] == "acme"
    assert "_output_dir" not in inner and "_repo_dir" not in inner


def test_no_cruft_state_outside_git_or_under_cruft(post_gen: ModuleType, tmp_path: Path) -> None:
    assert post_gen.cruft_state({"_repo_dir": str(tmp_path)}) is None
    assert post_gen.cruft_state({"_commit": "abc", "_repo_dir": str(tmp_path)}) is None


def test_hook_script_with_a_failing_git_warns_and_exits_zero(tree: Path, tmp_path: Path) -> None:
    """Run as cookiecutter runs it: git breaks, the project is kept, exit 0, one WARNING line."""
    script = (TEMPLATE / "hooks" / "post_gen_project.py").read_text()
    script = script.replace(
        'r"""{{ cookiecutter | tojson }}"""',
        repr(
            '{"project_slug": "acme", "package_name": "acme", "ci": "github", "use_docker": true}'
        ),
    )
    hook = tmp_path / "hook.py"
    hook.write_text(script)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\necho 'fatal: disk full' >&2\nexit 128\n")
    (fake / "git").chmod(0o755)
    done = subprocess.run(
        [sys.executable, str(hook)],
        cwd=tree,
        env={"PATH": str(fake)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("WARNING:")]
    assert warnings == ["WARNING: `git init` failed (fatal: disk full); the project is complete."]
    assert (tree / "uv.lock").is_file() and (tree / ".env").is_file()
