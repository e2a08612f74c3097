"""Tokens and hashes: signed JWTs (joserfc), random opaque tokens, Argon2 passwords (pwdlib)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.jwt import JWTClaimsRegistry
from pwdlib import PasswordHash

ALGORITHM = "HS256"
API_KEY_PREFIX = "sk_"

_password_hash = PasswordHash.recommended()  # Argon2id with the library's current parameters
# Verified against when the email is unknown, so a login costs the same either way.
_DUMMY_HASH = _password_hash.hash(secrets.token_urlsafe(16))


class InvalidTokenError(Exception):
    """A token that is malformed, signed with another key or algorithm, expired or misused."""


class TokenSigner:
    """Signs and checks the app's JWTs with a key derived from SECRET_KEY, per purpose."""

    def __init__(self, secret_key: str) -> None:
        self._keys: dict[str, OctKey] = {}
        self._secret = secret_key.encode()

    def _key(self, purpose: str) -> OctKey:
        key = self._keys.get(purpose)
        if key is None:
            derived = hmac.new(self._secret, f"auth:{purpose}".encode(), hashlib.sha256).digest()
            key = self._keys[purpose] = OctKey.import_key(derived)
        return key

    def encode(self, purpose: str, claims: dict[str, Any], ttl: int) -> str:
        now = int(time.time())
        payload = {"iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex, **claims}
        return jwt.encode({"alg": ALGORITHM}, payload, self._key(purpose))

    def decode(self, purpose: str, token: str) -> dict[str, Any]:
        """The claims of a valid token of this purpose; InvalidTokenError otherwise."""
        try:
            decoded = jwt.decode(token, self._key(purpose), algorithms=[ALGORITHM])
            JWTClaimsRegistry(
                exp={"essential": True}, sub={"essential": True}, iat={"essential": True}
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidTokenError(str(exc)) from exc
        return decoded.claims


def new_token() -> str:
    """An opaque random token (refresh tokens)."""
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """(the full key shown once, its visible prefix)."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:12]


def token_hash(token: str) -> str:
    """SHA-256 of a high-entropy token; enough for lookups (no salt or slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def password_fingerprint(hashed_password: str | None) -> str:
    """A short digest of the current password hash: reset links die once it changes."""
    return hashlib.sha256((hashed_password or "-").encode()).hexdigest()[:16]


async def hash_password(password: str) -> str:
    """Argon2 in a worker thread: the event loop keeps serving other requests."""
    return await to_thread.run_sync(_password_hash.hash, password)


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    new_hash: str | None  # set when the stored hash used older parameters


async def verify_password(password: str, hashed: str | None) -> PasswordCheck:
    if hashed is None:
        await to_thread.run_sync(_password_hash.verify, password, _DUMMY_HASH)
        return PasswordCheck(ok=False, new_hash=None)
    ok, new_hash = await to_thread.run_sync(_password_hash.verify_and_update, password, hashed)
    return PasswordCheck(ok=ok, new_hash=new_hash)
