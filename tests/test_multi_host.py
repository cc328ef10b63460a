"""Several hosts sharing one Redis and one bucket: an API and two workers as separate processes,
each with its own data directory, as separate machines would run them.

Also measures what one request costs Redis (``INFO commandstats``), the figures behind the
scaling note in docs/architecture.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from openreel.redis_server import EmbeddedRedis, free_port
from openreel.records import RecordStore
from openreel.worker_registry import live_workers
from tests.s3server import S3Server
from tests.stack import wait_until

APP = "fal-ai/cogvideox-5b"
SMALL = {
    "prompt": "two hosts",
    "video_size": {"width": 32, "height": 32},
    "num_inference_steps": 2,
    "use_rife": False,
    "export_fps": 8,
}


class Hosts:
    """Processes that share nothing but the Redis URL, the bucket and the endpoint list."""

    def __init__(self, directory: Path, models_dir: Path, redis_url: str, storage_env: dict[str, str]) -> None:
        self.directory, self.redis_url = directory, redis_url
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENREEL_", "FAL_"))}
        # Production heartbeat and maintenance intervals: the Redis figures below are for those.
        self.env = base | storage_env | {
            "OPENREEL_REDIS_URL": redis_url,
            "OPENREEL_ENDPOINTS": APP,
            "OPENREEL_MODELS": "tiny",
            "OPENREEL_MODEL_CACHE_DIR": str(models_dir),
            "OPENREEL_WARMUP": "false",
            "HF_HUB_OFFLINE": "1",
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: str, **env: str) -> subprocess.Popen[bytes]:
        data_dir = self.directory / name
        data_dir.mkdir(parents=True)
        log = open(data_dir / "log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(
            [sys.executable, "-m", "openreel.cli", command],
            env=self.env | {"OPENREEL_DATA_DIR": str(data_dir), **env},
            stdout=log,
            stderr=log,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[str, S3Server]]:
    server = EmbeddedRedis(tmp_path / "redis")
    bucket = S3Server.start()
    yield server.start(), bucket
    bucket.stop()
    server.stop()


def command_calls(connection: redis.Redis) -> Counter[str]:
    """Calls so far per command, as the server counts them (INFO itself left out)."""
    stats = connection.info("commandstats")
    return Counter(
        {name.removeprefix("cmdstat_"): entry["calls"] for name, entry in stats.items() if name != "cmdstat_info"}
    )


def test_two_worker_hosts_share_the_queue_and_survive_losing_one(
    tmp_path: Path, models_dir: Path, shared: tuple[str, S3Server]
) -> None:
    redis_url, bucket = shared
    connection = redis.Redis.from_url(redis_url)
    hosts = Hosts(tmp_path, models_dir, redis_url, bucket.env())
    port = free_port()
    try:
        hosts.start("api", "api", OPENREEL_PORT=str(port))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            wait_until(lambda: _answers(http), timeout_s=60)
            store = RecordStore(connection, retention_s=3600)

            # Submission alone, before any worker exists: the API's share of a request.
            count = 4
            before = command_calls(connection)
            queued = [_submit(http) for _ in range(count)]
            submit_calls = sum((command_calls(connection) - before).values()) / count

            workers = [hosts.start(f"worker{i}", "worker") for i in range(2)]
            wait_until(lambda: all(_completed(http, i) for i in queued), timeout_s=180, interval_s=0.5)
            for request_id in queued:
                output = http.get(f"/queue/{APP}/requests/{request_id}").json()
                assert output["video"]["url"].startswith(bucket.endpoint_url)

            # Both workers now wait in BLMOVE; Redis hands new jobs to blocked clients in turn.
            wait_until(lambda: [w["state"] for w in live_workers(connection)] == ["ready", "ready"], timeout_s=30)
            # Their idle background (heartbeats, dequeue passes, maintenance), taken off the
            # figure below so it is what the requests themselves cost.
            before, idle_s = command_calls(connection), 4.0
            time.sleep(idle_s)
            idle = command_calls(connection) - before
            before, started, polls = command_calls(connection), time.monotonic(), 0

            def all_done(ids: list[str]) -> bool:
                nonlocal polls
                polls += len(ids)  # one HGET each, taken off too
                return all(connection.hget(f"openreel:req:{i}", "status") == b'"COMPLETED"' for i in ids)

            spread = [_submit(http) for _ in range(count)]
            wait_until(lambda: all_done(spread), timeout_s=120, interval_s=0.5)
            scale = (time.monotonic() - started) / idle_s
            used = command_calls(connection) - before
            used.subtract({name: round(calls * scale) for name, calls in idle.items()})
            used.subtract({"hget": polls})
            request_calls = sum(used.values()) / count
            top = ", ".join(f"{name} {calls / count:.1f}" for name, calls in used.most_common(8))
            before = command_calls(connection)
            http.get(f"/queue/{APP}/requests/{spread[0]}/status", params={"logs": 1})
            poll_calls = sum((command_calls(connection) - before).values())
            print(  # the figures docs/architecture.md quotes
                f"\nRedis commands per request: submit {submit_calls:.1f}, whole request {request_calls:.1f} ({top}); "
                f"status poll with logs {poll_calls}; "
                f"idle background of 2 workers {sum(idle.values()) / idle_s:.2f}/s; "
                f"{len(connection.client_list())} connections (API, 2 workers, this test)"
            )
            assert submit_calls < 40 and request_calls < 200 and poll_calls < 10

            served = {store.get(i).worker for i in spread}  # type: ignore[union-attr]
            assert len(served) == 2, f"one worker took everything: {served}"

            # One host goes away without a word; the other serves everything from then on.
            lost, survivor = workers
            os.kill(lost.pid, signal.SIGKILL)
            lost.wait()
            later = [_submit(http) for _ in range(count)]
            wait_until(lambda: all(_completed(http, i) for i in later), timeout_s=120, interval_s=0.3)
            assert {_pid(store.get(i).worker) for i in later} == {survivor.pid}  # type: ignore[union-attr]
            assert all(store.get(i).error is None for i in later)  # type: ignore[union-attr]
    finally:
        hosts.stop()


def _pid(worker_name: str | None) -> int:
    assert worker_name is not None
    return int(worker_name.split(".")[-2])  # names are host.pid.suffix


def _answers(http: httpx.Client) -> bool:
    try:
        http.get("/health")
        return True
    except httpx.TransportError:
        return False


def _submit(http: httpx.Client) -> str:
    response = http.post(f"/queue/{APP}", json=SMALL)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def _completed(http: httpx.Client, request_id: str) -> bool:
    return http.get(f"/queue/{APP}/requests/{request_id}/status").json()["status"] == "COMPLETED"
