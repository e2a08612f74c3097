"""The auth emails; their bodies are the Jinja2 templates in `templates/`.

Only composed here: the jobs in `jobs.py` send them (built when they run, so the links'
tokens are never stored), and the notice to an old address goes out as `core.send_email`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from {{ cookiecutter.package_name }}.core.email import Email

if TYPE_CHECKING:
    from jinja2 import Environment


@cache
def _templates() -> Environment:
    """The templates' environment, made (Jinja2 imported) when the first email is composed."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # Plain-text bodies: nothing is HTML, so nothing needs escaping.
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701
    )


def render(name: str, **values: object) -> str:
    return _templates().get_template(name).render(**values)


def link(frontend_url: str, path: str, token: str) -> str:
    return f"{frontend_url.rstrip('/')}/{path}?{urlencode({'token': token})}"


def verification(to: str, *, app_name: str, frontend_url: str, token: str, ttl: int) -> Email:
    body = render(
        "verify_email.txt",
        app_name=app_name,
        link=link(frontend_url, "verify-email", token),
        hours=ttl // 3600,
    )
    return Email(to=to, subject=f"Confirm your email for {app_name}", body=body)


def email_change(to: str, *, app_name: str, frontend_url: str, token: str, ttl: int) -> Email:
    """The confirmation link to the new address."""
    body = render(
        "change_email.txt",
        app_name=app_name,
        link=link(frontend_url, "verify-email", token),
        hours=ttl // 3600,
    )
    return Email(to=to, subject=f"Confirm your new email for {app_name}", body=body)


def email_change_notice(old_email: str, *, new_email: str, app_name: str) -> Email:
    """The notice to the old address: no link, nothing secret (it may be stored as a job)."""
    notice = render("email_change_notice.txt", app_name=app_name, new_email=new_email)
    return Email(to=old_email, subject=f"Your {app_name} email is being changed", body=notice)


def reset(to: str, *, app_name: str, frontend_url: str, token: str, ttl: int) -> Email:
    body = render(
        "reset_password.txt",
        app_name=app_name,
        link=link(frontend_url, "reset-password", token),
        minutes=ttl // 60,
    )
    return Email(to=to, subject=f"Reset your {app_name} password", body=body)
