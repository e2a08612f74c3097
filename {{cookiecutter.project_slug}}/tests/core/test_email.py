"""The mailer: to the log without SMTP_HOST, one mailer per app, well-formed messages."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core import email
from {{ cookiecutter.package_name }}.core.email import EmailSettings, Mailer, get_mailer


async def test_without_smtp_host_the_message_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[dict[str, object]] = []
    monkeypatch.setattr(
        email.log, "info", lambda event, **kw: logged.append({"event": event, **kw})
    )
    await Mailer(EmailSettings(_env_file=None)).send("a@example.com", "Hi", "Body text")
    assert logged == [
        {"event": "email", "to": "a@example.com", "subject": "Hi", "body": "Body text"}
    ]


def test_message_headers() -> None:
    mailer = Mailer(EmailSettings(_env_file=None, email_from="app@example.com"))
    message = mailer.message("b@example.com", "Subject line", "Hello")
    assert (message["From"], message["To"], message["Subject"]) == (
        "app@example.com",
        "b@example.com",
        "Subject line",
    )
    assert message.get_content().strip() == "Hello"


def test_blank_smtp_host_means_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_HOST", "  ")
    assert EmailSettings(_env_file=None).smtp_host is None


def test_one_mailer_per_app() -> None:
    app = FastAPI()
    assert get_mailer(app) is get_mailer(app)
