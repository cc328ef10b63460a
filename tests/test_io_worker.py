"""The io-worker stays up while it waits for webhooks, longer than any client socket timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from openreel.redis_server import EmbeddedRedis


def test_an_idle_io_worker_keeps_running(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENREEL_")}
    # Its blocking pop lasts OPENREEL_MAINTENANCE_S: longer than redis-py's default 5 s timeout.
    env |= {"OPENREEL_REDIS_URL": url, "OPENREEL_DATA_DIR": str(tmp_path), "OPENREEL_MAINTENANCE_S": "8"}
    log = tmp_path / "io-worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "openreel.cli", "io-worker"], env=env, stdout=out, stderr=out)
    try:
        time.sleep(12)
        assert process.poll() is None, log.read_text()
        assert "Redis connection timeout" not in log.read_text()
    finally:
        process.terminate()
        process.wait(30)
        server.stop()
