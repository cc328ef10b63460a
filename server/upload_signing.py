"""Signatures for presigned upload URLs and CDN tokens.

One secret per deployment, generated on first use and kept in Redis, so whichever API process
signed a URL, any other accepts it, and a restart does not invalidate uploads in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import redis

SECRET_KEY = "openreel:storage:signing-secret"
TOKEN_PURPOSE = "cdn-token"


class UploadSigner:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            self.redis.set(SECRET_KEY, secrets.token_bytes(32), nx=True)
            self._secret = self.redis.get(SECRET_KEY)
        return self._secret  # type: ignore[return-value]

    def sign(self, *fields: object) -> str:
        message = "\n".join(str(field) for field in fields).encode()
        return hmac.new(self._key(), message, hashlib.sha256).hexdigest()

    def valid(self, signature: str, expires: int, *fields: object) -> bool:
        """True when ``signature`` signs ``(expires, *fields)`` and ``expires`` has not passed."""
        # As bytes: compare_digest refuses str with non-ASCII characters, which a URL can carry.
        expected = self.sign(expires, *fields).encode()
        return expires >= time.time() and hmac.compare_digest(signature.encode(), expected)

    def token(self, expires: int) -> str:
        return f"{expires}.{self.sign(expires, TOKEN_PURPOSE)}"

    def valid_token(self, token: str) -> bool:
        expires, _, signature = token.partition(".")
        return expires.isascii() and expires.isdigit() and self.valid(signature, int(expires), TOKEN_PURPOSE)
