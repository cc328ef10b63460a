"""Queue and worker behaviour with real worker processes: priority, start timeout, cancellation of
running work, and a worker killed with SIGKILL mid-job."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from openreel.records import RecordStore, RequestRecord
from tests.stack import Stack, wait_until

APP = "fal-ai/cogvideox-5b"
SMALL = {"prompt": "a small one", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2}
# ~7 s of denoising on the tiny preset (cancellable at every step), then ~9 s of VAE decode.
# Without RIFE: these jobs are about queueing, and interpolating 320x320 frames is slow on a CPU.
SLOW = {
    "prompt": "a slow one", "video_size": {"width": 320, "height": 320}, "num_inference_steps": 50, "use_rife": False
}


def submit(client: httpx.Client, payload: dict[str, Any], **headers: str) -> str:
    response = client.post(f"/queue/{APP}", json=payload, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def status(client: httpx.Client, request_id: str) -> dict[str, Any]:
    return client.get(f"/queue/{APP}/requests/{request_id}/status", params={"logs": 1}).json()


def denoising(client: httpx.Client, request_id: str) -> bool:
    return any(log["message"].startswith("step ") for log in status(client, request_id)["logs"] or [])


def completed(client: httpx.Client, request_id: str) -> bool:
    return status(client, request_id)["status"] == "COMPLETED"


def cancel(client: httpx.Client, request_id: str) -> None:
    assert client.put(f"/queue/{APP}/requests/{request_id}/cancel").status_code == 202


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory, models_dir: Any) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("one-worker"), models_dir, workers=1).start()
    yield stack
    stack.stop()


@pytest.fixture
def client(one_worker: Stack) -> Iterator[httpx.Client]:
    with one_worker.client() as http:
        yield http


def records(stack: Stack) -> RecordStore:
    return RecordStore(redis.Redis.from_url(stack.redis_url), retention_s=3600)


def test_low_priority_requests_start_after_all_normal_ones(one_worker: Stack, client: httpx.Client) -> None:
    blocker = submit(client, SLOW)
    wait_until(lambda: denoising(client, blocker))
    order = [
        ("low-1", submit(client, SMALL, **{"x-fal-queue-priority": "low"})),
        ("normal-1", submit(client, SMALL)),
        ("low-2", submit(client, SMALL, **{"x-fal-queue-priority": "low"})),
        ("normal-2", submit(client, SMALL, **{"x-fal-queue-priority": "normal"})),
    ]
    cancel(client, blocker)
    wait_until(lambda: all(completed(client, rid) for _, rid in order))
    store = records(one_worker)
    started = sorted(order, key=lambda item: store.get(item[1]).started_at)  # type: ignore[union-attr]
    assert [name for name, _ in started] == ["normal-1", "normal-2", "low-1", "low-2"]


def test_start_timeout_passes_while_the_worker_is_busy(client: httpx.Client) -> None:
    blocker = submit(client, SLOW)
    wait_until(lambda: denoising(client, blocker))
    late = submit(client, SMALL, **{"x-fal-request-timeout": "1.5"})
    wait_until(lambda: completed(client, late), timeout_s=10)
    result = client.get(f"/queue/{APP}/requests/{late}")
    assert result.status_code == 504
    assert result.headers["x-fal-request-timeout-type"] == "user"
    assert result.json()["error_type"] == "request_timeout"
    cancel(client, blocker)
    wait_until(lambda: completed(client, blocker))


def test_cancel_of_running_work_stops_it_and_frees_the_worker(one_worker: Stack, client: httpx.Client) -> None:
    running = submit(client, SLOW)
    wait_until(lambda: denoising(client, running))
    cancel(client, running)
    wait_until(lambda: completed(client, running), timeout_s=5)  # the next step boundary, not the decode
    final = status(client, running)
    assert final["error_type"] == "request_cancelled"
    messages = [log["message"] for log in final["logs"]]
    assert "decoding" not in messages
    assert client.get(f"/queue/{APP}/requests/{running}").status_code == 499
    after = submit(client, SMALL)
    wait_until(lambda: completed(client, after), timeout_s=30)
    assert client.get(f"/queue/{APP}/requests/{after}").status_code == 200


def test_store_io_off_drops_the_payload_after_the_first_read(client: httpx.Client) -> None:
    request_id = submit(client, SMALL, **{"x-fal-store-io": "0"})
    wait_until(lambda: completed(client, request_id), timeout_s=30)
    assert client.get(f"/queue/{APP}/requests/{request_id}").status_code == 200
    assert client.get(f"/queue/{APP}/requests/{request_id}").status_code == 404


def worker_pid(record: RequestRecord) -> int:
    assert record.worker is not None
    return int(record.worker.split(".")[-2])  # names are host.pid.suffix


def test_a_killed_worker_s_request_is_run_again_by_another_worker(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=0).start(wait_ready=False)
    first = stack.start_worker()
    stack.wait(ready=True)
    store = records(stack)
    with stack.client() as http:
        request_id = submit(http, SLOW)
        wait_until(lambda: denoising(http, request_id))
        assert worker_pid(store.get(request_id)) == first.pid  # type: ignore[arg-type]
        os.kill(first.pid, signal.SIGKILL)
        second = stack.start_worker()
        wait_until(lambda: completed(http, request_id), timeout_s=120)
        record = store.get(request_id)
        assert record is not None and record.error is None and record.attempts == 2
        assert worker_pid(record) == second.pid
        assert "worker lost; request re-queued" in [log["message"] for log in status(http, request_id)["logs"]]
        assert http.get(f"/queue/{APP}/requests/{request_id}").json()["video"]["url"]

        # With x-fal-no-retry the same loss ends the request with a clear error instead.
        once = submit(http, SLOW, **{"x-fal-no-retry": "1"})
        wait_until(lambda: denoising(http, once))
        os.kill(second.pid, signal.SIGKILL)
        stack.start_worker()
        wait_until(lambda: completed(http, once), timeout_s=120)
        result = http.get(f"/queue/{APP}/requests/{once}")
        assert (result.status_code, result.json()["error_type"]) == (503, "runner_disconnected")


def test_a_long_job_is_not_taken_for_abandoned_while_its_worker_lives(stack: Stack) -> None:
    """The run outlasts the heartbeat TTL many times over while the other worker sweeps every second."""
    with stack.client() as http:
        request_id = submit(http, SLOW)
        wait_until(lambda: completed(http, request_id), timeout_s=180)
        record = records(stack).get(request_id)
        assert record is not None and record.error is None and record.attempts == 1
        assert record.inference_time > 3 * int(stack.child_env()["OPENREEL_HEARTBEAT_TTL_S"])  # type: ignore[operator]
