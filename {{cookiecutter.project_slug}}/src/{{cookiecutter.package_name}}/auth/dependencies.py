"""Dependencies for route authors: `CurrentUser`, `CurrentSuperuser`, `require_scopes(...)`.

A caller authenticates with a bearer JWT (`Authorization: Bearer <access token>`) or an API
key (`X-API-Key: sk_...`, or `Authorization: Bearer sk_...`); in cookie mode also with the
access-token cookie, plus the CSRF header on unsafe methods.

An access token names its session (`sid`, the refresh family) and the account's security
stamp (`stm`); both are checked against the user row each request reads anyway, so a
logout, a detected refresh reuse or a password change refuses the token at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from {{ cookiecutter.package_name }}.auth import exceptions
from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import ApiKey, User
from {{ cookiecutter.package_name }}.auth.oauth import build_oauth
from {{ cookiecutter.package_name }}.auth.security import API_KEY_PREFIX, InvalidTokenError, TokenSigner
from {{ cookiecutter.package_name }}.auth.service import (
    Tokens,
    authenticate_api_key,
    check_csrf,
    read_user,
    session_alive,
)
from {{ cookiecutter.package_name }}.core.cache import Recent
from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.db import SessionDep, get_database

ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"
CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


# Accounts ReleasedUser read a moment ago, at most this many remembered.
RECENT_USERS = 100_000


@dataclass(frozen=True)
class AuthState:
    """The module's runtime state, kept on `app.state.auth` by the module's lifespan."""

    settings: AuthSettings
    tokens: Tokens
    recent_users: Recent[uuid.UUID, User] = field(default_factory=lambda: Recent(0, RECENT_USERS))

    @classmethod
    def create(cls, settings: AuthSettings, secret_key: str) -> AuthState:
        return cls(
            settings,
            Tokens(settings, TokenSigner(secret_key)),
            Recent(settings.user_cache_seconds, RECENT_USERS),
        )

    @cached_property
    def oauth(self) -> Any:
        """Authlib's OAuth registry, built at the first social login (Authlib with it)."""
        return build_oauth(self.settings)


def get_auth_state(app: FastAPI) -> AuthState:
    state: AuthState = app.state.auth
    return state


async def auth_state(request: Request) -> AuthState:
    return get_auth_state(request.app)


AuthStateDep = Annotated[AuthState, Depends(auth_state)]

# Both only read headers; declared so /docs shows the Authorize button for each.
bearer_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)


@dataclass(frozen=True)
class Principal:
    """Who is calling, with what scopes, and through which API key if any."""

    user: User
    scopes: frozenset[str]
    api_key: ApiKey | None = None
    session_id: str | None = None  # the access token's session (refresh family), hex


def _origin(url: str) -> str:
    parts = urlsplit(url.strip().lower())
    return f"{parts.scheme}://{parts.netloc}"


def check_origin(request: Request, state: AuthState) -> None:
    """Login CSRF: in cookie mode, only this site's pages and trusted origins may sign in.

    A page of another site could otherwise post its owner's credentials (or refresh
    token) and leave the visitor signed in to the attacker's account. Browsers say where
    a request comes from: `Origin` must be this host, AUTH_FRONTEND_URL's origin or one
    of CORS_ORIGINS; without `Origin`, `Sec-Fetch-Site` must be `same-origin` or `none`.
    Clients that send neither (scripts, mobile apps) are not browsers and pass.
    """
    if not state.settings.cookie_mode:
        return
    origin = request.headers.get("origin")
    if origin is None:
        if request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none"):
            return
        raise exceptions.cross_site()
    origin = _origin(origin)
    if urlsplit(origin).netloc == request.headers.get("host", "").lower():
        return
    cors: list[str] = getattr(request.app.state.settings, "cors_origins", [])
    trusted = {_origin(state.settings.frontend_url), *(_origin(o) for o in cors if o != "*")}
    if origin not in trusted:
        raise exceptions.cross_site()


async def get_principal(
    request: Request,
    session: SessionDep,
    state: AuthStateDep,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    if bearer and bearer.startswith(API_KEY_PREFIX):
        api_key, bearer = bearer, None
    if api_key:
        found = await authenticate_api_key(session, api_key)
        if found is None:
            raise exceptions.not_authenticated("The API key is invalid, expired or revoked.")
        if not found.user.is_active:
            raise exceptions.inactive_user()
        return Principal(found.user, frozenset(found.scopes), found)
    access = _access_token(request, state, bearer)
    # Read outside the request's transaction, then attached to the request's session,
    # so that changes to the user are written by the request's commit like any other.
    user = _in_session(await read_user(get_database(request), access.user_id), access)
    session.add(user)
    return Principal(user, access.scopes, session_id=access.session_id)


@dataclass(frozen=True)
class AccessToken:
    """What a valid access token says."""

    user_id: uuid.UUID
    scopes: frozenset[str]
    claims: dict[str, Any]

    @property
    def session_id(self) -> str | None:
        sid = self.claims.get("sid")
        return sid if isinstance(sid, str) else None


def _access_token(request: Request, state: AuthState, bearer: str | None) -> AccessToken:
    """A valid access token (the header's, or the cookie's with its session's CSRF token)."""
    token = bearer
    from_cookie = False
    if token is None and state.settings.cookie_mode:
        token = request.cookies.get(ACCESS_COOKIE)
        from_cookie = bool(token)
    if not token:
        raise exceptions.not_authenticated()
    try:
        claims = state.tokens.signer.decode("access", token)
        user_id = uuid.UUID(str(claims["sub"]))
    except (InvalidTokenError, ValueError) as exc:
        raise exceptions.not_authenticated("The access token is invalid or has expired.") from exc
    access = AccessToken(user_id, frozenset(str(claims.get("scope", "")).split()), claims)
    if from_cookie and request.method not in SAFE_METHODS:
        check_csrf(state.tokens, access.session_id or "", request.headers.get(CSRF_HEADER))
    return access


def _in_session(user: User | None, access: AccessToken) -> User:
    """The token's active user, if the token's session and the account's stamp still hold."""
    if user is None or not user.is_active:
        raise exceptions.not_authenticated("The access token is invalid or has expired.")
    if not session_alive(user, access.claims):
        raise exceptions.session_ended()
    return user


SIGNED_IN = {
    401: "Not signed in: no, or an invalid, expired or revoked, token or API key",
    403: "The account is disabled",
}
declare(get_principal, problems=SIGNED_IN)
PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_current_user(principal: PrincipalDep) -> User:
    return principal.user


async def get_current_superuser(principal: PrincipalDep) -> User:
    if not principal.user.is_superuser:
        raise exceptions.forbidden("Superusers only.")
    return principal.user


declare(get_current_superuser, requires="superuser", problems={403: "Superusers only"})


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentSuperuser = Annotated[User, Depends(get_current_superuser)]


async def get_released_principal(
    request: Request,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller, for endpoints that hold no database connection while they wait.

    `CurrentUser` is attached to the request's session, whose transaction (and
    pooled connection, once used) stays open until the endpoint returns. An
    endpoint that waits on something slow, such as a model provider, and serves
    many requests per user takes `ReleasedUser` (or this, to know the API key too)
    instead: the user is detached and shared, so read it, don't change it. With an
    access token, an account this process read less than AUTH_USER_CACHE_SECONDS
    ago (5 s at most) is not read again: a deactivated account, an ended session or
    a changed password is refused here at most that long after the change.
    Concurrent requests of one user share one read; API keys are looked up every time.
    """
    # The state is not a dependency here: each one costs a few percent of the
    # CPU of a request on an endpoint such as AI chat (docs/ai.md).
    state = get_auth_state(request.app)
    needed = method_scope(request.method)
    if api_key or (bearer and bearer.startswith(API_KEY_PREFIX)):
        async with get_database(request).sessionmaker() as session:
            principal = await get_principal(request, session, state, bearer, api_key)
            await session.commit()  # the key's last_used_at
        _check_scopes(needed, principal.scopes)
        return principal
    access = _access_token(request, state, bearer)
    _check_scopes(needed, access.scopes)

    async def read() -> User:
        user = await read_user(get_database(request), access.user_id)
        if user is None or not user.is_active:
            raise exceptions.not_authenticated("The access token is invalid or has expired.")
        return user

    # The session and stamp are checked on every request, against the remembered row.
    user = _in_session(await state.recent_users.fetch(access.user_id, read), access)
    return Principal(user, access.scopes, session_id=access.session_id)


async def get_released_user(
    request: Request,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> User:
    """`get_released_principal`'s user (see there)."""
    return (await get_released_principal(request, bearer, api_key)).user


def method_scope(method: str) -> frozenset[str]:
    """What `ReleasedUser` requires: `read` to read (GET, HEAD), `write` for anything else."""
    return READ if method in SAFE_METHODS else WRITE


def _check_scopes(needed: frozenset[str], held: frozenset[str]) -> None:
    missing = needed - held
    if missing:
        raise exceptions.missing_scopes(sorted(missing))


READ, WRITE = frozenset({"read"}), frozenset({"write"})
MISSING_SCOPE = {403: "The token or API key lacks a scope the route needs"}
for _released in (get_released_principal, get_released_user):
    declare(
        _released,
        requires=lambda method: _scopes_label(method_scope(method)),
        problems={**SIGNED_IN, **MISSING_SCOPE},
    )
ReleasedUser = Annotated[User, Depends(get_released_user)]
ReleasedPrincipal = Annotated[Principal, Depends(get_released_principal)]


def _scopes_label(scopes: frozenset[str]) -> str:
    return f"scopes: {' '.join(sorted(scopes))}"


def require_scopes(*scopes: str) -> DependsParam:
    """A dependency that lets a caller through only with every one of `scopes`.

        @router.post("/items", dependencies=[require_scopes("write")])
        async def create_item(...): ...

    or, to get the caller too: `principal: Annotated[Principal, require_scopes("write")]`.
    """
    needed = frozenset(scopes)

    async def dependency(principal: PrincipalDep) -> Principal:
        _check_scopes(needed, principal.scopes)
        return principal

    declare(dependency, requires=_scopes_label(needed), problems=MISSING_SCOPE)
    return DependsParam(dependency)


def require_session_scopes(*scopes: str) -> DependsParam:
    """`require_scopes`, refusing API keys: for managing the account itself.

    Changing the email or the password and creating or listing API keys take a
    signed-in session (an access token from a login), so a leaked API key, whatever
    its scopes, cannot take over the account or mint more keys.
    """
    needed = frozenset(scopes)

    async def dependency(principal: PrincipalDep) -> Principal:
        if principal.api_key is not None:
            raise exceptions.forbidden("API keys cannot manage the account; sign in to do this.")
        _check_scopes(needed, principal.scopes)
        return principal

    declare(
        dependency,
        requires=f"session (no API key), {_scopes_label(needed)}",
        problems={403: "An API key, or a token lacking a scope the route needs"},
    )
    return DependsParam(dependency)
