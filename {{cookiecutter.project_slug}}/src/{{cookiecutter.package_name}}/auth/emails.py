"""The auth emails; their bodies are the Jinja2 templates in `templates/`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from {{ cookiecutter.package_name }}.core.email import Mailer

log = structlog.get_logger(__name__)

# Plain-text bodies: nothing is HTML, so nothing needs escaping.
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701
)


def render(name: str, **values: object) -> str:
    return _templates.get_template(name).render(**values)


def link(frontend_url: str, path: str, token: str) -> str:
    return f"{frontend_url.rstrip('/')}/{path}?{urlencode({'token': token})}"


async def send_verification(
    mailer: Mailer, to: str, *, app_name: str, frontend_url: str, token: str, ttl: int
) -> None:
    body = render(
        "verify_email.txt",
        app_name=app_name,
        link=link(frontend_url, "verify-email", token),
        hours=ttl // 3600,
    )
    await _send(mailer, to, f"Confirm your email for {app_name}", body)


async def send_email_change(
    mailer: Mailer,
    to: str,
    *,
    old_email: str,
    app_name: str,
    frontend_url: str,
    token: str,
    ttl: int,
) -> None:
    """The confirmation link to the new address, and a notice to the old one."""
    body = render(
        "change_email.txt",
        app_name=app_name,
        link=link(frontend_url, "verify-email", token),
        hours=ttl // 3600,
    )
    await _send(mailer, to, f"Confirm your new email for {app_name}", body)
    notice = render("email_change_notice.txt", app_name=app_name, new_email=to)
    await _send(mailer, old_email, f"Your {app_name} email is being changed", notice)


async def send_reset(
    mailer: Mailer, to: str, *, app_name: str, frontend_url: str, token: str, ttl: int
) -> None:
    body = render(
        "reset_password.txt",
        app_name=app_name,
        link=link(frontend_url, "reset-password", token),
        minutes=ttl // 60,
    )
    await _send(mailer, to, f"Reset your {app_name} password", body)


async def _send(mailer: Mailer, to: str, subject: str, body: str) -> None:
    # Runs after the response: a mail server outage is logged, never shown to the caller.
    try:
        await mailer.send(to, subject, body)
    except Exception as exc:
        log.error("email_failed", subject=subject, error=type(exc).__name__, exc_info=exc)
