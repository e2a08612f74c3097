"""The auth module's background jobs: its emails, and a daily purge of what has expired.

Emails are enqueued in the request's transaction (a rolled-back request sends nothing)
and carry no secret: the arguments name the account (and, for an email change, the new
address); the job reads the account when it runs and signs the link then. A reset or
email-change request also carries `binding` (`service.request_binding`): if the account's
password or address changed since the request, nothing is sent. A request older than
AUTH_EMAIL_SEND_WITHIN_SECONDS is dropped. SMTP refusing or away: the job raises and is
retried with backoff, then kept as dead (`python -m <package> jobs list`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from pydantic import BaseModel
from sqlalchemy import ColumnElement, delete, or_, select

from {{ cookiecutter.package_name }}.auth import emails, service
from {{ cookiecutter.package_name }}.auth.dependencies import AuthState, get_auth_state
from {{ cookiecutter.package_name }}.auth.models import ApiKey, RefreshToken, User, utcnow
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.email import Email, get_mailer
from {{ cookiecutter.package_name }}.core.jobs import JobContext, Tick, job

log = structlog.get_logger(__name__)

# SMTP away: retried after about 10 s, 20 s, 40 s ... (about 20 minutes in all), then dead.
EMAIL_ATTEMPTS = 8
EMAIL_BACKOFF = 10.0
EMAIL_TIMEOUT = 60.0

RESET = "reset-password"
EMAIL_CHANGE = "change-email"


class SendVerification(BaseModel):
    user_id: uuid.UUID
    requested_at: datetime


class SendReset(BaseModel):
    user_id: uuid.UUID
    binding: str  # the account's address and password at the request (a MAC, not a token)
    requested_at: datetime


class SendEmailChange(BaseModel):
    user_id: uuid.UUID
    new_email: str
    binding: str
    requested_at: datetime


async def _recipient(ctx: JobContext, user_id: uuid.UUID, requested_at: datetime) -> User | None:
    """The account to write to, or None (gone, disabled, or the request is too old)."""
    state = get_auth_state(ctx.app)
    age = (utcnow() - requested_at).total_seconds()
    if age > state.settings.email_send_within_seconds:
        log.warning("auth_email_dropped", job=ctx.name, id=ctx.job_id, reason="too old")
        return None
    user = await ctx.session.get(User, user_id)
    if user is None or not user.is_active:
        log.info("auth_email_dropped", job=ctx.name, id=ctx.job_id, reason="no active account")
        return None
    return user


def _bound(ctx: JobContext, state: AuthState, user: User, purpose: str, binding: str) -> bool:
    if service.request_binding(state.tokens, user, purpose) == binding:
        return True
    log.info("auth_email_dropped", job=ctx.name, id=ctx.job_id, reason="account changed")
    return False


async def _send(ctx: JobContext, email: Email) -> None:
    # Raises while the server refuses or is away: the attempt fails and is retried.
    await get_mailer(ctx.app).send(email.to, email.subject, email.body)


@job(
    "auth.send_verification",
    max_attempts=EMAIL_ATTEMPTS,
    backoff=EMAIL_BACKOFF,
    timeout=EMAIL_TIMEOUT,
)
async def send_verification(ctx: JobContext, args: SendVerification) -> None:
    """The verification link, to the account's address as it is now (if still unverified)."""
    user = await _recipient(ctx, args.user_id, args.requested_at)
    if user is None or user.is_verified:
        return
    state = get_auth_state(ctx.app)
    token = service.verification_token(state.tokens, user)
    await _send(
        ctx,
        emails.verification(
            user.email,
            app_name=ctx.app.title,
            frontend_url=state.settings.frontend_url,
            token=token,
            ttl=state.settings.verify_token_ttl,
        ),
    )


@job("auth.send_reset", max_attempts=EMAIL_ATTEMPTS, backoff=EMAIL_BACKOFF, timeout=EMAIL_TIMEOUT)
async def send_reset(ctx: JobContext, args: SendReset) -> None:
    """The reset link, unless the password or address changed since the request."""
    user = await _recipient(ctx, args.user_id, args.requested_at)
    state = get_auth_state(ctx.app)
    if user is None or not _bound(ctx, state, user, RESET, args.binding):
        return
    await _send(
        ctx,
        emails.reset(
            user.email,
            app_name=ctx.app.title,
            frontend_url=state.settings.frontend_url,
            token=service.reset_token(state.tokens, user),
            ttl=state.settings.reset_token_ttl,
        ),
    )


@job(
    "auth.send_email_change",
    max_attempts=EMAIL_ATTEMPTS,
    backoff=EMAIL_BACKOFF,
    timeout=EMAIL_TIMEOUT,
)
async def send_email_change(ctx: JobContext, args: SendEmailChange) -> None:
    """The confirmation link to the new address, unless the request has been voided since."""
    user = await _recipient(ctx, args.user_id, args.requested_at)
    state = get_auth_state(ctx.app)
    if user is None or not _bound(ctx, state, user, EMAIL_CHANGE, args.binding):
        return
    await _send(
        ctx,
        emails.email_change(
            args.new_email,
            app_name=ctx.app.title,
            frontend_url=state.settings.frontend_url,
            token=service.email_change_token(state.tokens, user, args.new_email),
            ttl=state.settings.verify_token_ttl,
        ),
    )


# --- housekeeping ----------------------------------------------------------------------------

PURGE_BATCH = 1000


async def _delete_in_batches(
    database: Database, model: type[RefreshToken] | type[ApiKey], where: ColumnElement[bool]
) -> int:
    """Delete the rows matching `where`, a batch per transaction (short locks); how many."""
    deleted = 0
    while True:
        async with database.engine.begin() as connection:
            ids = select(model.id).where(where).limit(PURGE_BATCH).scalar_subquery()
            result = await connection.execute(delete(model).where(model.id.in_(ids)))
        count: int = result.rowcount
        deleted += count
        if count < PURGE_BATCH:
            return deleted


@job("auth.purge_expired", schedule="41 3 * * *", max_attempts=3, timeout=600.0)
async def purge_expired(ctx: JobContext, args: Tick) -> None:
    """Delete refresh tokens and API keys expired or revoked longer ago than their retention.

    Idempotent, so it commits batch by batch on its own connections (not `ctx.session`):
    a run cut short keeps what it deleted, and the next run goes on.
    """
    settings = get_auth_state(ctx.app).settings
    database: Database = ctx.app.state.database
    now = utcnow()
    tokens_before = now - timedelta(days=settings.refresh_token_retention_days)
    keys_before = now - timedelta(days=settings.api_key_retention_days)
    # Two conditions, two statements: each can use its column's index.
    tokens = await _delete_in_batches(
        database, RefreshToken, RefreshToken.expires_at < tokens_before
    )
    tokens += await _delete_in_batches(
        database, RefreshToken, RefreshToken.revoked_at < tokens_before
    )
    keys = await _delete_in_batches(
        database,
        ApiKey,
        or_(ApiKey.expires_at < keys_before, ApiKey.revoked_at < keys_before),
    )
    log.info("auth_purged", refresh_tokens=tokens, api_keys=keys)
