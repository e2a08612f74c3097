"""The mailer: to the log without SMTP_HOST (bodies in development only), one mailer per app,
well-formed messages."""

from __future__ import annotations

import pytest
import structlog
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core import email
from {{ cookiecutter.package_name }}.core.email import EmailSettings, Mailer, get_mailer
from {{ cookiecutter.package_name }}.core.logging import configure_logging
from tests.conftest import make_settings


async def test_without_smtp_host_the_message_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[dict[str, object]] = []
    monkeypatch.setattr(
        email.log, "info", lambda event, **kw: logged.append({"event": event, **kw})
    )
    mailer = Mailer(EmailSettings(_env_file=None), log_bodies=True)
    await mailer.send("a@example.com", "Hi", "Body text")
    assert logged == [
        {"event": "email", "to": "a@example.com", "subject": "Hi", "body": "Body text"}
    ]


@pytest.mark.parametrize(
    ("environment", "body_logged"),
    [("development", True), ("test", False), ("production", False)],
)
async def test_email_bodies_reach_the_log_in_development_only(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environment: str,
    body_logged: bool,
) -> None:
    """Bodies hold sign-in and reset tokens: the real log pipeline, each environment."""
    monkeypatch.delenv("SMTP_HOST", raising=False)
    settings = make_settings(
        "sqlite+aiosqlite:///unused.db",
        environment=environment,
        allowed_hosts=["api.example.com"],
        log_level="INFO",
    )
    configure_logging(settings)
    # A fresh logger: the module's own may have been cached under an earlier test's level.
    monkeypatch.setattr(email, "log", structlog.get_logger(email.__name__))
    app = FastAPI()
    app.state.settings = settings
    capsys.readouterr()
    link = "https://app.example.com/reset?token=secret-token-4711"
    await get_mailer(app).send("a@example.com", "Reset your password", f"Open {link}")
    err = capsys.readouterr().err
    assert "a@example.com" in err
    assert "Reset your password" in err
    assert ("secret-token-4711" in err) is body_logged, err


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
