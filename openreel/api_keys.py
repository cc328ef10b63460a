"""API keys: those in ``OPENREEL_API_KEYS`` plus those made with ``openreel keys create``.

Created keys are stored in Redis as SHA-256 hashes only, so every API process sharing the
Redis accepts them and a Redis dump does not reveal them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

import redis

STORE_KEY = "openreel:api-keys"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def owner_id(key: str) -> str:
    """What a request record keeps of the key that submitted it: its digest, never the key."""
    return _digest(key)


def create_key(connection: redis.Redis, name: str) -> str:
    """A new key of the form ``<id>:<secret>`` (fal's id:secret shape); only its hash is kept."""
    key = f"{secrets.token_hex(8)}:{secrets.token_urlsafe(32)}"
    connection.hset(STORE_KEY, _digest(key), json.dumps({"name": name, "created_at": time.time()}))
    return key


def revoke_key(connection: redis.Redis, key: str) -> bool:
    return bool(connection.hdel(STORE_KEY, _digest(key)))


def stored_key_count(connection: redis.Redis) -> int:
    return int(connection.hlen(STORE_KEY))


def is_valid(connection: redis.Redis, configured: list[str], key: str) -> bool:
    if any(hmac.compare_digest(key.encode(), known.encode()) for known in configured):
        return True
    return bool(connection.hexists(STORE_KEY, _digest(key)))
