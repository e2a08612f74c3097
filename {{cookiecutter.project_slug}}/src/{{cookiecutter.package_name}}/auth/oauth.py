"""Social login with Authlib: Google (OIDC), GitHub (OAuth 2) and any OIDC issuer.

A provider is on when its client id and secret are set. PKCE (S256) everywhere; state and
the OIDC nonce live in a short-lived cookie signed with SECRET_KEY, so any instance behind
the load balancer can finish a flow another one started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from {{ cookiecutter.package_name }}.auth.config import AuthSettings

GOOGLE_DISCOVERY_URL = "https://accounts.google.com/.well-known/openid-configuration"
OIDC_SCOPE = "openid email profile"


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str | None
    email_verified: bool


def build_oauth(settings: AuthSettings) -> Any:
    """Authlib's registry of the configured providers. Authlib is imported here, at the first
    social login (`AuthState.oauth`), not when the app starts."""
    from authlib.integrations.starlette_client import OAuth  # type: ignore[import-untyped]

    oauth = OAuth()
    if settings.google_client_id and settings.google_client_secret:
        oauth.register(
            "google",
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret.get_secret_value(),
            server_metadata_url=GOOGLE_DISCOVERY_URL,
            client_kwargs={"scope": OIDC_SCOPE, "code_challenge_method": "S256"},
        )
    if settings.github_client_id and settings.github_client_secret:
        oauth.register(
            "github",
            client_id=settings.github_client_id,
            client_secret=settings.github_client_secret.get_secret_value(),
            authorize_url="https://github.com/login/oauth/authorize",
            access_token_url="https://github.com/login/oauth/access_token",  # noqa: S106
            api_base_url="https://api.github.com/",
            client_kwargs={"scope": "read:user user:email", "code_challenge_method": "S256"},
        )
    if settings.oidc_discovery_url and settings.oidc_client_id and settings.oidc_client_secret:
        oauth.register(
            "oidc",
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret.get_secret_value(),
            server_metadata_url=settings.oidc_discovery_url,
            client_kwargs={"scope": OIDC_SCOPE, "code_challenge_method": "S256"},
        )
    return oauth


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


async def fetch_identity(provider: str, client: Any, token: dict[str, Any]) -> Identity:
    """Who signed in, from the checked ID token and userinfo (OIDC) or GitHub's API."""
    if provider == "github":
        user = (await client.get("user", token=token)).raise_for_status().json()
        emails = (await client.get("user/emails", token=token)).raise_for_status().json()
        primary = next((e for e in emails if e.get("primary")), None) or next(
            (e for e in emails if e.get("verified")), None
        )
        return Identity(
            subject=str(user["id"]),
            email=str(primary["email"]) if primary else None,
            email_verified=bool(primary and primary.get("verified")),
        )
    # OpenID Connect: Authlib has checked the ID token (signature by the JWKS, issuer,
    # audience, expiry, nonce). Userinfo adds what the ID token may leave out.
    claims: dict[str, Any] = dict(token.get("userinfo") or {})
    if not claims.get("sub"):
        raise ValueError("no ID token in the provider's answer")
    info = dict(await client.userinfo(token=token))
    if str(info.get("sub")) != str(claims["sub"]):
        raise ValueError("userinfo is about another subject than the ID token")
    merged = {**info, **claims} if "email" in claims else {**claims, **info}
    email = merged.get("email")
    return Identity(
        subject=str(claims["sub"]),
        email=str(email) if email else None,
        email_verified=_is_true(merged.get("email_verified")),
    )


def transport_errors() -> tuple[type[Exception], ...]:
    """The errors of Authlib's HTTP client when a provider cannot be reached.

    Authlib uses httpx2 where it is installed (another module may bring it), else httpx;
    their exception classes are unrelated, so a handler catches both.
    """
    import importlib

    import httpx

    try:
        httpx2 = importlib.import_module("httpx2")
    except ImportError:
        return (httpx.HTTPError,)
    return (httpx.HTTPError, httpx2.HTTPError)
