"""The orgs module's errors, as problem+json."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.core.errors import ProblemError


def org_not_found() -> ProblemError:
    # A non-member learns nothing, not even that the organization exists.
    return ProblemError(404, "No such organization.")


def not_found(what: str) -> ProblemError:
    return ProblemError(404, f"No such {what}.")


def role_needed(role: str) -> ProblemError:
    return ProblemError(403, f"This needs the {role} role in the organization.")


def conflict(detail: str) -> ProblemError:
    return ProblemError(409, detail)


def gone(detail: str) -> ProblemError:
    return ProblemError(410, detail)


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, detail)
