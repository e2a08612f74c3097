"""The orgs module's background job: the invitation email.

Enqueued in the request's transaction (an invitation rolled back sends nothing). Its
arguments hold the invitation's id and a random nonce, no token: the link's token is
an HMAC of both under a key derived from SECRET_KEY (`service.invitation_token`),
made when the job runs; the invitations table holds only the token's SHA-256. So
neither the jobs table, nor the invitations table, nor both together open an
invitation without SECRET_KEY. An invitation that is no longer pending, or was sent
again since (a new nonce), is not sent. SMTP refusing or away: retried with backoff,
then kept as dead (`python -m <package> jobs list`).
"""

from __future__ import annotations

import uuid

import structlog
from pydantic import BaseModel

from {{ cookiecutter.package_name }}.auth.dependencies import get_auth_state
from {{ cookiecutter.package_name }}.auth.models import User, utcnow
from {{ cookiecutter.package_name }}.auth.security import token_hash
from {{ cookiecutter.package_name }}.core.email import get_mailer
from {{ cookiecutter.package_name }}.core.jobs import JobContext, job

from . import emails
from .models import Invitation, Organization
from .scoping import enter_org
from .tokens import invitation_token

log = structlog.get_logger(__name__)

# As the auth emails: SMTP away, retried after about 10 s, 20 s, 40 s ... then dead.
EMAIL_ATTEMPTS = 8
EMAIL_BACKOFF = 10.0
EMAIL_TIMEOUT = 60.0


class SendInvitation(BaseModel):
    org_id: uuid.UUID
    invitation_id: uuid.UUID
    nonce: str  # with SECRET_KEY it makes the link's token; alone it opens nothing


@job(
    "orgs.send_invitation",
    max_attempts=EMAIL_ATTEMPTS,
    backoff=EMAIL_BACKOFF,
    timeout=EMAIL_TIMEOUT,
)
async def send_invitation(ctx: JobContext, args: SendInvitation) -> None:
    """The invitation's link, if it is still pending and was not sent again since."""
    await enter_org(ctx.session, args.org_id)
    invitation = await ctx.session.get(Invitation, args.invitation_id)
    if invitation is None or invitation.state(utcnow()) != "pending":
        log.info("orgs_invitation_dropped", id=ctx.job_id, reason="not pending")
        return
    signer = get_auth_state(ctx.app).tokens.signer
    token = invitation_token(signer, invitation.org_id, invitation.id, args.nonce)
    if token_hash(token) != invitation.token_hash:
        log.info("orgs_invitation_dropped", id=ctx.job_id, reason="sent again since")
        return
    org = await ctx.session.get(Organization, invitation.org_id)
    if org is None:  # deleted with the organization, so not reached; for the type checker
        return
    inviter = await ctx.session.get(User, invitation.invited_by) if invitation.invited_by else None
    email = emails.invitation(
        invitation.email,
        app_name=ctx.app.title,
        org_name=org.name,
        inviter=inviter.email if inviter else None,
        role=invitation.role,
        frontend_url=get_auth_state(ctx.app).settings.frontend_url,
        token=token,
        expires_at=invitation.expires_at,
    )
    # Raises while the server refuses or is away: the attempt fails and is retried.
    await get_mailer(ctx.app).send(email.to, email.subject, email.body)
