"""``python -m openreel.healthcheck [ROLE]``: the Docker image's HEALTHCHECK, for every role.

One image runs the API, a GPU worker or the io-worker, chosen by its command, and Docker gives
it a single HEALTHCHECK. So the check finds this container's role in PID 1's command line (or
takes it as an argument) and asks what healthy means for that role:

- ``api`` (and ``up``, which serves the API): the API answers ``GET /live`` on its port;
- ``worker``: a worker on this host is registered, loaded and serving (ready or busy);
- ``io-worker``: an RQ worker on this host listens on the webhooks queue.

Workers are found by host name because each container has its own. The exit status is Docker's
convention (0 healthy, 1 not), with one line saying why. It never imports torch: it runs every
30 s next to a worker that may hold the GPU's memory.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import redis
from pydantic import ValidationError
from rq import Queue, Worker

from openreel import worker_registry
from openreel.settings import Settings, load_settings
from openreel.webhooks import WEBHOOK_QUEUE

LIVE_PATH = "/live"
ROLES = ("api", "up", "worker", "io-worker")
TIMEOUT_S = 5.0


class Unhealthy(Exception):
    """Why this container is not healthy."""


def role_from_command(argv: list[str]) -> str | None:
    """The openreel subcommand in a command line (``openreel worker``, ``python -m openreel.cli api``,
    either behind an init such as ``docker-init --``, or a worker group's ``torchrun ... openreel
    worker``, whose rank 0 registers like any worker)."""
    return next((arg for arg in argv if arg in ROLES), None)


def main_process_command(proc: Path = Path("/proc")) -> list[str]:
    raw = (proc / "1" / "cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def check_api(settings: Settings) -> str:
    # A wildcard bind is reached on loopback; a specific address only on itself.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    scheme = "https" if settings.tls_cert else "http"
    url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{settings.port}{LIVE_PATH}"
    try:
        # The certificate names the public host, not loopback; this checks liveness, not identity.
        answer = httpx.get(url, timeout=TIMEOUT_S, verify=False)
    except httpx.HTTPError as error:
        raise Unhealthy(f"{url}: {type(error).__name__}: {error}") from None
    if answer.status_code != 200:
        raise Unhealthy(f"{url}: HTTP {answer.status_code}")
    return f"{url}: HTTP 200"


def check_worker(connection: redis.Redis, hostname: str) -> str:
    mine = [w for w in worker_registry.live_workers(connection) if w.get("host") == hostname]
    serving = [w for w in mine if w.get("state") in worker_registry.SERVING]
    if serving:
        return f"worker {serving[0]['name']} is {serving[0]['state']}"
    if mine:
        raise Unhealthy(f"worker {mine[0]['name']} is {mine[0].get('state')}")
    raise Unhealthy(f"no live worker of host {hostname} in the registry (still loading, or gone)")


def check_io_worker(connection: redis.Redis, hostname: str) -> str:
    listening = Worker.all(connection=connection, queue=Queue(WEBHOOK_QUEUE, connection=connection))
    mine = [w for w in listening if w.hostname == hostname]
    if not mine:
        raise Unhealthy(f"no RQ worker of host {hostname} on the {WEBHOOK_QUEUE} queue")
    return f"io-worker {mine[0].name} is {mine[0].get_state()}"


def check(role: str, settings: Settings) -> str:
    if role in ("api", "up"):
        return check_api(settings)
    if settings.redis_url is None:
        raise Unhealthy("OPENREEL_REDIS_URL is not set")
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        if role == "worker":
            return check_worker(connection, socket.gethostname())
        return check_io_worker(connection, socket.gethostname())
    except redis.RedisError as error:
        raise Unhealthy(f"Redis: {error}") from None
    finally:
        connection.close()


def main(argv: list[str], proc: Path = Path("/proc")) -> int:
    role = argv[0] if argv else role_from_command(main_process_command(proc))
    if role is None:
        # A one-off command (fetch-weights, keys, a shell): nothing that serves, nothing to fail.
        print("no openreel service in this container's command; nothing to check")
        return 0
    if role not in ROLES:
        print(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        return 1
    try:
        print(check(role, load_settings()))
    except (Unhealthy, ValidationError) as reason:
        print(f"unhealthy: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
