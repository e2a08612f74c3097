"""The auth module's errors, as problem+json."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.core.errors import ProblemError

BEARER = {"WWW-Authenticate": "Bearer"}


def not_authenticated(detail: str = "Not authenticated.") -> ProblemError:
    return ProblemError(401, detail, headers=BEARER)


def invalid_credentials() -> ProblemError:
    return ProblemError(401, "Incorrect email or password.", headers=BEARER)


def invalid_refresh_token() -> ProblemError:
    return ProblemError(401, "The refresh token is invalid, expired or revoked.", headers=BEARER)


def inactive_user() -> ProblemError:
    return ProblemError(403, "This account is disabled.")


def forbidden(detail: str = "Not allowed.") -> ProblemError:
    return ProblemError(403, detail)


def missing_scopes(scopes: list[str]) -> ProblemError:
    return ProblemError(
        403, f"Missing scope: {' '.join(scopes)}.", headers={"WWW-Authenticate": "Bearer"}
    )


def email_taken() -> ProblemError:
    return ProblemError(409, "An account with this email already exists.")


def invalid_link(what: str) -> ProblemError:
    return ProblemError(400, f"The {what} link is invalid or has expired.")


def oauth_failed(detail: str) -> ProblemError:
    return ProblemError(400, f"Social login failed: {detail}")


def unknown_provider(provider: str) -> ProblemError:
    return ProblemError(404, f"No login provider named {provider!r} is configured.")


def csrf_failed() -> ProblemError:
    return ProblemError(403, "CSRF check failed: send the csrf_token cookie as X-CSRF-Token.")


def cross_site() -> ProblemError:
    return ProblemError(
        403, "Cross-site request refused: sign in from a page of this site or a trusted origin."
    )


def session_ended() -> ProblemError:
    return ProblemError(401, "The session of this access token has ended.", headers=BEARER)


def wrong_password() -> ProblemError:
    return ProblemError(400, "The current password is wrong or missing.")


def email_unverified() -> ProblemError:
    return ProblemError(403, "Verify your email address before creating API keys.")


def scopes_not_held(scopes: list[str]) -> ProblemError:
    return ProblemError(
        403, f"A new API key cannot have scopes you do not hold: {' '.join(scopes)}."
    )
