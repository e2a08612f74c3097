"""Jinja stays where it is needed: a known, short list of files holds conditionals."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "{{cookiecutter.project_slug}}"
HOOKS = ROOT / "hooks"

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


# --- free-text answers: each written escaped for the file type it lands in ---

FREE_TEXT = ("project_name", "description", "author_name", "author_email", "domain_name")
ANSWER = re.compile(r"\{\{-?\s*cookiecutter(?:\.|\[['\"])(" + "|".join(FREE_TEXT) + r")\b.*?-?\}\}")
PYTHON_FORM = "{{ cookiecutter.%s.encode('unicode_escape').decode() | replace('\"', '\\\\x22') }}"
TOML_FORM = "{{ cookiecutter.%s | replace('\\\\', '\\\\\\\\') | replace('\"', '\\\\\"') }}"
# Where an answer may land as typed: plain text, for people (the pre-gen hook
# keeps each answer to one printable line, and HTML brackets out of the name
# and description).
AS_TYPED = {
    "README.md": {"project_name", "description"},
    "LICENSE": {"author_name"},
}
# domain_name matches a strict pattern (letters, digits, hyphens, dots).
ENV_FORM = "{{ cookiecutter.domain_name | lower }}"
PLAIN_FORM = "{{ cookiecutter.%s }}"


def answer_expressions() -> list[tuple[str, str, str]]:
    """(file, question, expression) for every free-text answer in the project template."""
    found = []
    for path in template_files():
        rel = str(path.relative_to(PROJECT))
        if rel in COPIED_AS_IS:
            continue
        for match in ANSWER.finditer(path.read_text(errors="replace")):
            found.append((rel, match.group(1), match.group(0)))
    return found


def test_free_text_answers_are_escaped_for_their_file_type() -> None:
    """A new place for an answer must pick the right escaping (or be added here, reviewed)."""
    found = answer_expressions()
    assert {q for _, q, _ in found} == set(FREE_TEXT)
    for rel, question, expression in found:
        if rel.endswith(".py"):
            assert expression == PYTHON_FORM % question, (rel, expression)
        elif rel.endswith(".toml"):
            assert expression == TOML_FORM % question, (rel, expression)
        elif rel == ".env.example" or rel.startswith("deploy/kubernetes/"):
            # lowercase, as Kubernetes host names are; DOMAIN's pattern keeps it a plain
            # YAML scalar (letters, digits, hyphens, dots)
            assert expression == ENV_FORM, (rel, expression)
        else:
            assert question in AS_TYPED.get(rel, set()), (
                f"{rel}: {expression} lands in a file type with no escaping rule; write it "
                "escaped (see hooks/pre_gen_project.py) and add the rule here"
            )
            assert expression == PLAIN_FORM % question, (rel, expression)


def render(rel: str, answers: dict[str, str]) -> str:
    from cookiecutter.environment import StrictEnvironment

    context = {
        k: v[0] if isinstance(v, list) else v
        for k, v in json.loads((ROOT / "cookiecutter.json").read_text()).items()
    }
    context.update(project_slug="acme", package_name="acme", **answers)
    env = StrictEnvironment(context={"cookiecutter": context}, keep_trailing_newline=True)
    return env.from_string((PROJECT / rel).read_text()).render(cookiecutter=context)


def load_pre_gen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "pre_gen_for_templates", HOOKS / "pre_gen_project.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PACKAGE = "src/{{cookiecutter.package_name}}"
INJECTION = 'x", **__import__("os").system("touch PWNED") or {}, y="'


def longest(text: str, budget: int, pad: str) -> str:
    """text padded with `pad` to exactly `budget` characters as a Python string."""
    pre_gen = load_pre_gen()
    for filler in (pad, "x"):
        while len(pre_gen.python_escaped(text + filler)) <= budget:
            text += filler
    assert len(pre_gen.python_escaped(text)) == budget
    return text


@pytest.mark.parametrize(
    "answers",
    [
        {
            "project_name": 'Bob\'s "Best" \\ SaaS }} %} #}',
            "description": INJECTION,
            "author_name": "Se\N{LATIN SMALL LETTER A WITH ACUTE}n O'Brien-\u00dcnal (Estate)",
            "author_email": "o'brien+saas@Example.com",
        },
        {
            "project_name": longest(
                "Caf\N{LATIN SMALL LETTER E WITH ACUTE} \u65e5\u672c \N{GRINNING FACE} ",
                83,
                "\N{EN DASH}",
            ),
            "description": longest(
                "\"\"\" \\N{BULLET} \\x00 ''' \\ \N{RIGHT SINGLE QUOTATION MARK} ",
                77,
                "\N{GRINNING FACE}",
            ),
            "author_name": "Zo\N{LATIN SMALL LETTER E WITH DIAERESIS} \u03a9mega",
            "author_email": "a@example.com",
        },
    ],
    ids=["quotes-injection", "non-ascii-longest"],
)
def test_answers_render_to_valid_files_that_hold_them(answers: dict[str, str]) -> None:
    """Render the files with answers the hook accepts; each parses back to the answers."""
    assert load_pre_gen().validate({**answers, **VALID_REST}) == []
    init = ast.parse(render(f"{PACKAGE}/__init__.py", answers))
    doc = ast.get_docstring(init, clean=False)
    assert doc == f"{answers['project_name']}\n\n{answers['description']}\n"
    main = render(f"{PACKAGE}/main.py", answers)
    calls = [
        node
        for node in ast.walk(ast.parse(main))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "FastAPI"
    ]
    (call,) = calls
    keywords = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(keywords["title"]) == answers["project_name"]
    assert ast.literal_eval(keywords["description"]) == answers["description"]
    assert max(len(line) for line in main.splitlines()) <= 100  # ruff's line-length
    project = tomllib.loads(render("pyproject.toml", answers))["project"]
    assert project["description"] == answers["description"]
    assert project["authors"] == [
        {"name": answers["author_name"], "email": answers["author_email"]}
    ]


# The other answers the hook needs to say yes.
VALID_REST = {
    "project_slug": "acme",
    "package_name": "acme",
    "domain_name": "example.com",
    "python_version": "3.12",
    "database": "postgresql",
    "ci": "github",
    "license": "MIT",
}


def test_python_line_budgets_are_the_lines_in_main_py() -> None:
    """The hook's length limits are what fits on the template's lines of main.py."""
    pre_gen = load_pre_gen()
    main = (PROJECT / PACKAGE / "main.py").read_text()
    for question, line in pre_gen.PYTHON_LINES.items():
        template_line = line.replace('""', f'"{PYTHON_FORM % question}"')
        assert f"\n{template_line}\n" in main, template_line
