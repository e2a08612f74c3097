"""Auth settings. Provider credentials use their usual names; the module's own knobs `AUTH_`.

The signing key is the app's `SECRET_KEY` (core settings), never a second secret.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit

from limits import parse
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128  # argon2 hashes anything, but unbounded input is a DoS vector

MAX_USER_CACHE_SECONDS = 5.0
MAX_REFRESH_GRACE_SECONDS = 60.0
PROVIDERS = ("google", "github", "oidc")

CommaList = Annotated[list[str], NoDecode]

# Hosts a plain-http AUTH_FRONTEND_URL may name in production: links to them never cross a network.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _env(name: str) -> AliasChoices:
    """A setting read from exactly this environment name (no AUTH_ prefix)."""
    return AliasChoices(name, name.lower())


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    access_token_ttl: int = Field(default=900, ge=30)
    # ReleasedUser (the AI chat's caller): seconds an account read by this process is trusted.
    # It is also how long a revoked session's access token may still pass there: a few seconds.
    user_cache_seconds: float = Field(default=1.0, ge=0, le=MAX_USER_CACHE_SECONDS)
    refresh_token_ttl: int = Field(default=14 * 24 * 3600, ge=60)
    # Seconds a just-rotated refresh token still answers with its successor (two tabs
    # refreshing at once); later it is reuse and revokes its session.
    refresh_reuse_grace_seconds: float = Field(default=5.0, ge=0, le=MAX_REFRESH_GRACE_SECONDS)
    verify_token_ttl: int = Field(default=2 * 24 * 3600, ge=60)
    reset_token_ttl: int = Field(default=3600, ge=60)
    # Seconds after its request an account email (verification, reset, email change) may
    # still go out; later (workers or SMTP away that long, a dead job replayed) it is dropped.
    email_send_within_seconds: int = Field(default=24 * 3600, ge=60)
    # Housekeeping (the daily auth.purge_expired job): days a refresh token's row is kept
    # after it expired or was revoked, and days a revoked or expired API key still shows in
    # the listing; then they are deleted.
    refresh_token_retention_days: int = Field(default=7, ge=0)
    api_key_retention_days: int = Field(default=90, ge=0)
    scopes: CommaList = ["read", "write"]
    frontend_url: str = "http://localhost:3000"
    # Tokens in httpOnly cookies for browser clients (plus a CSRF header on unsafe methods).
    cookie_mode: bool = False
    cookie_secure: bool = True
    cookie_samesite: str = Field(default="lax", pattern="^(lax|strict|none)$")
    cookie_domain: str | None = None

    google_client_id: str | None = Field(default=None, validation_alias=_env("GOOGLE_CLIENT_ID"))
    google_client_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("GOOGLE_CLIENT_SECRET")
    )
    github_client_id: str | None = Field(default=None, validation_alias=_env("GITHUB_CLIENT_ID"))
    github_client_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("GITHUB_CLIENT_SECRET")
    )
    oidc_discovery_url: str | None = Field(
        default=None, validation_alias=_env("OIDC_DISCOVERY_URL")
    )
    oidc_client_id: str | None = Field(default=None, validation_alias=_env("OIDC_CLIENT_ID"))
    oidc_client_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("OIDC_CLIENT_SECRET")
    )
    # Seconds the signed OAuth state cookie lives (the user's time at the provider).
    oauth_state_ttl: int = Field(default=600, ge=30)
    # Providers whose verified email may sign in to an existing account with that email
    # (linking the identity to it). Off for every provider unless listed.
    oauth_link_by_email: CommaList = []

    # Rate limits (the core limiter: in memory, or shared in Redis with REDIS_URL). The
    # "per_email" ones count per email and client address (service.login_email_key).
    login_limit_per_client: str = "20/minute"
    login_limit_per_email: str = "5/minute"
    register_limit_per_client: str = "5/minute"
    forgot_limit_per_client: str = "5/minute"
    forgot_limit_per_email: str = "3/hour"
    reset_limit_per_client: str = "5/minute"

    @field_validator(
        "login_limit_per_client",
        "login_limit_per_email",
        "register_limit_per_client",
        "forgot_limit_per_client",
        "forgot_limit_per_email",
        "reset_limit_per_client",
    )
    @classmethod
    def _a_limit(cls, value: str) -> str:
        parse(value)  # ValueError for anything but "N/second|minute|hour|day"
        return value

    def production_problems(self) -> list[str]:
        """What production refuses in these settings (the app checks them at start-up)."""
        problems: list[str] = []
        url = urlsplit(self.frontend_url)
        if url.scheme != "https" and url.hostname not in LOOPBACK_HOSTS:
            problems.append(
                f"AUTH_FRONTEND_URL={self.frontend_url} is refused in production: the links in "
                "verification and reset emails carry tokens, so it must be an https:// URL"
            )
        return problems

    @field_validator("scopes", "oauth_link_by_email", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.replace(" ", ",").split(",") if item.strip()]
        return value

    @field_validator("scopes")
    @classmethod
    def _route_scopes(cls, value: list[str]) -> list[str]:
        missing = [scope for scope in ("read", "write") if scope not in value]
        if missing:
            raise ValueError(
                f"must include {' and '.join(missing)}: "
                "routes require read (GET) and write (changes)"
            )
        return value

    @field_validator("oauth_link_by_email")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PROVIDERS))
        if unknown:
            raise ValueError(f"unknown provider(s) {unknown}; known: {', '.join(PROVIDERS)}")
        return value

    @field_validator(
        "google_client_id",
        "google_client_secret",
        "github_client_id",
        "github_client_secret",
        "oidc_discovery_url",
        "oidc_client_id",
        "oidc_client_secret",
        "cookie_domain",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


@lru_cache
def get_auth_settings() -> AuthSettings:
    return AuthSettings()
