"""Provider registration from settings, and how GitHub's API answers become an identity."""

from __future__ import annotations

from typing import Any

import httpx

from {{ cookiecutter.package_name }}.auth.oauth import GOOGLE_DISCOVERY_URL, build_oauth, fetch_identity
from tests.auth.conftest import make_auth_settings


def test_a_provider_is_on_only_with_id_and_secret() -> None:
    settings = make_auth_settings(
        "http://127.0.0.1:1",
        google_client_id="g-id",
        google_client_secret="g-secret",
        github_client_id="gh-id",
        github_client_secret=None,
        oidc_discovery_url=None,
    )
    oauth = build_oauth(settings)
    google = oauth.create_client("google")
    assert google is not None
    assert google._server_metadata_url == GOOGLE_DISCOVERY_URL  # Authlib keeps it private
    assert google.client_kwargs["code_challenge_method"] == "S256"
    assert "openid" in google.client_kwargs["scope"].split()
    assert oauth.create_client("github") is None
    assert oauth.create_client("oidc") is None


def test_github_is_registered_with_pkce() -> None:
    settings = make_auth_settings(
        "http://127.0.0.1:1", github_client_id="gh-id", github_client_secret="gh-secret"
    )
    github = build_oauth(settings).create_client("github")
    assert github is not None
    assert github.client_kwargs["code_challenge_method"] == "S256"
    assert github.authorize_url == "https://github.com/login/oauth/authorize"


class FakeGitHub:
    """Stands in for Authlib's client: answers `GET user` and `GET user/emails`."""

    def __init__(self, emails: list[dict[str, Any]]) -> None:
        self.answers = {"user": {"id": 4242, "login": "octo"}, "user/emails": emails}

    async def get(self, path: str, token: dict[str, Any]) -> httpx.Response:
        assert token["access_token"] == "gh-token"
        request = httpx.Request("GET", f"https://api.github.com/{path}")
        return httpx.Response(200, json=self.answers[path], request=request)


async def test_github_identity_uses_the_primary_email_and_its_verified_flag() -> None:
    client = FakeGitHub(
        [
            {"email": "old@example.com", "primary": False, "verified": True},
            {"email": "Main@Example.com", "primary": True, "verified": False},
        ]
    )
    identity = await fetch_identity("github", client, {"access_token": "gh-token"})
    assert identity.subject == "4242"
    assert identity.email == "Main@Example.com"
    assert identity.email_verified is False


async def test_github_without_emails_has_none() -> None:
    identity = await fetch_identity("github", FakeGitHub([]), {"access_token": "gh-token"})
    assert (identity.email, identity.email_verified) == (None, False)
