"""Cancels that race the request's own progress, on one real worker: before it starts, during
denoising, around the video encoding, after completion, and at once on an idle worker. Each
ends in exactly one final state with the documented status codes, and a cancelled run frees
the worker within one denoising step."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
import redis

from openreel.records import RecordStore
from tests.reliability.faults import APP, TINY, is_completed, status, submit
from tests.stack import Stack, wait_until

# Steps long enough to cancel between, short enough for a quick test.
LONG = {"prompt": "long", "video_size": {"width": 160, "height": 160}, "num_inference_steps": 40, "use_rife": False}


@pytest.fixture
def worker(one_worker_stack: Stack) -> Stack:
    return one_worker_stack


@pytest.fixture
def client(worker: Stack) -> Iterator[httpx.Client]:
    with worker.client() as http:
        yield http


def messages(client: httpx.Client, request_id: str) -> list[str]:
    return [line["message"] for line in status(client, request_id)["logs"]]


def has_logged(client: httpx.Client, request_id: str, prefix: str) -> bool:
    return any(m.startswith(prefix) for m in messages(client, request_id))


def cancel(client: httpx.Client, request_id: str) -> httpx.Response:
    return client.put(f"/queue/{APP}/requests/{request_id}/cancel")


def result(client: httpx.Client, request_id: str) -> httpx.Response:
    return client.get(f"/queue/{APP}/requests/{request_id}")


def store(stack: Stack) -> RecordStore:
    return RecordStore(redis.Redis.from_url(stack.redis_url), retention_s=3600)


def assert_cancelled(client: httpx.Client, request_id: str) -> None:
    answer = result(client, request_id)
    assert answer.status_code == 499 and answer.json()["error_type"] == "request_cancelled", answer.text
    final = status(client, request_id)
    assert (final["status"], final["error_type"]) == ("COMPLETED", "request_cancelled")


def step_seconds(client: httpx.Client, request_id: str) -> float:
    """The longest gap between consecutive step lines: what one denoising step took."""
    logs = status(client, request_id)["logs"]
    times = [datetime.fromisoformat(line["timestamp"]) for line in logs if line["message"].startswith("step ")]
    return max((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))


def test_cancel_before_start_means_it_never_runs(worker: Stack, client: httpx.Client) -> None:
    blocker = submit(client, LONG)
    wait_until(lambda: has_logged(client, blocker, "step "))
    queued = submit(client, TINY)
    answer = cancel(client, queued)
    assert (answer.status_code, answer.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    assert_cancelled(client, queued)  # at once: no worker is involved
    assert cancel(client, blocker).status_code == 202
    wait_until(lambda: is_completed(client, blocker), timeout_s=60)
    after = submit(client, TINY)  # the worker takes the next job, not the cancelled one
    wait_until(lambda: is_completed(client, after), timeout_s=60)
    assert not has_logged(client, queued, "started on worker")
    assert store(worker).get(queued).attempts == 0  # type: ignore[union-attr]


def test_cancel_during_denoising_frees_the_worker_within_a_step(worker: Stack, client: httpx.Client) -> None:
    running = submit(client, LONG)
    wait_until(lambda: sum(m.startswith("step ") for m in messages(client, running)) >= 3)
    assert cancel(client, running).status_code == 202
    follower = submit(client, TINY)
    wait_until(lambda: is_completed(client, running), timeout_s=60)
    assert_cancelled(client, running)
    assert "decoding" not in messages(client, running)
    records = store(worker)
    cancelled = records.get(running)
    wait_until(lambda: records.get(follower).started_at is not None, timeout_s=30)  # type: ignore[union-attr]
    step_s = step_seconds(client, running)
    # Free within one step: the step in flight finishes, then the follower starts straight away.
    handover_s = records.get(follower).started_at - cancelled.finished_at  # type: ignore[union-attr,operator]
    assert handover_s < step_s + 1.0, (handover_s, step_s)
    wait_until(lambda: is_completed(client, follower), timeout_s=60)
    assert result(client, follower).status_code == 200
    assert cancel(client, running).status_code == 400  # already completed, once


def test_cancel_around_encoding_ends_once_either_way(worker: Stack, client: httpx.Client) -> None:
    """Encoding is not interruptible: a cancel that lands in it takes effect at the next stage
    (uploading) or, when encoding wins, the request keeps its video. Never both, never neither."""
    request_id = submit(client, LONG | {"num_inference_steps": 2})
    wait_until(lambda: has_logged(client, request_id, "encoding video"), interval_s=0.01)
    answer = cancel(client, request_id)
    assert answer.status_code in (202, 400), answer.text
    wait_until(lambda: is_completed(client, request_id), timeout_s=60)
    final = result(client, request_id)
    if answer.status_code == 400:
        assert final.status_code == 200  # it had already completed
    assert final.status_code in (200, 499), final.text
    if final.status_code == 200:
        assert final.json()["video"]["url"] and "error_type" not in status(client, request_id)
    else:
        assert_cancelled(client, request_id)
    assert store(worker).get(request_id).attempts == 1  # type: ignore[union-attr]


def test_cancel_after_completion_changes_nothing(client: httpx.Client) -> None:
    request_id = submit(client, TINY)
    wait_until(lambda: is_completed(client, request_id), timeout_s=60)
    before = result(client, request_id).json()
    for _ in range(2):
        answer = cancel(client, request_id)
        assert (answer.status_code, answer.json()) == (400, {"status": "ALREADY_COMPLETED"})
    assert result(client, request_id).json() == before


def test_submit_then_cancel_at_once_ends_exactly_once(worker: Stack, client: httpx.Client) -> None:
    """The cancel races the worker's claim: whichever wins, one end, consistent everywhere."""
    records = store(worker)
    for _ in range(5):
        request_id = submit(client, TINY)
        answer = cancel(client, request_id)
        wait_until(lambda: is_completed(client, request_id), timeout_s=60)  # noqa: B023
        final = result(client, request_id)
        if answer.status_code == 400:
            assert final.status_code == 200
        else:
            assert answer.status_code == 202 and final.status_code in (200, 499), final.text
        assert records.get(request_id).attempts <= 1  # type: ignore[union-attr]
        assert cancel(client, request_id).status_code == 400
