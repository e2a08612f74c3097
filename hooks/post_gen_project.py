"""Finish the generated project: drop unselected options, pin, lock, write secrets.

Cookiecutter renders this file and runs it inside the new project folder; a
non-zero exit makes cookiecutter delete the half-made project. It needs no
network: the pins come from `.template/pins.toml` and the full lock is the
template's ready-made lock for the selected modules (`.template/locks/`, made
by scripts/lock.py). Once the project is complete it writes `.cruft.json` (when
the template's commit is known) and, with `init_git`, makes a first git commit;
a git failure is a warning, never a reason to delete the project. Jinja
appears only inside the string literal below, so the file imports as plain
Python and each step is unit-tested directly.

Adding a module means adding its folders to the template, one `Option` row to
`OPTIONS` below (its paths, requirements and migration), its pins, and running
`make locks` for the new combinations of modules.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTEXT = r"""{{ cookiecutter | tojson }}"""

PINS_FILE = ".template/pins.toml"
LOCKS_DIR = ".template/locks"
# The project name the template's locks are made with (scripts/lock.py); the
# hook puts the project's slug in its place.
LOCK_PLACEHOLDER = "cookiecutter-fastapi-saas-lock-placeholder"


@dataclass(frozen=True)
class Option:
    """What one yes/no answer brings into the project."""

    name: str  # the cookiecutter.json question; "core" is always on
    paths: tuple[str, ...] = ()  # removed when the option is off; "{package}" is expanded
    requires: tuple[str, ...] = ()  # runtime requirements, "name" or "name[extra]"
    dev_requires: tuple[str, ...] = ()  # dev-group requirements
    migration: str | None = None  # its Alembic revision file; chained in table order
    # Other options this row needs as well: its paths and migration stay only when all are on
    # (what one module brings when another is there too).
    needs: tuple[str, ...] = ()


OPTIONS: tuple[Option, ...] = (
    Option(
        "core",
        requires=(
            "fastapi",
            "uvicorn[standard]",
            "sqlalchemy[asyncio]",
            "aiosqlite",
            "asyncpg",
            "alembic",
            "pydantic",
            "pydantic-settings",
            "redis",
            "structlog",
            "limits",
            "aiosmtplib",
            "taskiq",
            "taskiq-redis",
            "croniter",
        ),
        dev_requires=(
            "pytest",
            "pytest-asyncio",
            "httpx",
            "asgi-lifespan",
            "ruff",
            "mypy",
            "pre-commit",
            "uv",
            "schemathesis",
            "types-croniter",
        ),
        migration="migrations/versions/0001_baseline.py",
    ),
    Option(
        "use_auth",
        paths=("src/{package}/auth", "tests/auth"),
        requires=(
            "authlib",
            "joserfc",
            "pwdlib[argon2]",
            "email-validator",
            "python-multipart",
            "jinja2",
        ),
        dev_requires=("aiosmtpd",),
        migration="migrations/versions/0002_auth.py",
    ),
    # The AI module's tests of its seam with accounts go with the auth module.
    Option("use_auth", paths=("tests/ai/test_signed_in.py",)),
    Option(
        "use_payments",
        paths=("src/{package}/payments", "tests/payments"),
        requires=("stripe", "httpx"),
        migration="migrations/versions/0003_payments.py",
    ),
    Option(
        "use_ai",
        paths=("src/{package}/ai", "tests/ai"),
        requires=("openai[aiohttp]", "aiohttp", "httpx2", "jsonschema"),
        dev_requires=("types-jsonschema",),
        migration="migrations/versions/0004_ai.py",
    ),
    Option("use_docker", paths=("Dockerfile", ".dockerignore", "compose.yaml", "deploy")),
    Option(
        "use_admin",
        paths=("src/{package}/admin", "tests/admin"),
        requires=("sqladmin", "itsdangerous"),
        dev_requires=("playwright",),
    ),
    # The admin's views of an optional module go with that module (the lines of
    # admin/registry.py that import them are Jinja conditionals on it).
    Option(
        "use_payments",
        paths=(
            "src/{package}/admin/views_payments.py",
            "tests/admin/test_views_payments.py",
            "tests/ai/test_plan_quota.py",
        ),
    ),
    Option("use_ai", paths=("src/{package}/admin/views_ai.py", "tests/admin/test_views_ai.py")),
    Option(
        "use_ai",
        needs=("use_payments",),
        paths=("src/{package}/admin/views_ai_billing.py", "tests/admin/test_views_ai_billing.py"),
    ),
    # Migrations added after the first release: new rows at the end (chained in table order).
    # Access tokens bound to their session and the account's security stamp (issue 13).
    Option("use_auth", migration="migrations/versions/0005_auth_sessions.py"),
    Option("use_payments", migration="migrations/versions/0008_payments_order.py"),
    Option("use_ai", migration="migrations/versions/0007_ai_reservations.py"),
    # Background jobs: the outbox table (issue 14).
    Option("core", migration="migrations/versions/0009_jobs.py"),
    # Indexes for the daily purge of expired and revoked refresh tokens (issue 14).
    Option("use_auth", migration="migrations/versions/0010_auth_purge.py"),
    # Organizations, roles and invitations (issue 15).
    Option(
        "use_orgs",
        paths=("src/{package}/orgs", "tests/orgs"),
        migration="migrations/versions/0011_orgs.py",
    ),
    # Row-level security on the org-scoped tables (PostgreSQL), and the orgs admin views.
    Option(
        "use_orgs",
        paths=("src/{package}/admin/views_orgs.py", "tests/admin/test_views_orgs.py"),
        migration="migrations/versions/0012_orgs_rls.py",
    ),
    # Observability (issue 17): installed always, imported only when switched on; a job
    # keeps the trace of the request that enqueued it.
    Option(
        "core",
        requires=(
            "opentelemetry-api",
            "opentelemetry-sdk",
            "opentelemetry-exporter-otlp-proto-http",
            "opentelemetry-instrumentation-redis",
            "opentelemetry-instrumentation-httpx",
            "opentelemetry-instrumentation-aiohttp-client",
            "prometheus-client",
            "sentry-sdk",
        ),
        migration="migrations/versions/0016_jobs_trace.py",
    ),
    # Payments bill the organization (issue 15): its seam files, and the customers,
    # subscriptions and checkouts moved from the user to the organization.
    Option(
        "use_payments",
        needs=("use_orgs",),
        paths=("src/{package}/payments/orgs.py", "tests/payments/test_orgs_billing.py"),
        migration="migrations/versions/0013_payments_orgs.py",
    ),
    # AI pools per organization (issue 15): each ledger row names the totals it was charged to;
    # the org-scoped AI routes and their tests go with the orgs module.
    Option("use_ai", migration="migrations/versions/0014_ai_subject.py"),
    Option("use_orgs", paths=("src/{package}/ai/orgs.py", "tests/ai/test_orgs.py")),
    # API keys that belong to an organization (issue 15).
    Option("use_orgs", migration="migrations/versions/0015_org_api_keys.py"),
    # The AI tool that reads the caller's plan goes with the payments module (issue 16).
    Option(
        "use_payments",
        paths=("src/{package}/ai/payments_tools.py", "tests/ai/test_payments_tools.py"),
    ),
    # AI conversations (issue 16): the tables always, the routes with accounts (an owner).
    Option(
        "use_ai",
        needs=("use_auth",),
        paths=(
            "src/{package}/ai/conversations.py",
            "tests/ai/test_conversations.py",
            "tests/ai/test_conversation_tools.py",
        ),
    ),
    Option("use_ai", migration="migrations/versions/0018_ai_conversations.py"),
    # Row-level security on the organization's billing tables (issue 15).
    Option(
        "use_payments",
        needs=("use_orgs",),
        paths=("tests/payments/test_orgs_rls.py",),
        migration="migrations/versions/0017_payments_rls.py",
    ),
    # Metered AI overage reported to Stripe's billing meters (issue 16): with AI and payments.
    Option(
        "use_ai",
        needs=("use_payments",),
        paths=(
            "src/{package}/ai/billing.py",
            "src/{package}/ai/meter.py",
            "tests/ai/test_metered.py",
        ),
        migration="migrations/versions/0019_ai_meter.py",
    ),
    Option("use_ai", needs=("use_payments", "use_orgs"), paths=("tests/ai/test_metered_orgs.py",)),
    # The invitations policy in 0012's form made to read its settings once per statement.
    Option("use_orgs", migration="migrations/versions/0020_orgs_rls_once.py"),
)

# CI provider -> its files; the others' files are removed.
CI_PATHS: dict[str, tuple[str, ...]] = {
    "github": (".github",),  # workflows and dependabot.yml
    "gitlab": (".gitlab-ci.yml", "renovate.json"),
}

DEPENDABOT = ".github/dependabot.yml"
# Option -> the Dependabot ecosystems that only make sense with it.
DEPENDABOT_ECOSYSTEMS: dict[str, tuple[str, ...]] = {"use_docker": ("docker",)}


class HookError(Exception):
    """A failure with a message meant for the person generating the project."""


def is_on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "on"}
    return bool(value)


def selected(answers: Mapping[str, Any]) -> list[Option]:
    return [
        o
        for o in OPTIONS
        if (o.name == "core" or is_on(answers.get(o.name)))
        and all(is_on(answers.get(name)) for name in o.needs)
    ]


def remove(root: Path, paths: Iterable[str], package: str) -> None:
    for rel in paths:
        path = root / rel.format(package=package)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_unselected(root: Path, answers: Mapping[str, Any]) -> None:
    package = str(answers["package_name"])
    keep = selected(answers)
    for option in OPTIONS:
        if option not in keep:
            remove(root, option.paths, package)
            if option.migration:
                remove(root, [option.migration], package)
    ci = str(answers.get("ci", "none"))
    for provider, paths in CI_PATHS.items():
        if provider != ci:
            remove(root, paths, package)


def drop_dependabot_entries(text: str, ecosystems: Iterable[str]) -> str:
    """Remove the `updates:` entries of these ecosystems (each starts `  - package-ecosystem:`)."""
    drop = {f'  - package-ecosystem: "{e}"' for e in ecosystems}
    head, *entries = re.split(r"(?m)^(?=  - package-ecosystem: )", text)
    kept = [e for e in entries if e.splitlines()[0].rstrip() not in drop]
    return (head + "".join(kept)).rstrip("\n") + "\n"


def trim_dependabot(root: Path, answers: Mapping[str, Any]) -> None:
    path = root / DEPENDABOT
    if not path.is_file():
        return
    keep = {o.name for o in selected(answers)}
    off = [e for name, eco in DEPENDABOT_ECOSYSTEMS.items() if name not in keep for e in eco]
    if off:
        path.write_text(drop_dependabot_entries(path.read_text(), off))


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower()


def pinned(requirements: Iterable[str], pins: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for req in requirements:
        name = requirement_name(req)
        if name not in pins:
            raise HookError(f"no pinned version for {name!r} in {PINS_FILE}")
        line = f"{req}=={pins[name]}"
        if line not in out:
            out.append(line)
    return sorted(out, key=str.lower)


def toml_list(items: list[str]) -> str:
    return "[\n" + "".join(f'    "{item}",\n' for item in items) + "]"


def read_pins(path: Path) -> dict[str, str]:
    try:
        return {k.lower(): v for k, v in tomllib.loads(path.read_text())["pins"].items()}
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise HookError(f"cannot read the pinned versions in {PINS_FILE}: {exc}") from exc


def pin_pyproject(text: str, options: Iterable[Option], pins: Mapping[str, str]) -> str:
    """Fill `dependencies = []` and the `dev = []` group of a pyproject text with pins."""
    options = list(options)
    runtime = pinned((r for o in options for r in o.requires), pins)
    dev = pinned((r for o in options for r in o.dev_requires), pins)
    for marker, items in (("dependencies = []", runtime), ("dev = []", dev)):
        pattern = re.compile(rf"^{re.escape(marker)}$", re.MULTILINE)
        if len(pattern.findall(text)) != 1:
            raise HookError(f"pyproject.toml has no single {marker!r} line to pin into")
        text = pattern.sub(lambda _m, i=items, k=marker: k.replace("[]", toml_list(i)), text)
    return text


def write_pins(root: Path, answers: Mapping[str, Any]) -> None:
    """Pin pyproject.toml from pins.toml (`.template/` goes once the lock is kept)."""
    pins = read_pins(root / PINS_FILE)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pin_pyproject(pyproject.read_text(), selected(answers), pins))


def modules() -> list[Option]:
    """Options that bring requirements besides core: each combination has its own lock."""
    return [o for o in OPTIONS if o.name != "core" and (o.requires or o.dev_requires)]


def lock_key(names: Iterable[str]) -> str:
    """The lock file's name: "core" plus the selected modules, in table order."""
    chosen = set(names)
    return "+".join(["core", *(o.name for o in modules() if o.name in chosen)])


def rename_in_lock(text: str, old: str, new: str) -> str:
    """Give the project in a uv.lock its real name, keeping uv's order of packages."""
    head, *blocks = text.split("\n[[package]]\n")
    ours = [i for i, b in enumerate(blocks) if b.startswith(f'name = "{old}"\n')]
    if len(ours) != 1:
        raise HookError(f"the lock holds no single package named {old!r}")
    blocks[ours[0]] = blocks[ours[0]].replace(f'name = "{old}"', f'name = "{new}"', 1)
    blocks[-1] = blocks[-1].rstrip("\n")
    blocks.sort(key=lambda b: b.split("\n", 1)[0].removeprefix("name = ").strip('"'))
    return "\n[[package]]\n".join([head, *blocks]) + "\n"


def keep_lock(root: Path, answers: Mapping[str, Any]) -> None:
    """Keep the template's lock for the selected modules as uv.lock; drop `.template/`."""
    key = lock_key(o.name for o in selected(answers))
    source = root / LOCKS_DIR / f"{key}.lock"
    try:
        text = source.read_text()
    except OSError as exc:
        raise HookError(f"the template has no lock for {key!r} ({LOCKS_DIR}/{key}.lock)") from exc
    slug = str(answers["project_slug"])
    (root / "uv.lock").write_text(rename_in_lock(text, LOCK_PLACEHOLDER, slug))
    shutil.rmtree(root / ".template")


REVISION = re.compile(r'^revision(?:: str)? = "([^"]+)"$', re.MULTILINE)
DOWN_REVISION = re.compile(r"^down_revision(?:: .+?)? = .+$", re.MULTILINE)


def chain_migrations(root: Path, answers: Mapping[str, Any]) -> None:
    """Link the kept options' migrations in table order so there is exactly one head."""
    previous: str | None = None
    for option in selected(answers):
        if not option.migration:
            continue
        path = root / option.migration
        text = path.read_text()
        match = REVISION.search(text)
        if not match or not DOWN_REVISION.search(text):
            raise HookError(f"{option.migration} has no revision/down_revision line")
        down = "None" if previous is None else f'"{previous}"'
        text = DOWN_REVISION.sub(f"down_revision: str | None = {down}", text, count=1)
        path.write_text(text)
        previous = match.group(1)


def write_env(root: Path) -> str:
    """Write .env (git-ignored) from .env.example with a fresh SECRET_KEY.

    The file is created with mode 0600 (os.open with the mode, never chmod after
    writing), so the secret is never readable by others, not even for a moment.
    An existing .env (regenerating over a project with `cookiecutter -f`) holds
    the user's own secrets: it is kept as it is, and so is anything, even a
    dangling symlink, that sits at that path. Returns a line to show, or "".
    """
    example = (root / ".env.example").read_text()
    key = secrets.token_urlsafe(48)
    text, count = re.subn(r"^SECRET_KEY=.*$", f"SECRET_KEY={key}", example, flags=re.MULTILINE)
    if count != 1:
        raise HookError(".env.example has no single SECRET_KEY= line")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(root / ".env", flags, 0o600)
    except FileExistsError:
        return "Kept the existing .env (its SECRET_KEY and settings are unchanged)."
    with os.fdopen(fd, "w", encoding="utf-8") as env:
        env.write(text)
    return ""


# ---- .cruft.json: lets `cruft check/diff/update` follow the template ----------
# `cruft create` writes .cruft.json itself after this hook. For a plain
# `cookiecutter` run the hook writes a compatible one when the template came
# from a git checkout (its commit is then known without any network).
ABBREVIATIONS = {
    "gh:": "https://github.com/{}.git",
    "gl:": "https://gitlab.com/{}.git",
    "bb:": "https://bitbucket.org/{}",
}
# cookiecutter's run-time keys that say where this machine keeps things
MACHINE_KEYS = ("_output_dir", "_repo_dir", "_checkout", "_replay_dir")


def template_url(template: str, repo_dir: str) -> str:
    for prefix, url in ABBREVIATIONS.items():
        if template.startswith(prefix):
            return url.format(template.removeprefix(prefix))
    if "://" in template or template.startswith("git@"):
        return template
    return str(Path(repo_dir or template).resolve())  # a local clone


def git_output(args: list[str], cwd: Path | str) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cruft_state(answers: Mapping[str, Any]) -> dict[str, Any] | None:
    """What `cruft create` would have written, or None when the template's commit is unknown."""
    if "_commit" in answers:
        return None  # generated by cruft, which writes .cruft.json itself
    repo_dir = str(answers.get("_repo_dir") or "")
    if repo_dir and not Path(repo_dir).is_absolute():
        # cookiecutter gives it relative to where it was started; the hook runs elsewhere
        repo_dir = str(Path(os.environ.get("PWD", "/nonexistent")) / repo_dir)
    if not repo_dir or not Path(repo_dir).is_dir():
        return None
    commit = git_output(["rev-parse", "HEAD"], repo_dir)
    top = git_output(["rev-parse", "--show-toplevel"], repo_dir)
    if not commit or not top or Path(top).resolve() != Path(repo_dir).resolve():
        return None  # not the root of a git checkout (a zip, a copied folder)
    url = template_url(str(answers.get("_template") or repo_dir), repo_dir)
    context = {k: v for k, v in answers.items() if k not in MACHINE_KEYS}
    context["_template"] = url
    context["_commit"] = commit
    return {
        "template": url,
        "commit": commit,
        "checkout": answers.get("_checkout") or None,
        "context": {"cookiecutter": context},
        "directory": None,
    }


def write_cruft_state(root: Path, answers: Mapping[str, Any]) -> None:
    state = cruft_state(answers)
    if state is not None:
        text = json.dumps(state, ensure_ascii=False, indent=2, separators=(",", ": "))
        (root / ".cruft.json").write_text(text + "\n")


# ---- init_git: a repository with a first commit ----------------------------


def git_commands(answers: Mapping[str, Any]) -> list[list[str]]:
    """The git commands the hook runs; identity from the answers, no local config needed."""
    identity = [
        "-c",
        f"user.name={answers.get('author_name') or 'Template'}",
        "-c",
        f"user.email={answers.get('author_email') or 'template@example.com'}",
        "-c",
        "commit.gpgsign=false",
    ]
    return [
        ["git", "init", "--quiet", "--initial-branch=main"],
        ["git", "add", "--all"],
        [
            "git",
            *identity,
            "commit",
            "--quiet",
            "--no-verify",
            "--message",
            "Initial commit from cookiecutter-fastapi-saas",
        ],
    ]


def init_git(root: Path, answers: Mapping[str, Any]) -> str:
    """Run the git commands when asked and possible; return one line saying what happened.

    Never raises: a git failure leaves the project in place (exit 0) with a warning.
    """
    if not is_on(answers.get("init_git", True)):
        return ""
    if "_commit" in answers:
        # cruft renders (create, and twice per diff/update) and writes .cruft.json
        # after this hook: a commit here would leave it out.
        return "cruft writes .cruft.json after this hook: skipped git init; commit it all yourself."
    if shutil.which("git") is None:
        return "git is not on PATH: skipped git init and the first commit."
    for command in git_commands(answers):
        try:
            done = subprocess.run(
                command, cwd=root, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"WARNING: `{' '.join(command[:2])}` failed ({exc}); the project is complete."
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()
            why = reason[-1] if reason else f"exit {done.returncode}"
            return f"WARNING: `{' '.join(command[:2])}` failed ({why}); the project is complete."
    return "Initialized a git repository with a first commit on branch main."


def next_steps(answers: Mapping[str, Any]) -> str:
    return (
        f"\nCreated {answers['project_slug']}. Next:\n"
        f"  cd {answers['project_slug']}\n"
        "  make install   # .venv with exactly the locked versions (uv.lock)\n"
        "  make dev       # migrations, then http://127.0.0.1:8000/docs on SQLite\n"
        "  make test\n"
        "Your SECRET_KEY is in .env (git-ignored); set real secrets in production.\n"
    )


def main(root: Path, answers: Mapping[str, Any]) -> str:
    """Finish the project; return a line to show the user, or ""."""
    remove_unselected(root, answers)
    trim_dependabot(root, answers)
    write_pins(root, answers)
    keep_lock(root, answers)
    chain_migrations(root, answers)
    env_line = write_env(root)
    write_cruft_state(root, answers)
    return env_line


if __name__ == "__main__":
    context = json.loads(CONTEXT)
    try:
        env_line = main(Path.cwd(), context)
    except (HookError, OSError) as exc:
        print(f"ERROR: could not finish the project: {exc}", file=sys.stderr)
        sys.exit(1)
    # After this point the project is complete: nothing below may fail it.
    try:
        git_line = init_git(Path.cwd(), context)
    except Exception as exc:  # a git problem must never cost the user the project
        git_line = f"WARNING: the git step failed ({exc}); the project is complete."
    for line in (env_line, git_line):
        if line:
            print(line)
    print(next_steps(context))
