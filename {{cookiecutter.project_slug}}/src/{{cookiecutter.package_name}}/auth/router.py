"""HTTP routes of the auth module, under /api/v1. Rules live in service.py."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import OAuth2PasswordRequestForm
from joserfc.errors import JoseError
from limits import RateLimitItem, parse
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth import emails, exceptions, jobs, service
from {{ cookiecutter.package_name }}.auth.dependencies import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    AuthState,
    AuthStateDep,
    CurrentUser,
    Principal,
    check_origin,
    get_auth_state,
    require_scopes,
    require_session_scopes,
)
from {{ cookiecutter.package_name }}.auth.models import ApiKey, User, utcnow
from {{ cookiecutter.package_name }}.auth.oauth import fetch_identity, transport_errors
from {{ cookiecutter.package_name }}.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    CookieSession,
    EmailChange,
    EmailRequest,
    Message,
    RefreshRequest,
    ResetPassword,
    TokenPair,
    TokenRequest,
    UserCreate,
    UserRead,
    UserUpdate,
)
from {{ cookiecutter.package_name }}.auth.security import InvalidTokenError
from {{ cookiecutter.package_name }}.core.contract import declare, problems, public
from {{ cookiecutter.package_name }}.core.db import ReadConnectionDep, SessionDep
from {{ cookiecutter.package_name }}.core.email import send_email
from {{ cookiecutter.package_name }}.core.errors import problem_response
from {{ cookiecutter.package_name }}.core.jobs import enqueue
from {{ cookiecutter.package_name }}.core.ratelimit import (
    LIMITER_DOWN,
    RATE_LIMITED,
    KeyFunc,
    client_key,
    enforce,
)

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1")

STATE_COOKIE = "oauth_state"
OAUTH_PATH = "/api/v1/auth/oauth"
REFRESH_PATH = "/api/v1/auth"


async def _form_email(request: Request) -> str:
    """The login's email together with the client's address (`service.login_email_key`)."""
    form = await request.form()
    return service.login_email_key(str(form.get("username") or ""), await client_key(request))


async def _json_email(request: Request) -> str:
    """The JSON body's email together with the client's address (`service.login_email_key`)."""
    try:
        data = await request.json()
    except ValueError:
        data = None
    email = data.get("email") if isinstance(data, dict) else None
    address = await client_key(request)
    return service.login_email_key(email if isinstance(email, str) else "", address)


@lru_cache
def _limit(value: str) -> RateLimitItem:
    return parse(value)


def limited(setting: str, key: KeyFunc = client_key, scope: str | None = None) -> DependsParam:
    """The core limiter, with the limit read from the AuthSettings field `setting`.

    Fails closed: while the limiter's Redis is down these routes answer 503, so brute force
    never goes unlimited.
    """
    counter = scope or limit_counter(setting)

    async def dependency(request: Request) -> None:
        value: str = getattr(get_auth_state(request.app).settings, setting)
        key_value = await key(request)
        await enforce(request, value, _limit(value), counter, key_value, fail_closed=True)

    return DependsParam(declare(dependency, problems={**RATE_LIMITED, **LIMITER_DOWN}))


def limit_counter(setting: str) -> str:
    """The counter of the AuthSettings limit `setting` (unless a route names a shared one)."""
    return f"auth:{setting}"


# The limits one login attempt counts against, and how each is keyed (under `limit_counter`).
# The login route counts with these, and so does any other sign-in form of the project (it
# imports them), so every way in shares one budget. Change the keys here, nowhere else.
LOGIN_LIMITS: tuple[tuple[str, KeyFunc], ...] = (
    ("login_limit_per_client", client_key),
    ("login_limit_per_email", _form_email),
)


def _user_read(user: User) -> UserRead:
    return UserRead.model_validate(user)


def _api_key_read(api_key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead.model_validate(api_key)


def _set_cookie(response: Response, state: AuthState, name: str, value: str, **kw: Any) -> None:
    settings = state.settings
    response.set_cookie(
        name,
        value,
        secure=settings.cookie_secure,
        samesite=settings.cookie_samesite,  # type: ignore[arg-type]
        domain=settings.cookie_domain,
        **kw,
    )


def _token_response(state: AuthState, issued: service.Issued) -> JSONResponse:
    """The token pair as JSON; in cookie mode, the tokens only as httpOnly cookies.

    A script injected into the page (XSS) can then use the session while the page is
    open, but cannot read the tokens and keep them.
    """
    pair = issued.pair
    if not state.settings.cookie_mode:
        return JSONResponse(pair.model_dump())
    settings = state.settings
    csrf = state.tokens.signer.csrf_token(issued.session_id.hex)
    body = CookieSession(expires_in=pair.expires_in, scope=pair.scope, csrf_token=csrf)
    response = JSONResponse(body.model_dump())
    _set_cookie(
        response,
        state,
        ACCESS_COOKIE,
        pair.access_token,
        max_age=settings.access_token_ttl,
        httponly=True,
        path="/",
    )
    _set_cookie(
        response,
        state,
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=settings.refresh_token_ttl,
        httponly=True,
        path=REFRESH_PATH,
    )
    # Readable by the page's script, which echoes it as X-CSRF-Token. Bound to the
    # session (an HMAC of its id), so a cookie planted by a sibling site is useless.
    _set_cookie(
        response,
        state,
        CSRF_COOKIE,
        csrf,
        max_age=settings.refresh_token_ttl,
        httponly=False,
        path="/",
    )
    return response


def _refresh_token_from(
    request: Request, state: AuthState, body: RefreshRequest | None
) -> tuple[str, str | None]:
    """(the refresh token, and when it came from the cookie the CSRF header to check)."""
    if body is not None and body.refresh_token:
        return body.refresh_token, None
    if state.settings.cookie_mode and (cookie := request.cookies.get(REFRESH_COOKIE)):
        return cookie, request.headers.get(CSRF_HEADER, "")
    raise exceptions.invalid_refresh_token()


# --- accounts and tokens ----------------------------------------------------------------------


@router.post(
    "/auth/register",
    status_code=201,
    tags=["auth"],
    dependencies=[limited("register_limit_per_client")],
    responses=problems({409: "The email is taken"}),
)
@public("sign-up")
async def register(
    body: UserCreate,
    request: Request,
    session: SessionDep,
    state: AuthStateDep,
) -> UserRead:
    check_origin(request, state)
    user = await service.create_user(session, body.email, body.password)
    await _send_verification(session, user)
    return _user_read(user)


# Emails are jobs in the request's transaction: sent once it commits, never if it rolls back.
# Their arguments hold no token: the job signs the link when it runs (auth/jobs.py).


async def _send_verification(session: AsyncSession, user: User) -> None:
    args = jobs.SendVerification(user_id=user.id, requested_at=utcnow())
    await enqueue(session, jobs.send_verification, args)


@router.post(
    "/auth/login",
    tags=["auth"],
    dependencies=[limited(setting, key=key) for setting, key in LOGIN_LIMITS],
    response_model=TokenPair,
    responses=problems({400: "An unknown scope", 401: "Wrong email or password"}),
)
@public("sign-in with email and password")
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    state: AuthStateDep,
) -> Response:
    """OAuth2 password flow: `username` is the email; `scope` may ask for fewer scopes."""
    check_origin(request, state)
    scopes = service.granted_scopes(state.settings, form.scopes)
    user = await service.authenticate(session, form.username, form.password)
    return _token_response(state, await service.issue_tokens(session, state.tokens, user, scopes))


@router.post(
    "/auth/refresh",
    tags=["auth"],
    response_model=TokenPair,
    responses=problems(
        {
            401: "Invalid, expired, revoked or reused refresh token",
            403: "Cookie mode: the CSRF check failed",
        }
    ),
)
@public("the refresh token is the credential")
async def refresh(
    request: Request,
    session: SessionDep,
    state: AuthStateDep,
    body: RefreshRequest | None = None,
) -> Response:
    check_origin(request, state)
    token, csrf = _refresh_token_from(request, state, body)
    try:
        issued = await service.rotate_refresh_token(session, state.tokens, token, csrf=csrf)
    except service.RefreshTokenReusedError:
        # Returned, not raised: the family's revocation must be committed.
        log.warning("refresh_token_reused")
        return problem_response(
            request,
            401,
            detail="This refresh token was already used; every session of its family is revoked.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return _token_response(state, issued)


@router.post(
    "/auth/logout",
    status_code=204,
    tags=["auth"],
    responses=problems({403: "Cookie mode: the CSRF check failed"}),
)
@public("the refresh token is the credential")
async def logout(
    request: Request,
    session: SessionDep,
    state: AuthStateDep,
    body: RefreshRequest | None = None,
) -> Response:
    """Revoke the session of this refresh token, its access tokens included."""
    token = body.refresh_token if body is not None else None
    csrf = None
    if not token and state.settings.cookie_mode and (token := request.cookies.get(REFRESH_COOKIE)):
        csrf = request.headers.get(CSRF_HEADER, "")
    if token:
        await service.logout(session, state.tokens, token, csrf=csrf)
    response = Response(status_code=204)
    if state.settings.cookie_mode:
        for name, path in (
            (ACCESS_COOKIE, "/"),
            (REFRESH_COOKIE, REFRESH_PATH),
            (CSRF_COOKIE, "/"),
        ):
            response.delete_cookie(name, path=path, domain=state.settings.cookie_domain)
    return response


@router.post(
    "/auth/verify-email/request",
    status_code=202,
    tags=["auth"],
    dependencies=[
        require_session_scopes("write"),
        limited("forgot_limit_per_client", scope="auth:verify-email-request"),
    ],
)
async def request_verification(user: CurrentUser, session: SessionDep) -> Message:
    if user.is_verified:
        return Message(detail="The email address is already verified.")
    await _send_verification(session, user)
    return Message(detail="A verification link is on its way.")


@router.post(
    "/auth/verify-email",
    tags=["auth"],
    responses=problems({400: "The link is invalid or has expired", 409: "The email is taken"}),
)
@public("the emailed link's token is the credential")
async def verify_email(body: TokenRequest, session: SessionDep, state: AuthStateDep) -> UserRead:
    return _user_read(await service.verify_email(session, state.tokens, body.token))


@router.post(
    "/auth/forgot-password",
    status_code=202,
    tags=["auth"],
    dependencies=[
        limited("forgot_limit_per_client"),
        limited("forgot_limit_per_email", key=_json_email),
    ],
)
@public("always answers the same; the link goes to the account's inbox")
async def forgot_password(body: EmailRequest, session: SessionDep, state: AuthStateDep) -> Message:
    """Always 202: the answer never tells whether an account exists."""
    user = await service.get_user_by_email(session, body.email)
    if user is not None and user.is_active:
        binding = service.request_binding(state.tokens, user, jobs.RESET)
        args = jobs.SendReset(user_id=user.id, binding=binding, requested_at=utcnow())
        await enqueue(session, jobs.send_reset, args)
    return Message(detail="If an account exists for this email, a reset link is on its way.")


@router.post(
    "/auth/reset-password",
    tags=["auth"],
    dependencies=[limited("reset_limit_per_client")],
    responses=problems({400: "The link is invalid or has expired"}),
)
@public("the emailed link's token is the credential")
async def reset_password(body: ResetPassword, session: SessionDep, state: AuthStateDep) -> Message:
    await service.reset_password(session, state.tokens, body.token, body.password)
    return Message(detail="The password is changed; every session has been signed out.")


# --- social login -------------------------------------------------------------------------------


def _oauth_client(state: AuthState, provider: str) -> Any:
    client = state.oauth.create_client(provider)
    if client is None:
        raise exceptions.unknown_provider(provider)
    return client


@router.get(
    "/auth/oauth/{provider}/authorize",
    tags=["auth"],
    status_code=302,
    response_class=RedirectResponse,
    responses=problems(
        {400: "The provider cannot be reached", 404: "The provider is not configured"}
    ),
)
@public("starts a social login")
async def oauth_authorize(provider: str, request: Request, state: AuthStateDep) -> Response:
    """Redirect to the provider, with state, PKCE (S256) and, for OIDC, a nonce."""
    client = _oauth_client(state, provider)
    redirect_uri = str(request.url_for("oauth_callback", provider=provider))
    session: dict[str, Any] = {}
    request.scope["session"] = session  # Authlib keeps state there; we sign it into a cookie
    unreachable: tuple[type[Exception], ...] = (*transport_errors(), ValueError)
    try:
        response: Response = await client.authorize_redirect(request, redirect_uri)
    except unreachable as exc:
        raise exceptions.oauth_failed("the provider cannot be reached.") from exc
    cookie = state.tokens.signer.encode(
        "oauth-state", {"sub": provider, "data": session}, state.settings.oauth_state_ttl
    )
    _set_cookie(
        response,
        state,
        STATE_COOKIE,
        cookie,
        max_age=state.settings.oauth_state_ttl,
        httponly=True,
        path=OAUTH_PATH,
    )
    return response


@router.get(
    "/auth/oauth/{provider}/callback",
    name="oauth_callback",
    tags=["auth"],
    response_model=TokenPair,
    responses=problems(
        {
            400: "Bad state, reused code or a provider error",
            403: "The account is disabled",
            404: "The provider is not configured",
        }
    ),
)
@public("the provider's answer, checked against the signed state, is the credential")
async def oauth_callback(
    provider: str, request: Request, session: SessionDep, state: AuthStateDep
) -> Response:
    client = _oauth_client(state, provider)
    from authlib.integrations.starlette_client import OAuthError  # type: ignore[import-untyped]

    stored: dict[str, Any] = {}
    if raw := request.cookies.get(STATE_COOKIE):
        try:
            claims = state.tokens.signer.decode("oauth-state", raw)
        except InvalidTokenError:
            claims = {}
        if claims.get("sub") == provider and isinstance(claims.get("data"), dict):
            stored = claims["data"]
    request.scope["session"] = stored
    try:
        token = await client.authorize_access_token(request)
        identity = await fetch_identity(provider, client, token)
    except OAuthError as exc:
        raise exceptions.oauth_failed(
            str(exc.description or exc.error or "the provider refused.")
        ) from exc
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        log.warning("oauth_bad_answer", provider=provider, error=repr(exc))
        raise exceptions.oauth_failed("the provider's answer could not be verified.") from exc
    except transport_errors() as exc:
        log.warning("oauth_provider_unreachable", provider=provider, error=repr(exc))
        raise exceptions.oauth_failed("the provider cannot be reached.") from exc
    user = await service.oauth_login(
        session,
        provider,
        identity.subject,
        identity.email,
        identity.email_verified,
        link_by_email=provider in state.settings.oauth_link_by_email,
    )
    scopes = service.granted_scopes(state.settings, [])
    response = _token_response(
        state, await service.issue_tokens(session, state.tokens, user, scopes)
    )
    response.delete_cookie(STATE_COOKIE, path=OAUTH_PATH, domain=state.settings.cookie_domain)
    return response


# --- the signed-in user -------------------------------------------------------------------------


@router.get("/users/me", tags=["users"], dependencies=[require_scopes("read")])
async def read_me(user: CurrentUser) -> UserRead:
    return _user_read(user)


@router.patch(
    "/users/me",
    tags=["users"],
    dependencies=[require_session_scopes("write")],
    responses=problems({400: "The current password is wrong or missing"}),
)
async def update_me(body: UserUpdate, user: CurrentUser, session: SessionDep) -> UserRead:
    """Change the password (needs `current_password`); every session is signed out."""
    await service.update_user(session, user, body)
    return _user_read(user)


@router.post(
    "/users/me/email",
    status_code=202,
    tags=["users"],
    dependencies=[
        require_session_scopes("write"),
        limited("forgot_limit_per_client", scope="auth:email-change"),
    ],
    responses=problems(
        {
            400: "The current password is wrong, or the address is already this account's",
            409: "The email is taken",
        }
    ),
)
async def change_email(
    body: EmailChange,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    state: AuthStateDep,
) -> Message:
    """Ask to change the email: a link to the new address confirms it, the old one is told.

    The account keeps its address until the link is opened (`POST /auth/verify-email`);
    changing the password first voids the link.
    """
    new_email = await service.request_email_change(session, user, body)
    binding = service.request_binding(state.tokens, user, jobs.EMAIL_CHANGE)
    args = jobs.SendEmailChange(
        user_id=user.id, new_email=new_email, binding=binding, requested_at=utcnow()
    )
    await enqueue(session, jobs.send_email_change, args)
    # The notice holds no link: it goes as a plain message (core.send_email).
    notice = emails.email_change_notice(user.email, new_email=new_email, app_name=request.app.title)
    await enqueue(session, send_email, notice)
    return Message(detail="A confirmation link is on its way to the new address.")


# --- API keys: managed from a signed-in session, never with an API key ------------------------


@router.post(
    "/api-keys",
    status_code=201,
    tags=["api keys"],
    responses=problems({403: "The email is not verified, or a scope the session does not hold"}),
)
async def create_api_key(
    body: ApiKeyCreate,
    principal: Annotated[Principal, require_session_scopes("write")],
    session: SessionDep,
    state: AuthStateDep,
) -> ApiKeyCreated:
    """A new key with the scopes asked for: at most, and by default, the session's own."""
    if not principal.user.is_verified:
        raise exceptions.email_unverified()
    api_key, key = await service.create_api_key(
        session, state.settings, principal.user, body, principal.scopes
    )
    return ApiKeyCreated(key=key, **_api_key_read(api_key).model_dump())


@router.get(
    "/api-keys",
    tags=["api keys"],
    response_model=list[ApiKeyRead],
    dependencies=[require_session_scopes("read")],
)
async def list_api_keys(user: CurrentUser, connection: ReadConnectionDep) -> list[dict[str, Any]]:
    # FastAPI validates the rows into the response model in one pass.
    return await service.list_api_keys(connection, user)


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    tags=["api keys"],
    dependencies=[require_session_scopes("write")],
    responses=problems({404: "No such API key"}),
)
async def revoke_api_key(key_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> None:
    await service.revoke_api_key(session, user, key_id)
