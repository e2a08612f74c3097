"""Verification and password reset, delivered through a real SMTP server (aiosmtpd).

The emails are jobs: the app's own runner sends them after the request commits;
`delivered(app)` waits for that (tests/auth/test_email_jobs.py: the jobs themselves).
"""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.core.email import EmailSettings, Mailer
from tests.auth.conftest import (
    PASSWORD,
    Outbox,
    assert_problem,
    delivered,
    login,
    register,
    signed_in,
    text_of,
)


async def test_registration_sends_a_verification_link(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    await register(client, "v@example.com")
    await delivered(app)
    messages = outbox.to("v@example.com")
    assert len(messages) == 1
    assert messages[0]["From"] == "app@example.com"
    assert "Confirm your email" in messages[0]["Subject"]
    body = text_of(messages[0])
    assert "http://frontend.test/verify-email?token=" in body
    token = outbox.link_token("v@example.com")
    verified = await client.post("/api/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["is_verified"] is True


async def test_bad_verification_token_is_400(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    await register(client, "bad@example.com")
    await delivered(app)
    token = outbox.link_token("bad@example.com")
    assert_problem(await client.post("/api/v1/auth/verify-email", json={"token": token + "x"}), 400)
    assert_problem(await client.post("/api/v1/auth/verify-email", json={"token": "junk"}), 400)


async def test_request_a_new_verification_link(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    headers = await signed_in(client, "again@example.com")
    response = await client.post("/api/v1/auth/verify-email/request", headers=headers)
    assert response.status_code == 202
    await delivered(app)
    assert len(outbox.to("again@example.com")) == 2


async def test_forgot_and_reset_password(app: FastAPI, client: AsyncClient, outbox: Outbox) -> None:
    await register(client, "reset@example.com")
    old = await login(client, "reset@example.com")
    response = await client.post(
        "/api/v1/auth/forgot-password", json={"email": "Reset@example.com"}
    )
    assert response.status_code == 202
    await delivered(app)
    [mail] = [m for m in outbox.to("reset@example.com") if "Reset" in m["Subject"]]
    assert "http://frontend.test/reset-password?token=" in text_of(mail)
    token = outbox.link_token("reset@example.com")
    new = "my new long password"
    done = await client.post("/api/v1/auth/reset-password", json={"token": token, "password": new})
    assert done.status_code == 200, done.text
    await login(client, "reset@example.com", new)
    assert_problem(
        await client.post(
            "/api/v1/auth/login", data={"username": "reset@example.com", "password": PASSWORD}
        ),
        401,
    )
    # The link works once, and every earlier session is signed out.
    again = await client.post(
        "/api/v1/auth/reset-password", json={"token": token, "password": "yet another one"}
    )
    assert_problem(again, 400)
    stale = await client.post("/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]})
    assert_problem(stale, 401)


async def test_forgot_password_never_tells_whether_an_account_exists(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    await register(client, "real@example.com")
    await delivered(app)
    outbox.messages.clear()
    known = await client.post("/api/v1/auth/forgot-password", json={"email": "real@example.com"})
    unknown = await client.post("/api/v1/auth/forgot-password", json={"email": "ghost@example.com"})
    await delivered(app)
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert len(outbox.to("real@example.com")) == 1
    assert outbox.to("ghost@example.com") == []


async def test_reset_with_bad_input_is_4xx(client: AsyncClient) -> None:
    assert_problem(
        await client.post("/api/v1/auth/reset-password", json={"token": "x", "password": "short"}),
        422,
    )
    assert_problem(
        await client.post(
            "/api/v1/auth/reset-password", json={"token": "x", "password": "long enough now"}
        ),
        400,
    )


async def test_without_smtp_host_mail_goes_to_the_log(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    app.state.mailer = Mailer(EmailSettings(_env_file=None, smtp_host=None))
    await register(client, "logged@example.com")
    await delivered(app)
    assert outbox.to("logged@example.com") == []


async def test_an_smtp_outage_does_not_fail_the_request(app: FastAPI, client: AsyncClient) -> None:
    app.state.mailer = Mailer(
        EmailSettings(_env_file=None, smtp_host="127.0.0.1", smtp_port=1, smtp_security="none")
    )
    response = await client.post("/api/v1/auth/forgot-password", json={"email": "x@example.com"})
    assert response.status_code == 202
    await register(client, "down@example.com")
