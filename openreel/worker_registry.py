"""Which workers are alive and ready, for ``GET /health``.

Each worker refreshes a key with a TTL from its heartbeat thread; a worker that dies simply
stops refreshing it, so no one has to clean up after a kill -9.
"""

from __future__ import annotations

import json
from typing import Any

import redis

INDEX_KEY = "openreel:workers"


def _key(name: str) -> str:
    return f"openreel:worker:{name}"


def announce(connection: redis.Redis, name: str, info: dict[str, Any], ttl_s: int) -> None:
    with connection.pipeline(transaction=False) as pipe:
        pipe.sadd(INDEX_KEY, name)
        pipe.set(_key(name), json.dumps(info), ex=ttl_s)
        pipe.execute()


def withdraw(connection: redis.Redis, name: str) -> None:
    with connection.pipeline(transaction=False) as pipe:
        pipe.srem(INDEX_KEY, name)
        pipe.delete(_key(name))
        pipe.execute()


def live_workers(connection: redis.Redis) -> list[dict[str, Any]]:
    names = sorted(member.decode() for member in connection.smembers(INDEX_KEY))
    if not names:
        return []
    infos = connection.mget([_key(name) for name in names])
    gone = [name for name, info in zip(names, infos, strict=True) if info is None]
    if gone:
        connection.srem(INDEX_KEY, *gone)
    return [json.loads(info) for info in infos if info is not None]
