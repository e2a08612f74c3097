"""Who may use the admin: active superusers, signed in through the admin's own login form.

The login form checks the auth module's password hashes. A signed session cookie (key
derived from SECRET_KEY; httpOnly, SameSite=Lax, Secure in production, scoped to the
admin's path) remembers the user; every request reloads that user, so deactivating or
demoting a superuser, or changing their password, ends their admin session at once.
Login attempts share the API login's rate limits (same counters, same keys, same budget:
auth.router.LOGIN_LIMITS says how an attempt is counted, for both). Like the API login, the
form fails closed: while the limiter's storage (Redis) is down it answers 503 with
Retry-After and never looks at the password.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import uuid
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI
from limits import parse
from sqladmin.authentication import AuthenticationBackend
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from {{ cookiecutter.package_name }}.admin.module import BASE_URL
from {{ cookiecutter.package_name }}.auth.config import PASSWORD_MAX_LENGTH
from {{ cookiecutter.package_name }}.auth.dependencies import get_auth_state
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.auth.router import LOGIN_LIMITS, limit_counter
from {{ cookiecutter.package_name }}.auth.security import password_fingerprint, verify_password
from {{ cookiecutter.package_name }}.auth.service import get_user_by_email, normalize_email
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.ratelimit import (
    UNAVAILABLE_RETRY_AFTER,
    RateLimiter,
    RateLimiterUnavailableError,
)

if TYPE_CHECKING:
    from sqladmin import Admin

log = structlog.get_logger(__name__)

SESSION_COOKIE = "admin_session"
SESSION_MAX_AGE = 8 * 3600  # seconds; the cookie's signature carries its age
# Requests that change something come from the admin's own pages, never from another site.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OWN_SITE = frozenset({"same-origin", "none"})


def session_key(secret_key: str) -> str:
    """The session cookie's signing key: derived from SECRET_KEY, used for nothing else."""
    return hmac.new(secret_key.encode(), b"admin:session", hashlib.sha256).hexdigest()


def changes_something(request: Request) -> bool:
    """Unsafe methods and custom actions (SQLAdmin runs actions as GET links)."""
    return request.method not in SAFE_METHODS or "/action/" in request.url.path


def from_another_site(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in OWN_SITE
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin is not None and origin != own


class AdminAuth(AuthenticationBackend):
    """SQLAdmin's login, logout and per-request check, backed by the auth module."""

    def __init__(self, app: FastAPI) -> None:
        settings: Settings = app.state.settings
        super().__init__(
            secret_key=session_key(settings.secret_key.get_secret_value()),
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE,
            path=BASE_URL,
            same_site="lax",
            https_only=settings.is_production,
        )
        self.app = app
        self.admin: Admin | None = None  # set once the Admin exists (to render its pages)

    @property
    def database(self) -> Database:
        database: Database = self.app.state.database
        return database

    @property
    def limiter(self) -> RateLimiter:
        limiter: RateLimiter = self.app.state.rate_limiter
        return limiter

    async def login(self, request: Request) -> Response | bool:
        form = await request.form()
        email = normalize_email(str(form.get("username") or ""))
        password = str(form.get("password") or "")
        limits = get_auth_state(self.app).settings
        # The API login's limits, counters and keys (the form is no way around them). The key
        # functions read this request's form and its client address (core's trusted proxies).
        for setting, key in LOGIN_LIMITS:
            limit: str = getattr(limits, setting)
            counter = limit_counter(setting)
            try:
                retry_after = await self.limiter.hit(
                    parse(limit), counter, await key(request), fail_closed=True
                )
            except RateLimiterUnavailableError:
                log.error("admin_login_refused_limiter_down", scope=counter)
                return await self._refused(
                    request,
                    "Sign-in is unavailable for now (the rate limiter cannot be reached); "
                    f"try again in {UNAVAILABLE_RETRY_AFTER} s.",
                    status_code=503,
                    retry_after=UNAVAILABLE_RETRY_AFTER,
                )
            if retry_after is not None:
                log.warning("admin_login_rate_limited", scope=counter)
                seconds = math.ceil(retry_after)
                return await self._refused(
                    request,
                    f"Too many login attempts; retry in {seconds} s.",
                    status_code=429,
                    retry_after=seconds,
                )
        if len(password) > PASSWORD_MAX_LENGTH:
            return False
        async with self.database.sessionmaker() as session:
            user = await get_user_by_email(session, email)
            check = await verify_password(password, user.hashed_password if user else None)
            if user is None or not check.ok or not (user.is_active and user.is_superuser):
                log.warning("admin_login_refused", known_user=user is not None)
                return False
            if check.new_hash:
                user.hashed_password = check.new_hash
                await session.commit()
            request.session.clear()
            request.session.update(
                {"user_id": str(user.id), "pwd": password_fingerprint(user.hashed_password)}
            )
        log.info("admin_login", user_id=str(user.id))
        return True

    async def logout(self, request: Request) -> Response | bool:
        request.session.clear()
        return RedirectResponse(request.url_for("admin:login"), status_code=302)

    async def authenticate(self, request: Request) -> Response | bool:
        user = await self._current_user(request)
        if user is None:
            request.session.clear()
            return False
        if changes_something(request) and from_another_site(request):
            log.warning("admin_cross_site_request_refused", path=request.url.path)
            return PlainTextResponse("Cross-site request refused.", status_code=403)
        return True

    async def _current_user(self, request: Request) -> User | None:
        """The session's user while still an active superuser with the same password."""
        try:
            user_id = uuid.UUID(str(request.session.get("user_id")))
        except ValueError:
            return None
        async with self.database.sessionmaker() as session:
            user = await session.get(User, user_id)
        if user is None or not (user.is_active and user.is_superuser):
            return None
        if not hmac.compare_digest(
            str(request.session.get("pwd", "")), password_fingerprint(user.hashed_password)
        ):
            return None
        return user

    async def _refused(
        self, request: Request, message: str, *, status_code: int, retry_after: int
    ) -> Response:
        """The login page again, showing why, with `status_code` and Retry-After."""
        headers = {"Retry-After": str(retry_after)}
        if self.admin is None:
            return PlainTextResponse(message, status_code=status_code, headers=headers)
        response = await self.admin.templates.TemplateResponse(
            request, "sqladmin/login.html", {"error": message}, status_code=status_code
        )
        response.headers.update(headers)
        return response
