"""Helpers to bake the template and run checks inside a baked project.

The list of option combinations lives here, in COMBOS: adding an option or a
module means adding rows (and, if it adds or drops files, an entry in
``expected_paths``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = ROOT / "{{cookiecutter.project_slug}}"
COOKIECUTTER_JSON = ROOT / "cookiecutter.json"

# Every supported combination that gets baked and fully checked.
# Each row: a readable id (the pytest param id) and the extra_context given to
# cookiecutter. Each row has its own project_name so package names differ.
COMBOS: list[dict[str, Any]] = [
    # every module on, every default
    {"id": "defaults", "context": {"project_name": "Bake Defaults"}},
    # no module at all; the lean choices for the other questions
    {
        "id": "core-only-sqlite-gitlab-nodocker-bsd",
        "context": {
            "project_name": "Bake Core Only",
            "database": "sqlite",
            "ci": "gitlab",
            "use_docker": False,
            "use_auth": False,
            "use_orgs": False,
            "use_payments": False,
            "use_ai": False,
            "use_admin": False,
            "license": "BSD-3-Clause",
        },
    },
    # AI without accounts: metered per client address
    {
        "id": "ai-noauth-noci-proprietary-py313-nogit",
        "context": {
            "project_name": "Bake Open Model",
            "ci": "none",
            "use_auth": False,
            "use_orgs": False,
            "use_payments": False,
            "use_admin": False,
            "license": "Proprietary",
            "python_version": "3.13",
            "init_git": False,
        },
    },
    # accounts and organizations only
    {
        "id": "auth-orgs-github-apache-py311",
        "context": {
            "project_name": "Bake Accounts Only",
            "ci": "github",
            "use_payments": False,
            "use_ai": False,
            "use_admin": False,
            "license": "Apache-2.0",
            "python_version": "3.11",
        },
    },
    # AI quotas per user without plans; the admin's AI views without payments
    {
        "id": "auth-ai-admin-nopayments-sqlite",
        "context": {"project_name": "Bake Metered", "database": "sqlite", "use_payments": False},
    },
    # plans without AI; the admin's payments views without AI
    {
        "id": "auth-payments-admin-noai-nodocker",
        "context": {"project_name": "Bake Billing", "use_ai": False, "use_docker": False},
    },
    # plans and AI billed per user: payments, AI and the admin without organizations
    {
        "id": "auth-payments-ai-admin-noorgs-sqlite-gitlab",
        "context": {
            "project_name": "Bake Per User",
            "database": "sqlite",
            "ci": "gitlab",
            "use_orgs": False,
        },
    },
]

# Words that name an optional module: with the option off, no rendered file may hold
# them (case-insensitive), so nothing refers to the dropped module.
MODULE_WORDS: dict[str, tuple[str, ...]] = {
    "use_orgs": ("orgs", "organization"),
    "use_payments": ("payments", "stripe"),
    "use_ai": ("openai", "ai_usage"),
}

# Unrendered template syntax: never allowed anywhere.
FORBIDDEN = ("{{ cookiecutter", "{{cookiecutter", "{%", "%}")
# A bare "{{" is allowed only in these files (glob on the path relative to the
# project root): GitHub workflow expressions ``${{ }}``, the auth module's Jinja2
# email templates (copied without rendering, see cookiecutter.json).
BRACES_ALLOWED = (
    ".github/workflows/*.yml",
    ".github/workflows/*.yaml",
    "src/*/auth/templates/*",
)
# Directories the checks below create or tools leave; not part of the render.
SKIP_DIRS = {
    ".git",
    ".venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "__pycache__",
}
TOOL_TIMEOUT = 900
# pre-commit installs its PyPI hook environments here once, for every bake
PRE_COMMIT_HOME = Path(sys.prefix) / "pre-commit-home"


def defaults() -> dict[str, Any]:
    """The first choice of every question in cookiecutter.json."""
    data: dict[str, Any] = json.loads(COOKIECUTTER_JSON.read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue
        out[key] = value[0] if isinstance(value, list) else value
    return out


def options(context: Mapping[str, Any]) -> dict[str, Any]:
    """The effective answers for a combo (defaults overlaid with its context)."""
    merged = defaults()
    merged.update(context)
    return merged


@dataclass
class Baked:
    combo_id: str
    path: Path
    options: dict[str, Any]
    package: str
    scratch: Path
    env: dict[str, str] = field(default_factory=dict)


def bake(context: Mapping[str, Any], output_dir: Path) -> Path:
    """Render the template with the cookiecutter API; return the project dir."""
    from cookiecutter.main import cookiecutter

    output_dir.mkdir(parents=True, exist_ok=True)
    # An isolated cookiecutter config: replay files of parallel bakes must not
    # collide in the user's home.
    config = output_dir / "cookiecutter-config.yaml"
    config.write_text(
        f'cookiecutters_dir: "{output_dir / "cookiecutters"}"\n'
        f'replay_dir: "{output_dir / "replay"}"\n',
        encoding="utf-8",
    )
    project = cookiecutter(
        str(ROOT),
        no_input=True,
        extra_context=dict(context),
        output_dir=str(output_dir / "out"),
        config_file=str(config),
        accept_hooks=True,
    )
    return Path(project)


def find_package(project: Path) -> str:
    src = project / "src"
    pkgs = sorted(p.name for p in src.iterdir() if (p / "__init__.py").is_file())
    assert len(pkgs) == 1, f"expected exactly one package under src/, found {pkgs}"
    return pkgs[0]


def rendered_files(project: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(project):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        base = Path(dirpath)
        out.extend(base / d for d in dirnames)
        out.extend(base / f for f in filenames)
    return sorted(out)


def unrendered(project: Path) -> list[str]:
    """Every place holding template syntax that should have been rendered."""
    problems: list[str] = []
    for path in rendered_files(project):
        rel = path.relative_to(project).as_posix()
        for marker in (*FORBIDDEN, "{{"):
            if marker in rel:
                problems.append(f"path {rel!r} holds {marker!r}")
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary file
        markers = list(FORBIDDEN)
        if not any(fnmatch(rel, pattern) for pattern in BRACES_ALLOWED):
            markers.append("{{")
        for lineno, line in enumerate(text.splitlines(), 1):
            for marker in markers:
                if marker in line:
                    problems.append(f"{rel}:{lineno}: {marker!r} in {line.strip()[:120]!r}")
    return problems


def expected_paths(opts: Mapping[str, Any], package: str) -> tuple[list[str], list[str]]:
    """(paths that must exist, paths that must not) for these answers."""
    present = [
        "pyproject.toml",
        "README.md",
        "Makefile",
        "alembic.ini",
        ".env.example",
        ".env",
        ".gitignore",
        ".pre-commit-config.yaml",
        "uv.lock",
        "migrations/env.py",
        "migrations/versions",
        f"src/{package}/__init__.py",
        f"src/{package}/main.py",
        f"src/{package}/core",
        f"src/{package}/core/jobs",
        "migrations/versions/0009_jobs.py",
        "migrations/versions/0016_jobs_trace.py",
        "tests/conftest.py",
    ]
    absent = [".template"]
    docker = [
        "Dockerfile",
        "compose.yaml",
        "deploy/compose/Caddyfile",
        "deploy/kubernetes/base/kustomization.yaml",
        "deploy/kubernetes/overlays/production/kustomization.yaml",
    ]
    (present if opts["use_docker"] in (True, "True", "true", "yes", "y") else absent).extend(docker)
    ai = [
        f"src/{package}/ai",
        "tests/ai",
        "migrations/versions/0004_ai.py",
        "migrations/versions/0007_ai_reservations.py",
        "migrations/versions/0014_ai_subject.py",
        "migrations/versions/0018_ai_conversations.py",
    ]
    (present if is_on(opts.get("use_ai")) else absent).extend(ai)
    # conversations need an owner: with accounts only (the tables are there either way)
    conversations = [
        f"src/{package}/ai/conversations.py",
        "tests/ai/test_conversations.py",
        "tests/ai/test_conversation_tools.py",
    ]
    both = is_on(opts.get("use_ai")) and is_on(opts.get("use_auth"))
    (present if both else absent).extend(conversations)
    ci = opts["ci"]
    (present if ci == "github" else absent).extend([".github", ".github/dependabot.yml"])
    (present if ci == "gitlab" else absent).extend([".gitlab-ci.yml", "renovate.json"])
    git = opts.get("init_git", True) in (True, "True", "true", "yes", "y")
    (present if git else absent).append(".git")
    # the template is baked from its git checkout, so the hook records it for cruft
    present.append(".cruft.json")
    admin = [f"src/{package}/admin", "tests/admin"]
    (present if is_on(opts.get("use_admin")) else absent).extend(admin)
    if opts["license"] != "Proprietary":
        present.append("LICENSE")
    auth = [
        f"src/{package}/auth",
        "tests/auth",
        "migrations/versions/0002_auth.py",
        "migrations/versions/0005_auth_sessions.py",
        "migrations/versions/0010_auth_purge.py",
    ]
    (present if is_on(opts.get("use_auth")) else absent).extend(auth)
    payments = [
        f"src/{package}/payments",
        "tests/payments",
        "migrations/versions/0003_payments.py",
        "migrations/versions/0008_payments_order.py",
    ]
    (present if is_on(opts.get("use_payments")) else absent).extend(payments)
    orgs = [
        f"src/{package}/orgs",
        "tests/orgs",
        "migrations/versions/0011_orgs.py",
        "migrations/versions/0012_orgs_rls.py",
        "migrations/versions/0020_orgs_rls_once.py",
        "migrations/versions/0015_org_api_keys.py",
    ]
    (present if is_on(opts.get("use_orgs")) else absent).extend(orgs)
    billed = [  # the organization pays: with both payments and orgs
        f"src/{package}/payments/orgs.py",
        "tests/payments/test_orgs_billing.py",
        "migrations/versions/0013_payments_orgs.py",
        "migrations/versions/0017_payments_rls.py",
        "tests/payments/test_orgs_rls.py",
    ]
    both = is_on(opts.get("use_payments")) and is_on(opts.get("use_orgs"))
    (present if both else absent).extend(billed)
    ai_orgs = [f"src/{package}/ai/orgs.py", "tests/ai/test_orgs.py"]
    both = is_on(opts.get("use_ai")) and is_on(opts.get("use_orgs"))
    (present if both else absent).extend(ai_orgs)
    ai_payments = [f"src/{package}/ai/payments_tools.py", "tests/ai/test_payments_tools.py"]
    both = is_on(opts.get("use_ai")) and is_on(opts.get("use_payments"))
    (present if both else absent).extend(ai_payments)
    metered = [  # AI overage billed through Stripe's meters: with both AI and payments
        f"src/{package}/ai/billing.py",
        f"src/{package}/ai/meter.py",
        "tests/ai/test_metered.py",
        "migrations/versions/0019_ai_meter.py",
    ]
    both = is_on(opts.get("use_ai")) and is_on(opts.get("use_payments"))
    (present if both else absent).extend(metered)
    all_three = both and is_on(opts.get("use_orgs"))
    (present if all_three else absent).append("tests/ai/test_metered_orgs.py")
    return present, absent


def is_on(value: Any) -> bool:
    """Cookiecutter booleans arrive as bool, or as text when given on the command line."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "on"}
    return bool(value)


# What mentions the auth module in a rendered project: its package, its settings,
# its tests folder. A project without auth must hold none of these.
AUTH_MENTION = re.compile(r"\.auth\b|\bauth\.|\bauth/|AUTH_|use_auth")


# What mentions the admin module: its package, SQLAdmin, the browser test's tools.
# The module's package path is lowercase (`Role.ADMIN`, a role, is not the module).
ADMIN_MENTION = re.compile(r"(?i:sqladmin|playwright|chromium|use_admin)|\.admin\b|\badmin\.")


# Files that record every answer, the "no" ones included (cruft's record of the
# generation): naming a dropped module there is right.
ANSWER_RECORDS = {".cruft.json"}


def mentions(project: Path, pattern: re.Pattern[str]) -> list[str]:
    """file:line for every line of a rendered text file that matches pattern."""
    found: list[str] = []
    for path in rendered_files(project):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        rel = path.relative_to(project).as_posix()
        if rel in ANSWER_RECORDS:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                found.append(f"{rel}:{lineno}: {line.strip()[:120]}")
    return found


def module_traces(project: Path, opts: Mapping[str, Any]) -> list[str]:
    """Places that mention a module whose option is off."""
    words = [w for option, ws in MODULE_WORDS.items() if not is_on(opts.get(option)) for w in ws]
    problems: list[str] = []
    for path in rendered_files(project):
        rel = path.relative_to(project).as_posix()
        if rel == ".git" or rel.startswith(".git/") or rel in ANSWER_RECORDS:
            continue
        text = rel.lower()
        if path.is_file():
            try:
                text += "\n" + path.read_text(encoding="utf-8").lower()
            except UnicodeDecodeError:
                continue
        problems.extend(f"{rel}: mentions {word!r}" for word in words if word in text)
    return problems


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        out[key] = value.strip().strip("'\"")
    return out


_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==[^\s,;=<>!~]+(\s*;.*)?$")


def unpinned_dependencies(pyproject: Path) -> list[str]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    problems: list[str] = []
    lists: dict[str, list[Any]] = {
        "project.dependencies": data.get("project", {}).get("dependencies", [])
    }
    for name, deps in data.get("project", {}).get("optional-dependencies", {}).items():
        lists[f"project.optional-dependencies.{name}"] = deps
    for name, deps in data.get("dependency-groups", {}).items():
        lists[f"dependency-groups.{name}"] = deps
    for where, deps in lists.items():
        for dep in deps:
            if isinstance(dep, dict):  # {include-group = "..."}
                continue
            if not _PINNED.match(str(dep).strip()):
                problems.append(f"{where}: {dep!r}")
    if not lists["project.dependencies"]:
        problems.append("project.dependencies is empty")
    return problems


def venv_mismatches(pyproject: Path) -> list[str]:
    """Pinned requirements of a project that the running venv does not satisfy."""
    from importlib import metadata

    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    deps = list(data.get("project", {}).get("dependencies", []))
    for group in data.get("dependency-groups", {}).values():
        deps.extend(d for d in group if isinstance(d, str))
    problems: list[str] = []
    for dep in deps:
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?==([^\s;]+)", dep)
        if not match:
            continue  # reported by test_dependencies_pinned
        name, extras, version = match.groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{dep}: not installed")
            continue
        if installed != version:
            problems.append(f"{dep}: {installed} installed")
        for extra in (extras or "").split(","):
            extra = extra.strip()
            if extra and extra not in (metadata.metadata(name).get_all("Provides-Extra") or []):
                problems.append(f"{dep}: {name} has no extra {extra!r}")
    return problems


def tool(name: str) -> str:
    """A command installed in the shared venv (validators ship their binaries in wheels)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not in the shared venv: make install"
    return str(path)


def run_tool(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=cwd,
        env=tool_env(env),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for tools run inside a baked project."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "COV_", "VIRTUAL_ENV"))
        and k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "TEST_DATABASE_URL",
            "TEST_REDIS_URL",
            "SECRET_KEY",
            "ENVIRONMENT",
            "PYTHONPATH",
            "MAKEFLAGS",
            "MAKELEVEL",
        }
    }
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    if extra:
        env.update(extra)
    return env


def run(
    project: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` with the shared venv's interpreter in project."""
    return run_tool(project, sys.executable, "-m", *args, env=env)


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    cmd = " ".join(str(a) for a in proc.args)
    return (
        f"`{cmd}` exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-20000:]}"
    )


def check(project: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    proc = run(project, *args, env=env)
    assert proc.returncode == 0, describe(proc)
    return proc.stdout


def migration_checks(project: Path, database_url: str) -> None:
    """upgrade head, exactly one head, no drift, downgrade base."""
    env = {"DATABASE_URL": database_url, "ENVIRONMENT": "test"}
    check(project, "alembic", "upgrade", "head", env=env)
    heads = check(project, "alembic", "heads", env=env)
    head_lines = [line for line in heads.splitlines() if "(head)" in line]
    assert len(head_lines) == 1, f"expected exactly one Alembic head, got:\n{heads}"
    check(project, "alembic", "check", env=env)
    check(project, "alembic", "downgrade", "base", env=env)


# --- PostgreSQL: one fresh database per bake ---------------------------------


def _admin_dsn(url: str) -> str:
    """postgresql+asyncpg://... -> postgresql://... for asyncpg.connect."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def with_database(url: str, name: str) -> str:
    """The same server URL with another path (a database name, or a Redis db number)."""
    head, sep, tail = url.partition("://")
    rest = tail.split("?", 1)
    netloc = rest[0].split("/", 1)[0]
    query = f"?{rest[1]}" if len(rest) > 1 else ""
    return f"{head}{sep}{netloc}/{name}{query}"


def _admin(url: str, sql: str) -> None:
    import asyncio

    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(_admin_dsn(url), timeout=30)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def create_database(server_url: str, prefix: str) -> tuple[str, str]:
    """Create a uniquely named database; return (name, its URL)."""
    name = re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{uuid.uuid4().hex[:8]}".lower())[:60]
    _admin(server_url, f'CREATE DATABASE "{name}"')
    return name, with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url_for_worker(url: str | None) -> str | None:
    """Give each xdist worker its own Redis database number (1, 2, ...)."""
    if not url:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    number = int(worker.removeprefix("gw") or 0) + 1 if worker.startswith("gw") else 1
    return with_database(url, str(number % 16))
