"""Invitations: invite -> email (a job, real SMTP) -> accept -> member; single use, expiring,
revocable, resendable; no usable token stored anywhere; each refusal changes nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, enqueue
from {{ cookiecutter.package_name }}.orgs.config import OrgsSettings
from {{ cookiecutter.package_name }}.orgs.jobs import SendInvitation, send_invitation
from {{ cookiecutter.package_name }}.orgs.models import Invitation, Membership
from tests.auth.conftest import (
    Outbox,
    assert_problem,
    count,
    delivered,
    login,
    mark_verified,
    register,
    signed_in,
    text_of,
    verified_signed_in,
)
from tests.orgs.conftest import ORGS, accept, invite, joined, members, new_org, user_id

BOB = "bob@example.com"


async def acme_of_ada(client: AsyncClient) -> tuple[str, dict[str, str]]:
    ada = await signed_in(client, "ada@example.com")
    return (await new_org(client, ada, "Acme"))["id"], ada


async def invitation_rows(app: FastAPI) -> list[Invitation]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        query = select(Invitation).order_by(Invitation.created_at)
        return list((await session.execute(query)).scalars())


async def invitation_jobs(app: FastAPI) -> list[JobRecord]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        query = select(JobRecord).where(JobRecord.name == "orgs.send_invitation")
        return list((await session.execute(query)).scalars())


async def replay(app: FastAPI, job: JobRecord) -> None:
    """Enqueue the job again with the same arguments, as `jobs replay` would run it."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await enqueue(session, send_invitation, SendInvitation.model_validate(job.args))


async def listed(client: AsyncClient, headers: dict[str, str], org: str, state: str) -> Any:
    response = await client.get(f"{ORGS}/{org}/invitations?state={state}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_invite_email_accept_member(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada = await acme_of_ada(client)
    created = await invite(client, ada, acme, "  Bob@Example.com ", "admin")
    assert created["email"] == BOB
    assert created["role"] == "admin"
    assert created["state"] == "pending"
    assert created["invited_by"] == await user_id(client, ada)
    assert "token" not in json.dumps(created)
    assert outbox.to(BOB) == []  # a job: sent when the jobs run

    await delivered(app)
    [message] = outbox.to(BOB)
    assert message["Subject"] == f"Join Acme on {app.title}"
    body = text_of(message)
    assert "ada@example.com invited you to join Acme" in body
    assert "http://frontend.test/accept-invitation?token=" in body

    token = outbox.link_token(BOB)  # before Bob signs up: the sign-up emails him too
    bob = await verified_signed_in(app, client, BOB)
    answer = await accept(client, bob, token)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == acme
    assert answer.json()["role"] == "admin"
    assert await members(client, bob, acme) == [["ada@example.com", "owner"], [BOB, "admin"]]
    [row] = await listed(client, ada, acme, "all")
    assert row["state"] == "accepted"
    assert await listed(client, ada, acme, "pending") == []


async def test_the_database_holds_no_usable_token(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    """Neither the job's arguments nor the invitation's row opens the invitation."""
    acme, ada = await acme_of_ada(client)
    await invite(client, ada, acme, BOB)
    [job] = await invitation_jobs(app)
    await delivered(app)
    token = outbox.link_token(BOB)
    [row] = await invitation_rows(app)
    stored = json.dumps(job.args) + job.id + row.token_hash
    assert token not in stored
    assert token.split(".")[1] not in stored  # not even its secret part

    bob = await verified_signed_in(app, client, BOB)
    candidates = [str(v) for v in job.args.values()] + [job.id, row.token_hash, str(row.id)]
    candidates += [f"{acme.replace('-', '')}.{c}" for c in candidates]
    for candidate in candidates:
        assert_problem(await accept(client, bob, candidate), 404)
    assert (await accept(client, bob, token)).status_code == 200


async def test_an_invitation_works_once(app: FastAPI, client: AsyncClient, outbox: Outbox) -> None:
    acme, ada = await acme_of_ada(client)
    await invite(client, ada, acme, BOB)
    await delivered(app)
    token = outbox.link_token(BOB)
    bob = await verified_signed_in(app, client, BOB)
    assert (await accept(client, bob, token)).status_code == 200
    bob_id = await user_id(client, bob)
    # Leaves, then tries the link again: used.
    assert (await client.delete(f"{ORGS}/{acme}/members/{bob_id}", headers=bob)).status_code == 204
    used = assert_problem(await accept(client, bob, token), 410)
    assert "used" in used["detail"]
    assert await members(client, ada, acme) == [["ada@example.com", "owner"]]


async def test_expired_and_revoked_invitations_are_gone(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada = await acme_of_ada(client)
    created = await invite(client, ada, acme, BOB)
    await delivered(app)
    token = outbox.link_token(BOB)
    bob = await verified_signed_in(app, client, BOB)
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Invitation).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    expired = assert_problem(await accept(client, bob, token), 410)
    assert "expired" in expired["detail"]
    assert [i["state"] for i in await listed(client, ada, acme, "expired")] == ["expired"]
    assert await listed(client, ada, acme, "pending") == []

    revoked = await client.delete(f"{ORGS}/{acme}/invitations/{created['id']}", headers=ada)
    assert revoked.status_code == 204, revoked.text
    assert_problem(await accept(client, bob, token), 410)
    assert [i["state"] for i in await listed(client, ada, acme, "revoked")] == ["revoked"]
    assert await count(app, Membership) == 3  # ada and bob in their own, ada in Acme
    [row] = await invitation_rows(app)
    assert row.accepted_at is None


async def test_another_address_or_an_unverified_one_is_refused(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada = await acme_of_ada(client)
    await invite(client, ada, acme, BOB)
    await delivered(app)
    token = outbox.link_token(BOB)
    eve = await verified_signed_in(app, client, "eve@example.com")
    other = assert_problem(await accept(client, eve, token), 403)
    assert "another email" in other["detail"]
    bob = await signed_in(client, BOB)  # not verified
    unverified = assert_problem(await accept(client, bob, token), 403)
    assert "Verify" in unverified["detail"]
    [row] = await invitation_rows(app)
    assert row.accepted_at is None
    assert await members(client, ada, acme) == [["ada@example.com", "owner"]]
    assert_problem(await accept(client, bob, "not-a-token"), 404)
    assert_problem(await accept(client, bob, f"{uuid.uuid4().hex}.{'A' * 43}"), 404)


async def test_an_invitation_for_a_member_is_refused(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada = await acme_of_ada(client)
    bob = await joined(app, client, outbox, ada, acme, BOB)
    # Inviting a member, or an address already invited: 409, nothing stored, nothing sent.
    assert_problem(
        await client.post(f"{ORGS}/{acme}/invitations", json={"email": BOB}, headers=ada), 409
    )
    cy_first = await invite(client, ada, acme, "cy@example.com")
    again = await client.post(
        f"{ORGS}/{acme}/invitations", json={"email": "CY@example.com"}, headers=ada
    )
    assert "pending invitation" in assert_problem(again, 409)["detail"]
    assert len(await invitation_rows(app)) == 2
    assert len(await invitation_jobs(app)) == 2
    # Expired, invited again, then the expired one sent again: two would be pending, 409.
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Invitation)
            .where(Invitation.email == "cy@example.com")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await invite(client, ada, acme, "cy@example.com")
    resend = f"{ORGS}/{acme}/invitations/{cy_first['id']}/resend"
    assert (
        "pending invitation"
        in assert_problem(await client.post(resend, headers=ada), 409)["detail"]
    )

    # Accepting while already a member (made a member since the invitation was sent): 409.
    await client.delete(f"{ORGS}/{acme}/members/{await user_id(client, bob)}", headers=bob)
    await invite(client, ada, acme, BOB)
    await delivered(app)
    token = outbox.link_token(BOB)
    async with database.sessionmaker() as session, session.begin():
        session.add(
            Membership(
                org_id=uuid.UUID(acme), user_id=uuid.UUID(await user_id(client, bob)), role="member"
            )
        )
    assert_problem(await accept(client, bob, token), 409)
    pending = [i for i in await listed(client, ada, acme, "pending") if i["email"] == BOB]
    assert len(pending) == 1


async def test_who_may_invite(app: FastAPI, client: AsyncClient, outbox: Outbox) -> None:
    acme, ada = await acme_of_ada(client)
    bob = await joined(app, client, outbox, ada, acme, BOB, "admin")
    cy = await joined(app, client, outbox, ada, acme, "cy@example.com")
    eve = await signed_in(client, "eve@example.com")
    path = f"{ORGS}/{acme}/invitations"
    before = len(await invitation_rows(app))
    assert_problem(await client.post(path, json={"email": "d@example.com"}, headers=cy), 403)
    assert_problem(await client.get(path, headers=cy), 403)
    owner = {"email": "d@example.com", "role": "owner"}
    assert_problem(await client.post(path, json=owner, headers=bob), 403)
    assert_problem(await client.post(path, json={"email": "d@example.com"}, headers=eve), 404)
    assert_problem(await client.post(path, json={"email": "not an email"}, headers=ada), 422)
    assert len(await invitation_rows(app)) == before
    # An admin invites members and admins; an owner, owners.
    await invite(client, bob, acme, "d@example.com", "admin")
    await invite(client, ada, acme, "e@example.com", "owner")
    await delivered(app)
    token = outbox.link_token("e@example.com")  # before the sign-up's own email
    e = await verified_signed_in(app, client, "e@example.com")
    assert (await accept(client, e, token)).json()["role"] == "owner"


async def test_resend_sends_a_new_link_and_kills_the_old(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada = await acme_of_ada(client)
    created = await invite(client, ada, acme, BOB)
    resend = f"{ORGS}/{acme}/invitations/{created['id']}/resend"
    await delivered(app)
    first = outbox.link_token(BOB)
    [first_job] = await invitation_jobs(app)

    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Invitation).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    again = await client.post(resend, headers=ada)  # an expired one may be sent again
    assert again.status_code == 200, again.text
    assert again.json()["state"] == "pending"
    assert datetime.fromisoformat(again.json()["expires_at"]) > datetime.now(UTC) + timedelta(
        hours=71
    )
    await delivered(app)
    assert len(outbox.to(BOB)) == 2
    second = outbox.link_token(BOB)
    assert second != first

    bob = await verified_signed_in(app, client, BOB)
    await delivered(app)  # the sign-up's verification email, if it ran before the test verified
    sent = len(outbox.to(BOB))
    assert_problem(await accept(client, bob, first), 404)
    # The first email's job run again (a replayed dead job, say) sends nothing.
    await replay(app, first_job)
    await delivered(app)
    assert len(outbox.to(BOB)) == sent
    assert (await accept(client, bob, second)).status_code == 200
    assert_problem(await client.post(resend, headers=ada), 409)  # accepted


async def test_revoke(app: FastAPI, client: AsyncClient, outbox: Outbox) -> None:
    acme, ada = await acme_of_ada(client)
    created = await invite(client, ada, acme, BOB)
    eve = await signed_in(client, "eve@example.com")
    eve_org = (await new_org(client, eve, "Evil"))["id"]
    # Another organization's invitation, through the caller's own organization: 404.
    assert_problem(
        await client.delete(f"{ORGS}/{eve_org}/invitations/{created['id']}", headers=eve), 404
    )
    assert_problem(
        await client.post(f"{ORGS}/{eve_org}/invitations/{created['id']}/resend", headers=eve),
        404,
    )
    assert_problem(
        await client.delete(f"{ORGS}/{acme}/invitations/{created['id']}", headers=eve), 404
    )
    assert [i["state"] for i in await listed(client, ada, acme, "pending")] == ["pending"]

    path = f"{ORGS}/{acme}/invitations/{created['id']}"
    await delivered(app)
    [job] = await invitation_jobs(app)
    assert (await client.delete(path, headers=ada)).status_code == 204
    assert (await client.delete(path, headers=ada)).status_code == 204  # twice is harmless
    # Its email's job run again after the revocation (a replayed dead job) sends nothing.
    await replay(app, job)
    await delivered(app)
    assert len(outbox.to(BOB)) == 1
    assert await listed(client, ada, acme, "pending") == []
    assert_problem(await client.post(f"{path}/resend", headers=ada), 409)
    assert_problem(
        await client.delete(f"{ORGS}/{acme}/invitations/{uuid.uuid4()}", headers=ada), 404
    )


async def test_the_lifetime_is_a_setting(app: FastAPI, client: AsyncClient, outbox: Outbox) -> None:
    app.state.orgs_settings = OrgsSettings(_env_file=None, invitation_ttl_hours=2)
    acme, ada = await acme_of_ada(client)
    created = await invite(client, ada, acme, BOB)
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(hours=1, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=2)
    await delivered(app)
    assert f"until {expires:%Y-%m-%d %H:%M} UTC" in text_of(outbox.to(BOB)[-1])


async def test_accepting_needs_a_session_with_write(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada = await acme_of_ada(client)
    await invite(client, ada, acme, BOB)
    await delivered(app)
    token = outbox.link_token(BOB)
    assert_problem(await client.post("/api/v1/invitations/accept", json={"token": token}), 401)
    await register(client, BOB)
    await mark_verified(app, BOB)
    read_only = await login(client, BOB, scope="read")
    headers = {"Authorization": f"Bearer {read_only['access_token']}"}
    assert_problem(await accept(client, headers, token), 403)
    [row] = await invitation_rows(app)
    assert row.accepted_at is None


async def test_two_acceptances_at_once_join_once(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada = await acme_of_ada(client)
    await invite(client, ada, acme, BOB)
    await delivered(app)
    token = outbox.link_token(BOB)
    bob = await verified_signed_in(app, client, BOB)
    answers = await asyncio.gather(accept(client, bob, token), accept(client, bob, token))
    statuses = sorted(a.status_code for a in answers)
    # The second sees it used (PostgreSQL: it waited for the row's lock; SQLite: the
    # statement that marks it used requires it unused), or on SQLite the database busy.
    assert statuses[0] == 200, [a.text for a in answers]
    assert statuses[1] in (409, 410, 503), [a.text for a in answers]
    assert await members(client, ada, acme) == [["ada@example.com", "owner"], [BOB, "member"]]
