"""Outgoing email: written to the log by default, sent through SMTP when SMTP_HOST is set.

Any module sends with `await get_mailer(app).send(to, subject, body)`; tests replace
`app.state.mailer` with a `Mailer` of their own settings.

Bodies hold secrets (sign-in and reset links), so the log gets a body only in development
(`ENVIRONMENT=development`); elsewhere a message that cannot be sent for want of SMTP_HOST
is logged as a warning with its recipient and subject only.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Literal

import structlog
from fastapi import FastAPI
from pydantic import BaseModel, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .jobs import JobContext, job
from .telemetry import client_span

log = structlog.get_logger(__name__)


class EmailSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_timeout: float = 10.0
    email_from: str = "no-reply@localhost"

    @field_validator("smtp_host", "smtp_username", "smtp_password", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class Mailer:
    def __init__(self, settings: EmailSettings, *, log_bodies: bool = False) -> None:
        self.settings = settings
        # Only ever true in development: bodies carry tokens.
        self.log_bodies = log_bodies

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.email_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        return message

    async def send(self, to: str, subject: str, body: str) -> None:
        """Send one plain-text message; without SMTP_HOST, log it (the body in development only)."""
        settings = self.settings
        if not settings.smtp_host:
            if self.log_bodies:
                log.info("email", to=to, subject=subject, body=body)
            else:
                log.warning("email_not_sent", to=to, subject=subject, detail="SMTP_HOST is not set")
            return
        import aiosmtplib  # here, at the first message sent: ~40 ms less at every start

        # No recipient or subject on the span: traces are not a place for personal data.
        span = {"server.address": settings.smtp_host, "server.port": settings.smtp_port}
        with client_span("smtp send", span):
            await aiosmtplib.send(
                self.message(to, subject, body),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=(
                    settings.smtp_password.get_secret_value() if settings.smtp_password else None
                ),
                use_tls=settings.smtp_security == "tls",
                start_tls=settings.smtp_security == "starttls",
                timeout=settings.smtp_timeout,
            )
        log.info("email_sent", to=to, subject=subject)


def get_mailer(app: FastAPI) -> Mailer:
    """The app's mailer, made from the environment on first use."""
    mailer: Mailer | None = getattr(app.state, "mailer", None)
    if mailer is None:
        settings = getattr(app.state, "settings", None)
        development = getattr(settings, "environment", None) == "development"
        mailer = Mailer(EmailSettings(), log_bodies=development)
        app.state.mailer = mailer
    return mailer


class Email(BaseModel):
    """One plain-text message. Stored in the jobs table until sent: no secrets in it."""

    to: str
    subject: str
    body: str


@job("core.send_email", max_attempts=8, backoff=10.0, timeout=60.0)
async def send_email(ctx: JobContext, args: Email) -> None:
    """Send a message as a job: retried with backoff while the SMTP server refuses or is away."""
    await get_mailer(ctx.app).send(args.to, args.subject, args.body)
