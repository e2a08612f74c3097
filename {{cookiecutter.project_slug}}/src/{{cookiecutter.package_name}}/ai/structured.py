"""Structured output: the client's JSON schema checked before the call, the answer after.

`jsonschema` validates (the draft named by the schema's `$schema`, else 2020-12). It is
imported by the first request that asks for a schema, not at start-up (a few percent of the
app's import time, for a feature many apps never use). Remote `$ref`s are never fetched: a
reference the schema does not hold itself makes the answer fail validation.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from {{ cookiecutter.package_name }}.core.errors import ProblemError

INVALID_OUTPUT = "ai-invalid-structured-output"

# Validation errors reported back, at most.
MAX_ERRORS = 10


if TYPE_CHECKING:
    from jsonschema.protocols import Validator


def _validator_for(schema: dict[str, Any]) -> type[Validator]:
    from jsonschema import Draft202012Validator, validators

    found: type[Validator] = validators.validator_for(schema, default=Draft202012Validator)
    return found


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a valid JSON schema; None when it is."""
    from jsonschema.exceptions import SchemaError

    cls = _validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        return exc.message
    return None


def answer_problems(response_format: dict[str, Any], content: str) -> list[dict[str, Any]]:
    """What is wrong with an answer under `response_format` (OpenAI's shape); [] if nothing."""
    try:
        value = json.loads(content)
    except ValueError as exc:
        return [{"path": [], "message": f"not JSON: {exc}"}]
    if response_format["type"] == "json_object":
        if not isinstance(value, dict):
            return [{"path": [], "message": "not a JSON object"}]
        return []
    schema = response_format["json_schema"]["schema"]
    cls = _validator_for(schema)
    found: list[dict[str, Any]] = []
    try:
        for error in cls(schema).iter_errors(value):
            found.append({"path": list(error.absolute_path), "message": error.message})
            if len(found) >= MAX_ERRORS:
                break
    except Exception as exc:  # an unresolvable $ref, a pattern Python cannot compile...
        return [{"path": [], "message": f"the schema could not be applied: {exc}"}]
    return found


def invalid_output(errors: list[dict[str, Any]]) -> ProblemError:
    return ProblemError(
        502,
        "The model's answer does not conform to the requested response_format.",
        title="Invalid structured output",
        type_=INVALID_OUTPUT,
        errors=errors,
    )
