"""``Authorization: Key <key>`` (or ``Bearer <key>``), checked when any key is configured."""

from __future__ import annotations

import time

import redis
from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from openreel import api_keys
from openreel.settings import Settings
from server.errors import FalError

# Counting stored keys on every request would add a Redis round trip to each status poll.
STORED_COUNT_CACHE_S = 2.0


class KeyCheck:
    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.configured = settings.api_keys
        self.redis = connection
        self._stored_count = 0
        self._counted_at = float("-inf")

    def required(self) -> bool:
        if self.configured:
            return True
        if time.monotonic() - self._counted_at > STORED_COUNT_CACHE_S:
            self._stored_count = api_keys.stored_key_count(self.redis)
            self._counted_at = time.monotonic()
        return self._stored_count > 0

    def __call__(self, request: Request) -> None:
        if not self.required():
            return
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("key", "bearer") or not credentials.strip():
            raise FalError(401, "Missing credentials: send 'Authorization: Key <your key>'", "unauthorized")
        if not api_keys.is_valid(self.redis, self.configured, credentials.strip()):
            raise FalError(401, "Invalid API key", "unauthorized")
        request.state.key_owner = api_keys.owner_id(credentials.strip())


# Declares the header to OpenAPI, so /openapi.json marks the operations that need a key; the
# check is KeyCheck's (it also takes ``Bearer`` and knows when the server needs no key at all).
API_KEY_HEADER = APIKeyHeader(
    name="Authorization",
    scheme_name="apiKeyAuth",
    description="`Key <your key>`; needed only when the server has API keys.",
    auto_error=False,
)


def require_key(request: Request, _declared: str | None = Security(API_KEY_HEADER)) -> None:
    request.app.state.key_check(request)


def key_owner(request: Request) -> str | None:
    """The submitting key's owner id, or None where no key is required (everyone shares requests)."""
    return getattr(request.state, "key_owner", None)
