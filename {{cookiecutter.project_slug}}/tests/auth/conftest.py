"""Auth fixtures: the app with test auth settings, a real SMTP server (aiosmtpd) and a
fake OpenID Connect provider served on 127.0.0.1 (discovery, authorize, token, userinfo,
JWKS) that the real Authlib client talks to."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import AsyncClient
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import func, select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from {{ cookiecutter.package_name }}.auth import service
from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import RefreshToken, User
from {{ cookiecutter.package_name }}.auth.schemas import ApiKeyCreate
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Base, Database
from {{ cookiecutter.package_name }}.core.email import EmailSettings, Mailer
from {{ cookiecutter.package_name }}.core.jobs import get_jobs
from {{ cookiecutter.package_name }}.main import create_app
from tests import contract
from tests.conftest import clear_tables
from tests.loopback import free_port, serve_in_thread

PASSWORD = "correct horse battery"
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-client-secret"


# --- a real SMTP server ---------------------------------------------------------------------


def text_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


class Outbox:
    """aiosmtpd handler keeping every message it receives (refusing the next `refuse`)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        if self.refuse > 0:
            self.refuse -= 1
            return "451 Requested action aborted: try again later"
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 15.0) -> list[Message]:
        """The messages to `address` once there are `count` of them (from another thread)."""
        deadline = time.monotonic() + timeout
        while len(found := self.to(address)) < count:
            assert time.monotonic() < deadline, f"no email to {address} within {timeout} s"
            time.sleep(0.02)
        return found

    def link_token(self, address: str) -> str:
        """The token in the link of the last message to `address`."""
        body = text_of(self.to(address)[-1])
        match = re.search(r"\?token=([A-Za-z0-9._\-]+)", body)
        assert match, body
        return match.group(1)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Outbox, int]]:
    outbox = Outbox()
    port = free_port()
    controller = Controller(outbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield outbox, port
    controller.stop()


@pytest.fixture
def outbox(smtp_server: tuple[Outbox, int]) -> Outbox:
    smtp_server[0].messages.clear()
    smtp_server[0].refuse = 0
    return smtp_server[0]


# --- a fake OpenID Connect provider -----------------------------------------------------------


@dataclass
class FakeProvider:
    """An OIDC provider on loopback. `identity` is who the next login will be."""

    url: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    identity: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/userinfo", self.userinfo),
                Route("/jwks", self.jwks),
            ]
        )

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "userinfo_endpoint": f"{self.url}/userinfo",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return JSONResponse({"error": "invalid_request", "detail": "PKCE"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "nonce": q.get("nonce"),
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
            "identity": dict(self.identity),
        }
        return RedirectResponse(f"{q['redirect_uri']}?code={code}&state={q['state']}", 302)

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await request.form()
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {basic}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(str(form.get("code")), None)  # a code works once
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "detail": "PKCE"}, status_code=400)
        identity = grant["identity"]
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": CLIENT_ID,
            "sub": identity["sub"],
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
        }
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
        access_token = secrets.token_urlsafe(16)
        self.access_tokens[access_token] = identity
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }
        )

    async def userinfo(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        identity = self.access_tokens.get(token)
        if identity is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(identity)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})


@pytest.fixture(scope="session")
def oidc_server() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    with serve_in_thread(provider.app(), "the fake OIDC provider") as url:
        provider.url = url
        yield provider


@pytest.fixture
def provider(oidc_server: FakeProvider) -> FakeProvider:
    oidc_server.identity = {
        "sub": "provider-user-1",
        "email": "social@example.com",
        "email_verified": True,
    }
    oidc_server.codes.clear()
    return oidc_server


# --- the app ----------------------------------------------------------------------------------


def make_auth_settings(provider_url: str, **overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "frontend_url": "http://frontend.test",
        "cookie_secure": False,
        "scopes": ["read", "write"],
        "oidc_discovery_url": f"{provider_url}/.well-known/openid-configuration",
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": CLIENT_SECRET,
        "google_client_id": None,
        "google_client_secret": None,
        "github_client_id": None,
        "github_client_secret": None,
    }
    values.update(overrides)
    return AuthSettings(_env_file=None, **values)


@pytest.fixture
def auth_settings(oidc_server: FakeProvider) -> AuthSettings:
    return make_auth_settings(oidc_server.url)


@pytest.fixture
def mailer(smtp_server: tuple[Outbox, int]) -> Mailer:
    return Mailer(
        EmailSettings(
            _env_file=None,
            smtp_host="127.0.0.1",
            smtp_port=smtp_server[1],
            smtp_security="none",
            email_from="app@example.com",
        )
    )


@pytest.fixture
async def app(
    settings: Settings, migrated: Config, auth_settings: AuthSettings, mailer: Mailer
) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    application.state.auth_settings = auth_settings
    application.state.mailer = mailer
    async with LifespanManager(application):
        yield application
        await application.state.rate_limiter.reset()
        await clear_tables(application.state.database)


# --- helpers ----------------------------------------------------------------------------------


async def delivered(app: FastAPI) -> None:
    """Run the app's due jobs (the emails) here and now, and wait for those already running."""
    await get_jobs(app).drain()


async def register(client: AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": password}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(
    client: AsyncClient, email: str, password: str = PASSWORD, scope: str = ""
) -> dict[str, Any]:
    data = {"username": email, "password": password}
    if scope:
        data["scope"] = scope
    response = await client.post("/api/v1/auth/login", data=data)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def signed_in(client: AsyncClient, email: str) -> dict[str, str]:
    """Register and log in; the Authorization header for the new user."""
    await register(client, email)
    tokens = await login(client, email)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def mark_verified(app: FastAPI, email: str) -> None:
    """Verify an account's email as if its link had been opened."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.email == email).values(is_verified=True))


async def verified_signed_in(app: FastAPI, client: AsyncClient, email: str) -> dict[str, str]:
    """`signed_in` with a verified email (API keys need one)."""
    await register(client, email)
    await mark_verified(app, email)
    tokens = await login(client, email)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def sign_up(app: FastAPI, email: str, outbox: Outbox | None = None) -> dict[str, str]:
    """For schemathesis (tests/contract.py): a real account, signed in, on the app it calls.

    With `outbox`, the email is verified through its link first (API keys need that).
    """
    account = {"email": email, "password": PASSWORD}
    registered = contract.call(app, "POST", "/api/v1/auth/register", body=account)
    assert registered.status_code == 201, registered.text
    if outbox is not None:
        outbox.wait_for(email)  # sent by the app's runner, in the app's own thread
        link = {"token": outbox.link_token(email)}
        verified = contract.call(app, "POST", "/api/v1/auth/verify-email", body=link)
        assert verified.status_code == 200, verified.text
    form = {"username": email, "password": PASSWORD}
    tokens = contract.call(
        app, "POST", "/api/v1/auth/login", body=form, media_type="application/x-www-form-urlencoded"
    )
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


async def count(app: FastAPI, model: type[Base]) -> int:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def api_key_for(app: FastAPI, email: str) -> str:
    """A new API key of this (existing) account, made by the service, whatever the route asks."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        user = await service.get_user_by_email(session, email)
        assert user is not None
        _row, key = await service.create_api_key(
            session,
            app.state.auth.settings,
            user,
            ApiKeyCreate(name="script"),
            app.state.auth.settings.scopes,
        )
    return key


async def set_verified(app: FastAPI, email: str) -> None:
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.email == email).values(is_verified=True))


async def age_rotations(app: FastAPI, seconds: float) -> None:
    """Move every rotation `seconds` into the past (past the refresh grace window)."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        for row in (await session.execute(select(RefreshToken))).scalars():
            if row.rotated_at is not None:
                row.rotated_at -= timedelta(seconds=seconds)
