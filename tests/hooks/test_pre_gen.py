"""Bad answers: one clear line naming the question, the value and what is allowed;
exit 1; nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[2]
GOOD: dict[str, Any] = json.loads((TEMPLATE / "cookiecutter.json").read_text())


def answers(**changes: Any) -> dict[str, Any]:
    values = {
        "project_name": "Acme",
        "project_slug": "acme",
        "package_name": "acme",
        "description": "d",
        "author_name": "A",
        "author_email": "a@example.com",
        "domain_name": "api.example.com",
        "python_version": "3.12",
        "database": "postgresql",
        "ci": "github",
        "use_docker": True,
        "license": "MIT",
    }
    values.update(changes)
    return values


def test_good_answers_pass(pre_gen: ModuleType) -> None:
    assert pre_gen.validate(answers()) == []


@pytest.mark.parametrize(
    ("question", "value", "allowed"),
    [
        ("project_slug", "My App", "lowercase letters, digits and single hyphens"),
        ("project_slug", "1app", "starting with a letter"),
        ("project_slug", "app--x", "single hyphens"),
        ("package_name", "my-app", "Python identifier"),
        ("package_name", "class", "not a keyword"),
        ("package_name", "fastapi", "would shadow"),
        ("package_name", "json", "would shadow"),
        ("package_name", "test", "would shadow"),
        ("author_email", "not-an-email", "name@example.com"),
        ("domain_name", "https://example.com/", "api.example.com"),
        ("database", "mysql", "postgresql, sqlite"),
        ("ci", "jenkins", "github, gitlab, none"),
        ("license", "GPL", "MIT, Apache-2.0, BSD-3-Clause, Proprietary"),
        ("python_version", "3.9", "3.12, 3.13, 3.11"),
        ("project_name", 'Say "hi"', "quotes or backslashes"),
    ],
)
def test_bad_answer_names_question_value_and_rule(
    pre_gen: ModuleType, question: str, value: str, allowed: str
) -> None:
    errors = pre_gen.validate(answers(**{question: value}))
    assert len(errors) == 1
    (message,) = errors
    assert message.startswith(f"{question} {value!r}")
    assert allowed in message
    assert "\n" not in message


def test_each_requirement_between_options_is_checked(pre_gen: ModuleType) -> None:
    for option, needed in pre_gen.REQUIRES.items():
        errors = pre_gen.validate(answers(**{option: True, needed: False}))
        assert errors == [f"{option} needs {needed}: answer {needed}=yes, or {option}=no."]


@pytest.mark.parametrize(
    ("value", "on"),
    [(True, True), (False, False), ("yes", True), ("no", False), ("True", True), ("n", False)],
)
def test_booleans_from_the_command_line(pre_gen: ModuleType, value: object, on: bool) -> None:
    assert pre_gen.is_on(value) is on


@pytest.mark.parametrize(
    ("context", "question"),
    [
        ({"project_slug": "Bad Slug", "package_name": "bad_slug"}, "project_slug"),
        ({"author_email": "nobody"}, "author_email"),
        ({"project_name": "json"}, "package_name"),
    ],
)
def test_bad_input_fails_cleanly_and_leaves_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], context: dict[str, str], question: str
) -> None:
    with pytest.raises(FailedHookException):
        cookiecutter(str(TEMPLATE), no_input=True, extra_context=context, output_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1
    assert lines[0].startswith(f"ERROR: {question} ")


def test_template_defaults_are_valid(pre_gen: ModuleType) -> None:
    # The defaults of every question, as cookiecutter would render them.
    assert GOOD["python_version"][0] == "3.12"
    defaults = answers(
        python_version=GOOD["python_version"][0],
        database=GOOD["database"][0],
        ci=GOOD["ci"][0],
        license=GOOD["license"][0],
        author_email=GOOD["author_email"],
        domain_name=GOOD["domain_name"],
    )
    assert pre_gen.validate(defaults) == []
