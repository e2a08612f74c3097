"""Invitation tokens: made from a random nonce and SECRET_KEY, stored as a SHA-256.

    token = "<organization id, hex>." + HMAC(key derived from SECRET_KEY, "<invitation id>:<nonce>")

The nonce travels in the email job's arguments, the token's SHA-256 sits in the
invitation's row, and the token itself only in the email: reading the database (the
jobs and invitations tables together) gives no link that works. Sending again draws
a new nonce, so the old link stops working. The organization's id in front lets the
acceptance enter the organization (row-level security on PostgreSQL) before it looks
the invitation up; it grants nothing.
"""

from __future__ import annotations

import secrets
import uuid

from {{ cookiecutter.package_name }}.auth.security import TokenSigner, token_hash

PURPOSE = "org-invitation"


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def invitation_token(
    signer: TokenSigner, org_id: uuid.UUID, invitation_id: uuid.UUID, nonce: str
) -> str:
    return f"{org_id.hex}.{signer.mac(PURPOSE, f'{invitation_id}:{nonce}')}"


def stored_hash(
    signer: TokenSigner, org_id: uuid.UUID, invitation_id: uuid.UUID, nonce: str
) -> str:
    """What the invitation's row keeps: the token's SHA-256."""
    return token_hash(invitation_token(signer, org_id, invitation_id, nonce))


def org_of(token: str) -> uuid.UUID | None:
    """The organization a token names (unchecked), or None for a malformed token."""
    org, dot, _mac = token.partition(".")
    if not dot or len(org) != 32:
        return None
    try:
        return uuid.UUID(hex=org)
    except ValueError:
        return None
