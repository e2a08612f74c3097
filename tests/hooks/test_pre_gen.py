"""Bad answers: one clear line naming the question, the value and what is allowed;
exit 1; nothing left behind."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cookiecutter.environment import StrictEnvironment
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
        # free text: one line of printable text, no template syntax
        ("description", "line one\nline two", "one line of printable text"),
        ("description", "tab\tseparated", "one line of printable text"),
        ("author_name", "Ann\x00", "one line of printable text"),
        ("project_name", "Acme \u202eevil", "invisible formatting character"),
        ("domain_name", "example.com\n", "one line of printable text"),
        ("author_email", "a@example.com\n", "one line of printable text"),
        ("description", " padded", "spaces at its start or end"),
        ("author_name", "Ann ", "spaces at its start or end"),
        ("description", "", "is empty"),
        ("author_name", "   ", "is empty"),
        ("description", 42, "is not text"),
        ("description", "{{ 6 * 7 }}", "template syntax"),
        ("project_name", "{% if x %}", "template syntax"),
        ("author_name", "{# note #}", "template syntax"),
        ("author_email", "{{x}}@example.com", "template syntax"),
        # HTML where FastAPI's pages show it unescaped
        ("project_name", "</title><script>alert(1)</script>", "/docs and /redoc"),
        ("description", "<img src=x onerror=alert(1)>", "/redoc"),
        # an email display name in pyproject.toml (PEP 621: no commas)
        ("author_name", "Doe, Jane", "display name of an email address"),
        ("author_name", 'Ann "The" Author', "display name of an email address"),
        ("author_name", "Ann <ann@example.com>", "display name of an email address"),
        ("author_name", "Ann\\Author", "display name of an email address"),
        ("author_email", 'a"b@example.com', "name@example.com"),
        ("author_email", "a@localhost", "name@example.com"),
        ("domain_name", "api.example.com:8000", "no port"),
        ("project_slug", "acme\n", "lowercase letters, digits and single hyphens"),
        # longer than main.py's line allows once escaped for Python
        ("description", "x" * 78, "too long"),
        ("description", "\N{GRINNING FACE}" * 8, "too long"),
        ("project_name", "\N{LATIN SMALL LETTER E WITH ACUTE}" * 21, "too long"),
    ],
)
def test_bad_answer_names_question_value_and_rule(
    pre_gen: ModuleType, question: str, value: object, allowed: str
) -> None:
    errors = pre_gen.validate(answers(**{question: value}))
    assert len(errors) == 1
    (message,) = errors
    assert message.startswith(f"{question} {value!r}")
    assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("question", "value"),
    [
        ("project_name", 'Bob\'s "Best" \\ SaaS }} %} #}'),
        ("project_name", "Caf\N{LATIN SMALL LETTER E WITH ACUTE} \N{HOT BEVERAGE} \u65e5\u672c"),
        ("description", 'x", **__import__("os").system("touch PWNED") or {}, y="'),
        ("description", "\"\"\" \\N{BULLET} \\x00 ''' \N{EN DASH} \N{GRINNING FACE} & * _ #"),
        ("description", "x" * 77),
        ("description", "\N{GRINNING FACE}" * 7 + "x" * 7),  # 7 x 10 + 7: exactly 77
        ("author_name", "Se\N{LATIN SMALL LETTER A WITH ACUTE}n O'Brien-\u00dcnal"),
        ("author_name", "J. R. R. Tolkien (Estate)"),
        ("author_email", "o'brien+saas@Example.com"),
        ("domain_name", "API.Example.COM"),
        ("domain_name", "xn--80ak6aa92e.xn--p1ai"),
    ],
)
def test_free_text_that_is_written_escaped_is_accepted(
    pre_gen: ModuleType, question: str, value: str
) -> None:
    assert pre_gen.validate(answers(**{question: value})) == []


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        'a "quoted" \\ back\\slash',
        '"""',
        "ends with \\",
        "'''",
        "caf\N{LATIN SMALL LETTER E WITH ACUTE} \N{RIGHT SINGLE QUOTATION MARK}\N{EN DASH}",
        "\N{GRINNING FACE} \u65e5\u672c \N{LATIN SMALL LETTER SHARP S}",
        "\\N{BULLET} \\x22 \\u0041",
    ],
)
def test_python_escaped_is_ascii_and_reads_back_as_the_text(pre_gen: ModuleType, text: str) -> None:
    escaped = pre_gen.python_escaped(text)
    assert escaped.isascii()
    assert '"' not in escaped
    assert ast.literal_eval(f'"{escaped}"') == text
    assert ast.literal_eval(f'"""{escaped}"""') == text


@pytest.mark.parametrize("name", ["pre_gen_project", "post_gen_project"])
def test_hooks_hold_no_jinja_but_their_context(name: str) -> None:
    """Cookiecutter renders the hooks: only the CONTEXT literal may change."""
    source = (TEMPLATE / "hooks" / f"{name}.py").read_text()
    env = StrictEnvironment(context={"cookiecutter": {}}, keep_trailing_newline=True)
    rendered = env.from_string(source).render(cookiecutter={"a": "b"})
    assert rendered == source.replace("{{ cookiecutter | tojson }}", '{"a": "b"}')


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
        ({"description": "one\ntwo"}, "description"),
        # rendered by cookiecutter to a literal `{{ 6 * 7 }}`, as if typed at the prompt
        ({"description": "{{ '{{ 6 * 7 }}' }}"}, "description"),
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
