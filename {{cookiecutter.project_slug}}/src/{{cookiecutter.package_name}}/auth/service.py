"""Business rules of the auth module. Functions flush; the request's session commits."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import joinedload, make_transient_to_detached

from {{ cookiecutter.package_name }}.auth import exceptions
from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import ApiKey, OAuthAccount, RefreshToken, User, utcnow
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


class RefreshTokenReusedError(Exception):
    """An already-rotated refresh token came back: its whole family has been revoked."""


@dataclass(frozen=True)
class Tokens:
    """What signing needs: the module's settings and the signer made from SECRET_KEY."""

    settings: AuthSettings
    signer: TokenSigner


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == normalize_email(email)))
    return result.scalar_one_or_none()


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
    await _flush_user(session, user)
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


async def issue_tokens(
    session: AsyncSession,
    tokens: Tokens,
    user: User,
    scopes: Sequence[str],
    family_id: uuid.UUID | None = None,
) -> TokenPair:
    settings = tokens.settings
    scope = " ".join(scopes)
    access = tokens.signer.encode(
        "access", {"sub": str(user.id), "scope": scope}, settings.access_token_ttl
    )
    refresh = new_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=token_hash(refresh),
            scope=scope,
            expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl),
        )
    )
    await session.flush()
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=settings.access_token_ttl,
        scope=scope,
    )


async def _revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_user_sessions(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def rotate_refresh_token(session: AsyncSession, tokens: Tokens, token: str) -> TokenPair:
    """Exchange a refresh token for a new pair; reuse of a rotated one revokes its family."""
    result = await session.execute(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash(token)).with_for_update()
    )
    row = result.scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        raise exceptions.invalid_refresh_token()
    if row.rotated_at is not None:
        await _revoke_family(session, row.family_id)
        raise RefreshTokenReusedError
    if row.expires_at <= utcnow():
        raise exceptions.invalid_refresh_token()
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise exceptions.invalid_refresh_token()
    row.rotated_at = utcnow()
    return await issue_tokens(session, tokens, user, row.scope.split(), row.family_id)


async def logout(session: AsyncSession, token: str) -> None:
    """Revoke the session (the refresh token's family); unknown tokens are ignored."""
    result = await session.execute(
        select(RefreshToken.family_id).where(RefreshToken.token_hash == token_hash(token))
    )
    family_id = result.scalar_one_or_none()
    if family_id is not None:
        await _revoke_family(session, family_id)


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
    user.hashed_password = await hash_password(password)
    # Whoever could read the inbox proved it; an unverified account becomes verified.
    user.is_verified = True
    await revoke_user_sessions(session, user.id)
    await session.flush()
    return user


async def update_user(session: AsyncSession, user: User, data: UserUpdate) -> None:
    """Change the password (with the current one); every session is signed out."""
    if data.password is not None:
        if user.hashed_password is not None:
            check = await verify_password(data.current_password or "", user.hashed_password)
            if not check.ok:
                raise exceptions.wrong_password()
        user.hashed_password = await hash_password(data.password)
        await revoke_user_sessions(session, user.id)
    await _flush_user(session, user)


# --- email change: the new address is proven by a link, the old one is told -------------

CHANGE_EMAIL = "change-email"


async def request_email_change(
    session: AsyncSession, tokens: Tokens, user: User, data: EmailChange
) -> str:
    """Check the password and the new address; the signed link that will make the change.

    Nothing changes until the link is opened (`verify_email`). The link is bound to
    the current address and password: a password change, or another email change
    completed first, voids it.
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
    """Create a verified superuser, or promote the existing account; (user, created)."""
    user = await get_user_by_email(session, email)
    if user is None:
        return await create_user(
            session, email, password, is_verified=True, is_superuser=True
        ), True
    user.is_superuser = True
    user.is_active = True
    user.is_verified = True
    user.hashed_password = await hash_password(password)
    await session.flush()
    return user, False


# --- social login ---------------------------------------------------------------------------


async def oauth_login(
    session: AsyncSession,
    provider: str,
    subject: str,
    email: str | None,
    email_verified: bool,
) -> User:
    """The user for a provider identity: linked before, linked by verified email, or new."""
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
            await _flush_user(session, user)
        elif not email_verified:
            raise exceptions.oauth_failed(
                "an account with this email exists and the provider has not verified the "
                "address; sign in with your password instead."
            )
        elif not user.is_verified:
            # Whoever registered this address never proved it; the provider just did.
            # Drop the unproven password so a squatter cannot keep access.
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
    """A new key for a verified account, with at most the scopes its creator `held`."""
    if not user.is_verified:
        raise exceptions.email_unverified()
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
