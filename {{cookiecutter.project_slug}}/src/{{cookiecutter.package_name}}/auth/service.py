"""Business rules of the auth module. Functions flush; the request's session commits."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import joinedload, make_transient_to_detached

from {{ cookiecutter.package_name }}.auth import exceptions
from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.events import user_created
from {{ cookiecutter.package_name }}.auth.models import (
    ApiKey,
    OAuthAccount,
    RefreshToken,
    User,
    new_security_stamp,
    utcnow,
)
from {{ cookiecutter.package_name }}.auth.schemas import ApiKeyCreate, EmailChange, TokenPair, UserUpdate
from {{ cookiecutter.package_name }}.auth.security import (
    InvalidTokenError,
    TokenSigner,
    hash_password,
    new_api_key,
    new_token,
    password_fingerprint,
    token_hash,
    verify_password,
)
from {{ cookiecutter.package_name }}.core.db import Database, as_dicts
from {{ cookiecutter.package_name }}.core.errors import ProblemError

# API keys record their last use at most this often (one write per key per minute).
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Sessions remembered as revoked on a user row; beyond this the account's stamp changes
# instead (every access token of the account is refused, refresh tokens keep working).
MAX_REVOKED_SESSIONS = 50
# Rotations a token presented within the grace window may be behind the live one.
MAX_GRACE_STEPS = 3


class RefreshTokenReusedError(Exception):
    """An already-rotated refresh token came back: its whole family has been revoked."""


@dataclass(frozen=True)
class Issued:
    """A token pair and the session (refresh family) it belongs to."""

    pair: TokenPair
    session_id: uuid.UUID


@dataclass(frozen=True)
class Tokens:
    """What signing needs: the module's settings and the signer made from SECRET_KEY."""

    settings: AuthSettings
    signer: TokenSigner


def normalize_email(email: str) -> str:
    return email.strip().lower()


def login_email_key(email: str, address: str) -> str:
    """The key of every per-email limit (login, forgot-password): the email together
    with the client's address.

    Per email alone, anyone could spend an account's budget and lock its owner out of
    logging in or of getting a reset email; per email and address, an attacker spends
    only their own (the per-address limits still bound how many attempts, and emails,
    one address makes). The API and the admin's login form count with the same key.
    """
    return f"{normalize_email(email)}|{address}"


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == normalize_email(email)))
    return result.scalar_one_or_none()


async def _flush_new_user(session: AsyncSession, user: User) -> None:
    await _flush_user(session, user)
    await user_created(session, user)


async def _flush_user(session: AsyncSession, user: User) -> None:
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request took the email
        raise exceptions.email_taken() from exc


async def create_user(
    session: AsyncSession,
    email: str,
    password: str | None,
    *,
    is_verified: bool = False,
    is_superuser: bool = False,
) -> User:
    if await get_user_by_email(session, email) is not None:
        raise exceptions.email_taken()
    user = User(
        email=normalize_email(email),
        hashed_password=await hash_password(password) if password is not None else None,
        is_active=True,
        is_verified=is_verified,
        is_superuser=is_superuser,
    )
    await _flush_new_user(session, user)
    return user


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """The user with these credentials (rehashing an outdated hash), or 401/403."""
    user = await get_user_by_email(session, email)
    check = await verify_password(password, user.hashed_password if user else None)
    if user is None or not check.ok:
        raise exceptions.invalid_credentials()
    if not user.is_active:
        raise exceptions.inactive_user()
    if check.new_hash:
        user.hashed_password = check.new_hash
        await session.flush()
    return user


def granted_scopes(settings: AuthSettings, requested: Sequence[str]) -> list[str]:
    """The scopes a login asks for (all known ones when none), or 400 for unknown ones."""
    unknown = sorted(set(requested) - set(settings.scopes))
    if unknown:
        raise ProblemError(400, f"Unknown scope: {' '.join(unknown)}.", type_="invalid_scope")
    return list(requested) or list(settings.scopes)


def _pair(tokens: Tokens, user: User, scope: str, family_id: uuid.UUID, refresh: str) -> TokenPair:
    """A new access token for this session (bound to it and to the account's stamp)."""
    ttl = tokens.settings.access_token_ttl
    claims = {"sub": str(user.id), "scope": scope, "sid": family_id.hex, "stm": user.security_stamp}
    access = tokens.signer.encode("access", claims, ttl)
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl, scope=scope)


async def issue_tokens(
    session: AsyncSession,
    tokens: Tokens,
    user: User,
    scopes: Sequence[str],
    family_id: uuid.UUID | None = None,
    refresh: str | None = None,
) -> Issued:
    """A new session (or, with `family_id`, its next refresh token) and an access token."""
    family_id = family_id or uuid.uuid4()
    refresh = refresh or new_token()
    scope = " ".join(scopes)
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=token_hash(refresh),
            scope=scope,
            expires_at=utcnow() + timedelta(seconds=tokens.settings.refresh_token_ttl),
        )
    )
    await session.flush()
    return Issued(_pair(tokens, user, scope, family_id, refresh), family_id)


def session_alive(user: User, claims: dict[str, Any]) -> bool:
    """Whether an access token's session still stands: same stamp, session not revoked.

    Only the user row (read for the request anyway) is consulted: no query of its own.
    """
    if claims.get("stm") != user.security_stamp:
        return False
    session_id = claims.get("sid")
    return isinstance(session_id, str) and session_id not in (user.revoked_sessions or ())


async def _revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def end_session(
    session: AsyncSession, tokens: Tokens, user_id: uuid.UUID, family_id: uuid.UUID
) -> None:
    """Revoke a session: its refresh tokens, and at once its access tokens.

    The session goes onto the user row's `revoked_sessions` for as long as one of its
    access tokens may live (AUTH_ACCESS_TOKEN_TTL); older entries are dropped then.
    """
    await _revoke_family(session, family_id)  # refresh_tokens first, then users: one lock order
    user = await session.get(User, user_id, with_for_update=True, populate_existing=True)
    if user is None:
        return
    now = int(time.time())
    live = {sid: until for sid, until in (user.revoked_sessions or {}).items() if until > now}
    live[family_id.hex] = now + tokens.settings.access_token_ttl + 1
    if len(live) > MAX_REVOKED_SESSIONS:
        user.security_stamp = new_security_stamp()
        live = {}
    user.revoked_sessions = live or None
    await session.flush()


async def revoke_user_sessions(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Revoke every refresh token of the account (its access tokens: `end_all_sessions`)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def end_all_sessions(session: AsyncSession, user: User) -> None:
    """Cut every credential of the account: refresh tokens, API keys and access tokens.

    For a changed or reset password and an account claimed through a provider.
    """
    with session.no_autoflush:  # refresh_tokens and api_keys first, then users
        await revoke_user_sessions(session, user.id)
        await session.execute(
            update(ApiKey)
            .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    user.security_stamp = new_security_stamp()
    user.revoked_sessions = None  # the new stamp covers them


def check_csrf(tokens: Tokens, session_id: str, presented: str | None) -> None:
    """The CSRF header must be the session's own token (an HMAC of its hex id)."""
    expected = tokens.signer.csrf_token(session_id)
    if not presented or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise exceptions.csrf_failed()


async def _find_refresh(session: AsyncSession, token: str) -> RefreshToken | None:
    result = await session.execute(
        select(RefreshToken)
        .where(RefreshToken.token_hash == token_hash(token))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def _session_user(session: AsyncSession, row: RefreshToken) -> User:
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise exceptions.invalid_refresh_token()
    return user


async def rotate_refresh_token(
    session: AsyncSession, tokens: Tokens, token: str, *, csrf: str | None = None
) -> Issued:
    """Exchange a refresh token for a new pair; reuse of a rotated one revokes its family.

    A token rotated less than AUTH_REFRESH_REUSE_GRACE_SECONDS ago (two tabs refreshing
    at once) gets the live token of its session back with a new access token: the same
    refresh token the first rotation issued, so the session still has one live token.
    `csrf`, for a token that came from a cookie, must be the session's CSRF token.
    """
    row = await _find_refresh(session, token)
    if row is None or row.revoked_at is not None:
        raise exceptions.invalid_refresh_token()
    if csrf is not None:
        check_csrf(tokens, row.family_id.hex, csrf)
    if row.rotated_at is None:
        if row.expires_at <= utcnow():
            raise exceptions.invalid_refresh_token()
        user = await _session_user(session, row)
        # Conditional, so that of two requests racing with one token exactly one rotates
        # it (SQLite has no row locks); the other takes the grace path below.
        claimed = await session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id, RefreshToken.rotated_at.is_(None))
            .values(rotated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", claimed).rowcount == 1:
            successor = tokens.signer.successor(token, row.id.hex)
            return await issue_tokens(
                session, tokens, user, row.scope.split(), row.family_id, successor
            )
        row = await _find_refresh(session, token)
        assert row is not None
    return await _within_grace(session, tokens, row, token)


async def _within_grace(
    session: AsyncSession, tokens: Tokens, row: RefreshToken, token: str
) -> Issued:
    """The session's live refresh token for a just-rotated one, or reuse (family revoked)."""
    grace = timedelta(seconds=tokens.settings.refresh_reuse_grace_seconds)
    current, current_row = token, row
    for _ in range(MAX_GRACE_STEPS):
        rotated_at = current_row.rotated_at
        if current_row.revoked_at is not None or rotated_at is None:
            break
        if utcnow() - rotated_at >= grace:
            break
        current = tokens.signer.successor(current, current_row.id.hex)
        found = await _find_refresh(session, current)
        if found is None or found.family_id != row.family_id:
            break
        current_row = found
        if found.rotated_at is None and found.revoked_at is None:
            if found.expires_at <= utcnow():
                raise exceptions.invalid_refresh_token()
            user = await _session_user(session, found)
            pair = _pair(tokens, user, found.scope, found.family_id, current)
            return Issued(pair, found.family_id)
    await end_session(session, tokens, row.user_id, row.family_id)
    raise RefreshTokenReusedError


async def logout(
    session: AsyncSession, tokens: Tokens, token: str, *, csrf: str | None = None
) -> None:
    """Revoke the session (the refresh token's family) and its access tokens at once.

    Unknown tokens are ignored. `csrf`, for a token that came from a cookie, must be
    the session's CSRF token.
    """
    result = await session.execute(
        select(RefreshToken.family_id, RefreshToken.user_id).where(
            RefreshToken.token_hash == token_hash(token)
        )
    )
    found = result.one_or_none()
    if found is not None:
        if csrf is not None:
            check_csrf(tokens, found.family_id.hex, csrf)
        await end_session(session, tokens, found.user_id, found.family_id)


# --- email verification and password reset: signed, short-lived, single-purpose tokens ----


def verification_token(tokens: Tokens, user: User) -> str:
    return tokens.signer.encode(
        "verify-email",
        {"sub": str(user.id), "email": user.email},
        tokens.settings.verify_token_ttl,
    )


async def _user_from_token(
    session: AsyncSession, tokens: Tokens, purpose: str, token: str, what: str
) -> tuple[User, dict[str, object]]:
    try:
        claims = tokens.signer.decode(purpose, token)
        user_id = uuid.UUID(str(claims["sub"]))
    except (InvalidTokenError, ValueError) as exc:
        raise exceptions.invalid_link(what) from exc
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise exceptions.invalid_link(what)
    return user, claims


async def verify_email(session: AsyncSession, tokens: Tokens, token: str) -> User:
    """Confirm an address: the account's own, or the new one of an email change."""
    try:
        tokens.signer.decode(CHANGE_EMAIL, token)
    except InvalidTokenError:
        pass
    else:
        return await _confirm_email_change(session, tokens, token)
    user, claims = await _user_from_token(session, tokens, "verify-email", token, "verification")
    if claims.get("email") != user.email:  # the address changed since the link was sent
        raise exceptions.invalid_link("verification")
    user.is_verified = True
    await session.flush()
    return user


def reset_token(tokens: Tokens, user: User) -> str:
    return tokens.signer.encode(
        "reset-password",
        {"sub": str(user.id), "pwd": password_fingerprint(user.hashed_password)},
        tokens.settings.reset_token_ttl,
    )


async def reset_password(session: AsyncSession, tokens: Tokens, token: str, password: str) -> User:
    """Set a new password. The link dies with the old password, so it works once."""
    user, claims = await _user_from_token(session, tokens, "reset-password", token, "reset")
    if claims.get("pwd") != password_fingerprint(user.hashed_password):
        raise exceptions.invalid_link("reset")
    # Hashed before any write: on SQLite the first write takes the database's write lock,
    # which would otherwise be held for the whole (deliberately slow) hash.
    hashed = await hash_password(password)
    await end_all_sessions(session, user)
    user.hashed_password = hashed
    # Whoever could read the inbox proved it; an unverified account becomes verified.
    user.is_verified = True
    await session.flush()
    return user


async def update_user(session: AsyncSession, user: User, data: UserUpdate) -> None:
    """Change the password (with the current one); every session is signed out."""
    if data.password is not None:
        if user.hashed_password is not None:
            check = await verify_password(data.current_password or "", user.hashed_password)
            if not check.ok:
                raise exceptions.wrong_password()
        hashed = await hash_password(data.password)  # before any write (see reset_password)
        await end_all_sessions(session, user)
        user.hashed_password = hashed
    await _flush_user(session, user)


# --- email change: the new address is proven by a link, the old one is told -------------

CHANGE_EMAIL = "change-email"


def request_binding(tokens: Tokens, user: User, purpose: str) -> str:
    """What a reset or email-change request is bound to: the account's address and password.

    A MAC (SECRET_KEY, a key of its own) of both, stored in the job that will send the
    link: the job sends nothing if it differs then (the password or the address changed
    since the request). It opens nothing: no route takes it, and it reveals neither.
    """
    fingerprint = password_fingerprint(user.hashed_password)
    return tokens.signer.mac("email-request", f"{purpose}:{user.id}:{user.email}:{fingerprint}")


async def request_email_change(session: AsyncSession, user: User, data: EmailChange) -> str:
    """Check the password and the new address; the new address (normalized).

    Nothing changes until the link sent to it is opened (`verify_email`). The link is
    bound to the current address and password: a password change, or another email
    change completed first, voids it (and a link not yet sent is not sent).
    """
    if user.hashed_password is None:
        raise ProblemError(
            400,
            "This account has no password; set one first (forgot-password), then change the email.",
        )
    check = await verify_password(data.current_password, user.hashed_password)
    if not check.ok:
        raise exceptions.wrong_password()
    new_email = normalize_email(data.email)
    if new_email == user.email:
        raise ProblemError(400, "This is already the account's email address.")
    if await get_user_by_email(session, new_email) is not None:
        raise exceptions.email_taken()
    return new_email


def email_change_token(tokens: Tokens, user: User, new_email: str) -> str:
    """The signed link's token that makes `new_email` the account's address."""
    return tokens.signer.encode(
        CHANGE_EMAIL,
        {
            "sub": str(user.id),
            "email": user.email,
            "new_email": new_email,
            "pwd": password_fingerprint(user.hashed_password),
        },
        tokens.settings.verify_token_ttl,
    )


async def _confirm_email_change(session: AsyncSession, tokens: Tokens, token: str) -> User:
    user, claims = await _user_from_token(session, tokens, CHANGE_EMAIL, token, "verification")
    if claims.get("email") != user.email or claims.get("pwd") != password_fingerprint(
        user.hashed_password
    ):
        raise exceptions.invalid_link("verification")
    new_email = str(claims["new_email"])
    if await get_user_by_email(session, new_email) is not None:
        raise exceptions.email_taken()
    user.email = new_email
    user.is_verified = True  # whoever opened the link reads the new inbox
    await _flush_user(session, user)
    return user


async def create_superuser(session: AsyncSession, email: str, password: str) -> tuple[User, bool]:
    """Create a verified superuser, or promote the existing account; (user, created).

    Promoting sets the account's password, so, like any password change, it ends every
    session and API key of the account: whoever held them must sign in with the new one.
    """
    user = await get_user_by_email(session, email)
    if user is None:
        return await create_user(
            session, email, password, is_verified=True, is_superuser=True
        ), True
    user.is_superuser = True
    user.is_active = True
    user.is_verified = True
    user.hashed_password = await hash_password(password)
    await end_all_sessions(session, user)
    await session.flush()
    return user, False


# --- social login ---------------------------------------------------------------------------


async def oauth_login(
    session: AsyncSession,
    provider: str,
    subject: str,
    email: str | None,
    email_verified: bool,
    *,
    link_by_email: bool = False,
) -> User:
    """The user for a provider identity: linked before, new, or (with `link_by_email`,
    AUTH_OAUTH_LINK_BY_EMAIL lists the provider) linked to the account of its verified email.
    """
    result = await session.execute(
        select(User)
        .join(OAuthAccount, OAuthAccount.user_id == User.id)
        .where(OAuthAccount.provider == provider, OAuthAccount.subject == subject)
    )
    user = result.scalar_one_or_none()
    if user is None:
        if not email:
            raise exceptions.oauth_failed("the provider did not share an email address.")
        user = await get_user_by_email(session, email)
        if user is None:
            user = User(
                email=normalize_email(email),
                hashed_password=None,
                is_active=True,
                is_verified=email_verified,
                is_superuser=False,
            )
            await _flush_new_user(session, user)
        elif not email_verified or not link_by_email:
            raise exceptions.oauth_failed(
                "an account with this email exists; sign in with your password instead."
            )
        elif not user.is_verified:
            # Whoever registered this address never proved it; the provider just did.
            # Drop the unproven password and everything signed in with it, so a squatter
            # keeps no access.
            await end_all_sessions(session, user)
            user.hashed_password = None
            user.is_verified = True
        session.add(
            OAuthAccount(
                user_id=user.id, provider=provider, subject=subject, email=normalize_email(email)
            )
        )
        await session.flush()
    if not user.is_active:
        raise exceptions.inactive_user()
    return user


# --- API keys -------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    settings: AuthSettings,
    user: User,
    data: ApiKeyCreate,
    held: Collection[str],
) -> tuple[ApiKey, str]:
    """A new key with at most the scopes its creator `held` (the route checks the email)."""
    scopes = data.scopes if data.scopes is not None else [s for s in settings.scopes if s in held]
    unknown = sorted(set(scopes) - set(settings.scopes))
    if unknown:
        raise ProblemError(422, f"Unknown scope: {' '.join(unknown)}.")
    beyond = sorted(set(scopes) - set(held))
    if beyond:
        raise exceptions.scopes_not_held(beyond)
    key, prefix = new_api_key()
    api_key = ApiKey(
        user_id=user.id,
        name=data.name,
        prefix=prefix,
        key_hash=token_hash(key),
        scope=" ".join(dict.fromkeys(scopes)),
        expires_at=utcnow() + timedelta(days=data.expires_in_days)
        if data.expires_in_days
        else None,
    )
    session.add(api_key)
    await session.flush()
    return api_key, key


# What a listing shows of each key (`scope` under the schema's name, `scopes`).
API_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.scope.label("scopes"),
    ApiKey.created_at,
    ApiKey.last_used_at,
    ApiKey.expires_at,
    ApiKey.revoked_at,
)


# Built once: SQLAlchemy then reuses its cache key and compiled form on every call.
_LIST_API_KEYS = (
    select(*API_KEY_COLUMNS)
    .where(ApiKey.user_id == bindparam("user_id"))
    .order_by(ApiKey.created_at, ApiKey.id)
)


async def list_api_keys(connection: AsyncConnection, user: User) -> list[dict[str, Any]]:
    """The user's keys, oldest first, as plain dicts for `ApiKeyRead`.

    A listing changes nothing, so it runs one Core query on a read connection
    and loads no ORM objects: for 50 keys that halves the CPU a request costs
    (see docs/benchmarks.md).
    """
    return as_dicts(await connection.execute(_LIST_API_KEYS, {"user_id": user.id}))


async def revoke_api_key(session: AsyncSession, user: User, key_id: uuid.UUID) -> None:
    api_key = await session.get(ApiKey, key_id)
    if api_key is None or api_key.user_id != user.id:
        raise ProblemError(404, "No such API key.")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        await session.flush()


_USER_COLUMNS = tuple((attr.key, attr.columns[0]) for attr in inspect(User).column_attrs)
_SELECT_USER = select(*(column for _key, column in _USER_COLUMNS)).where(User.id == bindparam("id"))


async def read_user(database: Database, user_id: uuid.UUID) -> User | None:
    """The user with this id, read for authenticating a request.

    One Core query on an autocommit connection: one round trip (no BEGIN, no
    COMMIT), and about half the CPU of `session.get()`, whose ORM loading
    dominated the cost of an authenticated request in the benchmark. The row
    becomes a detached `User`, exactly as if a session had loaded it and closed
    (`make_transient_to_detached`); `session.add()` attaches it without a query.
    """
    async with database.read_engine.connect() as conn:
        row = (await conn.execute(_SELECT_USER, {"id": user_id})).one_or_none()
    if row is None:
        return None
    user = User(**{key: value for (key, _column), value in zip(_USER_COLUMNS, row, strict=True)})
    make_transient_to_detached(user)
    return user


# Built once (like the other per-request statements here): SQLAlchemy reuses its cache key.
_FIND_API_KEY = (
    select(ApiKey).options(joinedload(ApiKey.user)).where(ApiKey.key_hash == bindparam("key_hash"))
)


async def authenticate_api_key(session: AsyncSession, key: str) -> ApiKey | None:
    """The live key (with its user loaded in the same query), or None."""
    result = await session.execute(_FIND_API_KEY, {"key_hash": token_hash(key)})
    api_key = result.scalar_one_or_none()
    now = utcnow()
    if api_key is None or api_key.revoked_at is not None:
        return None
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return None
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        api_key.last_used_at = now
        await session.flush()
    return api_key
