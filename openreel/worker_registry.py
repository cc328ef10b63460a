"""Which workers are alive and what they are doing, for ``GET /health``, metrics and ``openreel status``.

Each worker refreshes a key with a TTL from its heartbeat thread; a worker that dies simply
stops refreshing it, so no one has to clean up after a kill -9.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import redis

INDEX_KEY = "openreel:workers"

State = Literal["starting", "loading", "ready", "busy", "failed"]
STATES: tuple[State, ...] = ("starting", "loading", "ready", "busy", "failed")
# A busy worker is loaded and serving; it only takes the next job when this one ends.
SERVING: frozenset[str] = frozenset({"ready", "busy"})


def process_name(prefix: str = "") -> str:
    """A unique name for this worker process: ``[prefix.]host.pid.suffix``, so logs and Redis's
    client list tell which machine and process it is."""
    return f"{prefix}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


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


class Presence:
    """One worker's registry entry: its info and state, published at once on every change and
    again on every heartbeat (with fresh figures from ``probe``, such as GPU memory)."""

    def __init__(
        self,
        connection: redis.Redis,
        name: str,
        info: dict[str, Any],
        ttl_s: int,
        probe: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.redis, self.name, self.ttl_s, self.probe = connection, name, ttl_s, probe
        self.info = {"name": name, **info}
        self._details: set[str] = set()
        self._lock = threading.Lock()  # the heartbeat thread and the job loop both publish

    def set_state(self, state: State, **details: Any) -> None:
        """Publish ``state``; ``details`` (a request id, an error) last until the next change."""
        with self._lock:
            self.info = {key: value for key, value in self.info.items() if key not in self._details}
            self._details = set(details)
            self.info.update(details, state=state, state_since=time.time())
            self._publish()

    def refresh(self) -> None:
        with self._lock:
            self._publish()

    def withdraw(self) -> None:
        withdraw(self.redis, self.name)

    def _publish(self) -> None:
        self.info.update(self.probe())
        announce(self.redis, self.name, self.info, self.ttl_s)
