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
from typing import Any

import redis

STORE_KEY = "openreel:api-keys"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def owner_id(key: str) -> str:
    """What a request record keeps of the key that submitted it: its digest, never the key."""
    return _digest(key)


def create_key(connection: redis.Redis, name: str) -> str:
    """A new key of the form ``<id>:<secret>`` (fal's id:secret shape); only its hash is kept,
    with the id, so operators can list and revoke keys without holding them."""
    key_id = secrets.token_hex(8)
    key = f"{key_id}:{secrets.token_urlsafe(32)}"
    entry = {"id": key_id, "name": name, "created_at": time.time()}
    connection.hset(STORE_KEY, _digest(key), json.dumps(entry))
    return key


def list_keys(connection: redis.Redis) -> list[dict[str, Any]]:
    """Id, name and creation time of each stored key, oldest first. Keys stored before ids were
    kept show the start of their digest as id."""
    keys = []
    for digest, entry in connection.hgetall(STORE_KEY).items():
        info = json.loads(entry)
        keys.append({**info, "id": info.get("id") or digest.decode()[:16]})
    return sorted(keys, key=lambda info: info.get("created_at") or 0)


def revoke_key(connection: redis.Redis, key_or_id: str) -> bool:
    """Revoke by the whole key, or by the id ``list_keys`` shows."""
    if connection.hdel(STORE_KEY, _digest(key_or_id)):
        return True
    for digest, entry in connection.hgetall(STORE_KEY).items():
        if key_or_id in (json.loads(entry).get("id"), digest.decode()[:16]):
            return bool(connection.hdel(STORE_KEY, digest))
    return False


def stored_key_count(connection: redis.Redis) -> int:
    return int(connection.hlen(STORE_KEY))


def is_valid(connection: redis.Redis, configured: list[str], key: str) -> bool:
    if any(hmac.compare_digest(key.encode(), known.encode()) for known in configured):
        return True
    return bool(connection.hexists(STORE_KEY, _digest(key)))
