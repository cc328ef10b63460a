"""Redis killed with SIGKILL while requests are queued and running, then restarted on its
append-only file: queued requests survive, the running one recovers or fails clearly, and the
API answers 503 in fal's shape while Redis is down, then recovers by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openreel.redis_server import EmbeddedRedis
from tests.reliability.faults import APP, CLEAR_LOSS_ERRORS, FAULT_STACK_ENV, TINY, is_completed, status, submit
from tests.stack import Stack, wait_until

# Several seconds of denoising: Redis dies while the step callback is talking to it.
LONG = {"prompt": "long", "video_size": {"width": 192, "height": 192}, "num_inference_steps": 50, "use_rife": False}
# appendfsync everysec: a write is on disk within a second, so only the last second may be lost.
AOF_FSYNC_S = 1.0
OUTAGE_S = 4.0
UNAVAILABLE = {"detail": "The queue backend is unavailable; retry shortly.", "error_type": "runner_connection_error"}


@pytest.fixture
def redis_and_stack(tmp_path: Path, models_dir: Path) -> Iterator[tuple[EmbeddedRedis, Stack]]:
    """A stack whose Redis the test owns (same directory and port across restarts)."""
    directory = tmp_path / "stack"
    server = EmbeddedRedis(directory / "data" / "redis")
    url = server.start()
    stack = Stack(directory, models_dir, workers=1, env=FAULT_STACK_ENV | {"OPENREEL_REDIS_URL": url})
    try:
        yield server, stack.start()
    finally:
        stack.stop()
        server.stop()


def answered_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == UNAVAILABLE and response.headers["x-fal-request-id"]


def test_redis_killed_and_restarted(redis_and_stack: tuple[EmbeddedRedis, Stack]) -> None:
    server, stack = redis_and_stack
    with stack.client() as client:
        running = submit(client, LONG)
        queued = [submit(client) for _ in range(4)]
        wait_until(lambda: any(line["message"].startswith("step ") for line in status(client, running)["logs"]))
        time.sleep(AOF_FSYNC_S + 0.5)
        assert server.process is not None
        server.process.kill()
        server.process.wait()

        client.timeout = httpx.Timeout(10)
        started = time.monotonic()
        answered_unavailable(client.get(f"/queue/{APP}/requests/{queued[0]}/status"))
        answered_unavailable(client.post(f"/queue/{APP}", json=TINY))
        answered_unavailable(client.get(f"/queue/{APP}/requests/{queued[0]}"))
        assert time.monotonic() - started < 10, "answers while Redis is down must not hang"
        time.sleep(OUTAGE_S)  # longer than a worker heartbeat's time to live

        server.start()
        # The API reconnects by itself; the workers come back to serve the queue.
        wait_until(lambda: client.get(f"/queue/{APP}/requests/{queued[0]}/status").status_code in (200, 202), timeout_s=30)
        after = submit(client)
        for request_id in [*queued, after, running]:
            wait_until(lambda: is_completed(client, request_id), timeout_s=180)  # noqa: B023
        for request_id in [*queued, after]:
            answer = client.get(f"/queue/{APP}/requests/{request_id}")
            assert answer.status_code == 200 and answer.json()["video"]["url"], (request_id, answer.text)
        outcome = client.get(f"/queue/{APP}/requests/{running}")
        attempts = sum(line["message"].startswith("started on worker") for line in status(client, running)["logs"])
        print(f"request running at the kill: HTTP {outcome.status_code} after {attempts} attempts")
        if outcome.status_code != 200:
            assert outcome.json().get("error_type") in CLEAR_LOSS_ERRORS, outcome.text
