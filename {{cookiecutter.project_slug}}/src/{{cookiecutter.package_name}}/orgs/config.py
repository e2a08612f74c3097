"""Orgs settings, prefix `ORGS_`.

The invitation links point to the frontend of the auth module (AUTH_FRONTEND_URL)
and are signed with the app's SECRET_KEY: no second URL, no second secret.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# An invitation lives at most this long (a month): a link in an inbox is a standing grant.
MAX_INVITATION_TTL_HOURS = 30 * 24


class OrgsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORGS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Hours an invitation's link works after it is sent (or sent again).
    invitation_ttl_hours: int = Field(default=72, ge=1, le=MAX_INVITATION_TTL_HOURS)


@lru_cache
def get_orgs_settings() -> OrgsSettings:
    return OrgsSettings()


def orgs_settings(request: Request) -> OrgsSettings:
    """The app's orgs settings (tests, or an embedding app, may put their own on app.state)."""
    settings: OrgsSettings | None = getattr(request.app.state, "orgs_settings", None)
    return settings or get_orgs_settings()


OrgsSettingsDep = Annotated[OrgsSettings, Depends(orgs_settings)]
