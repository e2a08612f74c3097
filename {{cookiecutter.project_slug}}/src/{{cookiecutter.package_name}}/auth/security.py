"""Tokens and hashes: signed JWTs (joserfc), random opaque tokens, Argon2 passwords (pwdlib)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import argon2
from anyio import to_thread
from joserfc.errors import JoseError
from pwdlib import PasswordHash

from {{ cookiecutter.package_name }}.core.cache import Recent

# joserfc's keys and JWTs (with `cryptography`, ~30 ms) are imported by the first token
# signed or checked, not at start-up (docs/benchmarks.md, start-up).
if TYPE_CHECKING:
    from joserfc.jwk import OctKey

ALGORITHM = "HS256"
API_KEY_PREFIX = "sk_"

_password_hash = PasswordHash.recommended()  # Argon2id with argon2-cffi's default parameters


def _unmatchable_hash() -> str:
    """An Argon2id hash with the parameters of new hashes, which no password matches.

    Verified against when the email is unknown, so a login costs the same either way: the
    check runs the whole Argon2 computation, then compares with a random digest. Written
    out rather than hashed at import, which cost every process about 0.15 s of CPU and
    64 MiB (Argon2's memory) before it could answer (docs/benchmarks.md, start-up).
    """

    def b64(size: int) -> str:
        return base64.b64encode(secrets.token_bytes(size)).rstrip(b"=").decode()

    return (
        f"$argon2id$v={argon2.low_level.ARGON2_VERSION}"
        f"$m={argon2.DEFAULT_MEMORY_COST},t={argon2.DEFAULT_TIME_COST},"
        f"p={argon2.DEFAULT_PARALLELISM}"
        f"${b64(argon2.DEFAULT_RANDOM_SALT_LENGTH)}${b64(argon2.DEFAULT_HASH_LENGTH)}"
    )


_DUMMY_HASH = _unmatchable_hash()


class InvalidTokenError(Exception):
    """A token that is malformed, signed with another key or algorithm, expired or misused."""


# Access tokens verified a moment ago, remembered so that a client's repeated
# requests with one token do not check its signature each time (Envoy's JWT filter
# keeps such a cache too). Same bytes, same signature: only the expiry can change
# the answer, and it is checked on every use. Only access tokens: the others are
# used once, and some carry nested data that their callers change.
REMEMBERED_PURPOSES = frozenset({"access"})
VERIFIED_SECONDS = 300
VERIFIED_SIZE = 10_000


class TokenSigner:
    """Signs and checks the app's JWTs with a key derived from SECRET_KEY, per purpose."""

    def __init__(self, secret_key: str) -> None:
        self._keys: dict[str, OctKey] = {}
        self._secret = secret_key.encode()
        self._verified: Recent[tuple[str, str], dict[str, Any]] = Recent(
            VERIFIED_SECONDS, VERIFIED_SIZE
        )

    def _key(self, purpose: str) -> OctKey:
        key = self._keys.get(purpose)
        if key is None:
            from joserfc.jwk import OctKey

            derived = hmac.new(self._secret, f"auth:{purpose}".encode(), hashlib.sha256).digest()
            key = self._keys[purpose] = OctKey.import_key(derived)
        return key

    def mac(self, purpose: str, data: str) -> str:
        """An HMAC-SHA256 of `data` with this purpose's key (URL-safe base64, 43 characters)."""
        key = self._key(purpose).raw_value
        digest = hmac.new(key, data.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of a session (refresh family): only this server can compute it."""
        return self.mac("csrf", session_id)

    def successor(self, refresh_token: str, salt: str) -> str:
        """The refresh token a rotation of `refresh_token` issues.

        Derived, not random, so that the just-rotated token presented again within the
        grace window gets the same successor back (not a second live token), with
        nothing but hashes in the database. `salt` is the stored token's row id, which
        no client sees: deriving a successor takes the token, SECRET_KEY and the
        database together.
        """
        return self.mac("refresh-successor", f"{salt}:{refresh_token}")

    def encode(self, purpose: str, claims: dict[str, Any], ttl: int) -> str:
        now = int(time.time())
        payload = {"iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex, **claims}
        from joserfc import jwt

        return jwt.encode({"alg": ALGORITHM}, payload, self._key(purpose))

    def decode(self, purpose: str, token: str) -> dict[str, Any]:
        """The claims of a valid token of this purpose; InvalidTokenError otherwise."""
        claims = self._verified.get((purpose, token))
        if claims is None:
            from joserfc import jwt

            try:
                claims = jwt.decode(token, self._key(purpose), algorithms=[ALGORITHM]).claims
                jwt.JWTClaimsRegistry(
                    exp={"essential": True}, sub={"essential": True}, iat={"essential": True}
                ).validate(claims)
            except (JoseError, ValueError, TypeError) as exc:
                raise InvalidTokenError(str(exc)) from exc
            if purpose in REMEMBERED_PURPOSES:
                self._verified.put((purpose, token), claims)
        elif claims["exp"] <= int(time.time()):  # as joserfc's check: expired at exp
            raise InvalidTokenError("expired_token: The token is expired")
        return dict(claims)


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
