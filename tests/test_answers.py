"""Free-text answers with quotes, backslashes, template syntax and non-ASCII text.

Bakes the template with answers a careless or hostile user might give and checks
that the project imports and holds the answers, its pyproject.toml parses, its
README and LICENSE show the text, ruff is clean, and nothing in an answer ran.
Cheap on purpose (bake, import, parse, ruff): the project's own suite is not run
here. What cookiecutter itself does with `{{ }}` in an answer is pinned down by
the tests at the end (see docs/options.md, "Free-text answers").
"""

from __future__ import annotations

import json
import stat
import sys
import tomllib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.environment import StrictEnvironment
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config, render_variable

import bake

pytestmark = pytest.mark.xdist_group("answers")

# Code that would create PWNED in the working directory if it ever ran: as
# Python (it closes the string it is in), and as Jinja.
INJECTION = 'x", **__import__("os").system("touch PWNED") or {}, y="'

CASES: dict[str, dict[str, Any]] = {
    "quotes-injection": {
        "project_name": 'Bob\'s "Best" \\ SaaS }} %} #}',
        "description": INJECTION,
        "author_name": "Se\N{LATIN SMALL LETTER A WITH ACUTE}n O'Brien-\u00dcnal (Estate)",
        "author_email": "o'brien+saas@example.com",
        "domain_name": "API.Example.COM",
        "license": "MIT",
    },
    "non-ascii-docstring": {
        "project_name": "Caf\N{LATIN SMALL LETTER E WITH ACUTE} \u65e5\u672c \N{GRINNING FACE}",
        # closes a docstring, escapes Python would read, confusables ruff flags
        "description": '""";open("PWNED","w")#\\N{BULLET}\\x00\N{EN DASH}\u2019',
        "author_name": "Zo\N{LATIN SMALL LETTER E WITH DIAERESIS} \u03a9mega \N{GRINNING FACE}",
        "author_email": "zoe@example.com",
        "domain_name": "api.example.com",
        "license": "BSD-3-Clause",
        "init_git": False,
        # one optional module is enough here: the answers land in core files
        "use_payments": False,
        "use_admin": False,
        "use_ai": False,
    },
}


class Crafted:
    def __init__(self, case: str, answers: dict[str, Any], path: Path) -> None:
        self.case, self.answers, self.path = case, answers, path
        self.package = bake.find_package(path)


@pytest.fixture(scope="module", params=sorted(CASES))
def crafted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Crafted:
    answers = CASES[request.param]
    base = tmp_path_factory.mktemp(f"answers-{request.param}")
    return Crafted(request.param, answers, bake.bake(answers, base))


IMPORT = """
import json, sys
import {package} as package
from {package}.main import app
json.dump(
    {{"doc": package.__doc__, "title": app.title, "description": app.description,
      "info": app.openapi()["info"]}},
    sys.stdout,
)
"""


def test_the_project_imports_holding_the_answers_and_nothing_ran(crafted: Crafted) -> None:
    proc = bake.run_tool(
        crafted.path,
        sys.executable,
        "-c",
        IMPORT.format(package=crafted.package),
        env={"PYTHONPATH": "src"},
    )
    assert proc.returncode == 0, bake.describe(proc)
    seen = json.loads(proc.stdout)
    name, description = crafted.answers["project_name"], crafted.answers["description"]
    assert seen["doc"] == f"{name}\n\n{description}\n"
    assert (seen["title"], seen["description"]) == (name, description)
    assert (seen["info"]["title"], seen["info"]["description"]) == (name, description)
    assert not list(crafted.path.parent.rglob("PWNED")), "an answer ran as code"


def test_pyproject_parses_and_holds_the_answers(crafted: Crafted) -> None:
    project = tomllib.loads((crafted.path / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["description"] == crafted.answers["description"]
    assert project["project"]["authors"] == [
        {"name": crafted.answers["author_name"], "email": crafted.answers["author_email"]}
    ]


def test_readme_and_license_show_the_text(crafted: Crafted) -> None:
    readme = (crafted.path / "README.md").read_text(encoding="utf-8").splitlines()
    assert readme[0] == f"# {crafted.answers['project_name']}"
    assert crafted.answers["description"] in readme
    license_text = (crafted.path / "LICENSE").read_text(encoding="utf-8")
    assert crafted.answers["author_name"] in license_text


def test_env_holds_the_domain_lowercased_and_is_private(crafted: Crafted) -> None:
    env = bake.read_env_file(crafted.path / ".env")
    domain = crafted.answers["domain_name"].lower()
    assert env["ALLOWED_HOSTS"].split(",")[0] == domain
    assert env["EMAIL_FROM"] == f"no-reply@{domain}"
    assert stat.S_IMODE((crafted.path / ".env").stat().st_mode) == 0o600


def test_ruff_is_clean_with_the_answers(crafted: Crafted) -> None:
    """The escaped lines pass the project's own lint and format checks (ASCII, \\x22, E501)."""
    bake.check(crafted.path, "ruff", "check", "--no-cache", ".")
    bake.check(crafted.path, "ruff", "format", "--no-cache", "--check", ".")


def test_cruft_json_records_the_answers(crafted: Crafted) -> None:
    record = crafted.path / ".cruft.json"
    if not record.exists():
        pytest.skip("the template was not baked from a git checkout: no .cruft.json")
    context = json.loads(record.read_text(encoding="utf-8"))["context"]["cookiecutter"]
    for question in ("project_name", "description", "author_name", "author_email"):
        assert context[question] == crafted.answers[question]


# --- what cookiecutter does with `{{ }}` in an answer ------------------------


def answers_from(
    extra_context: dict[str, str], monkeypatch: pytest.MonkeyPatch, typed: dict[str, str]
) -> OrderedDict[str, Any]:
    """The answers cookiecutter hands the hooks, given on the command line or typed."""
    context = generate_context(
        context_file=str(bake.COOKIECUTTER_JSON), extra_context=extra_context
    )
    if not typed:
        return prompt_for_config(context, no_input=True)
    import cookiecutter.prompt as prompt

    def read_user_variable(var_name: str, default_value: Any, *_args: Any) -> Any:
        return typed.get(var_name, default_value)

    monkeypatch.setattr(prompt, "read_user_variable", read_user_variable)
    monkeypatch.setattr(prompt, "read_user_yes_no", lambda _n, default, *_a: default)
    monkeypatch.setattr(prompt, "read_user_choice", lambda _n, options, *_a: options[0])
    return prompt_for_config(context, no_input=False)


def test_cookiecutter_evaluates_template_syntax_in_command_line_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`description='{{ 6 * 7 }}'` on the command line (or in a config file) arrives as 42.

    Cookiecutter renders such answers like its own defaults, with Jinja that is not
    sandboxed: they are code, run with the rights of whoever runs cookiecutter, before
    any hook. docs/options.md says so; the hook cannot see or stop it.
    """
    answers = answers_from({"description": "{{ 6 * 7 }}"}, monkeypatch, typed={})
    assert answers["description"] == "42"


def test_typed_template_syntax_is_kept_literally_then_refused(
    pre_gen: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typed at the prompt, `{{ 6 * 7 }}` stays text, which the hook refuses: recorded in
    .cruft.json, `cruft update` would evaluate it."""
    answers = answers_from({}, monkeypatch, typed={"description": "{{ 6 * 7 }}"})
    assert answers["description"] == "{{ 6 * 7 }}"
    (error,) = pre_gen.validate(answers)
    assert error.startswith("description '{{ 6 * 7 }}' is not allowed: it holds template syntax")


@pytest.mark.parametrize("case", sorted(CASES))
def test_recorded_answers_render_to_themselves(pre_gen: Any, case: str) -> None:
    """`cruft update` renders the answers in .cruft.json as templates again: every answer
    the hook accepts comes out unchanged, so an update sees the same project."""
    answers = {**CASES[case]}
    env = StrictEnvironment(context={"cookiecutter": answers})
    for question in pre_gen.FREE_TEXT:
        assert render_variable(env, answers[question], OrderedDict(answers)) == answers[question]


@pytest.fixture(scope="module")
def pre_gen() -> Any:
    import importlib.util

    path = bake.ROOT / "hooks" / "pre_gen_project.py"
    spec = importlib.util.spec_from_file_location("pre_gen_for_answers", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
