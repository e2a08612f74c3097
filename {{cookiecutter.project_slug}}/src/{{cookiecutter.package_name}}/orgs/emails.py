"""The invitation email. Composed by the job that sends it (orgs/jobs.py), so the link's
token is made when it is sent and stored nowhere."""

from __future__ import annotations

from datetime import datetime

from {{ cookiecutter.package_name }}.auth.emails import link
from {{ cookiecutter.package_name }}.core.email import Email

ACCEPT_PATH = "accept-invitation"


def invitation(
    to: str,
    *,
    app_name: str,
    org_name: str,
    inviter: str | None,
    role: str,
    frontend_url: str,
    token: str,
    expires_at: datetime,
) -> Email:
    who = inviter or "Someone"
    org_name = " ".join(org_name.split())  # a name is free text: one line in the subject
    body = (
        f"{who} invited you to join {org_name} on {app_name} as {role}.\n"
        "\n"
        "To accept, sign in with this email address (verified) and open this link:\n"
        "\n"
        f"{link(frontend_url, ACCEPT_PATH, token)}\n"
        "\n"
        f"The link works once, until {expires_at:%Y-%m-%d %H:%M} UTC. If you did not expect\n"
        "this invitation, ignore this email.\n"
    )
    return Email(to=to, subject=f"Join {org_name} on {app_name}", body=body)
