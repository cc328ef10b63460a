"""Webhook receivers that misbehave in the ways tests/test_webhooks.py does not cover: slower than
the delivery timeout, answering 4xx, down for a while. Deliveries follow the retry schedule, and
the GPU worker hands off every webhook and goes straight on to the next request."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from openreel.records import RecordStore
from openreel.webhooks import retry_intervals
from tests.http_servers import Reply, ScriptedServer
from tests.reliability.faults import APP, TINY, is_completed, status, submit
from tests.reliability.faults import WEBHOOK_TIMEOUT_S as TIMEOUT_S
from tests.stack import FAST_WORKER_ENV, Stack, wait_until

ATTEMPTS = int(FAST_WORKER_ENV["OPENREEL_WEBHOOK_MAX_ATTEMPTS"])
INTERVALS = retry_intervals(ATTEMPTS, int(FAST_WORKER_ENV["OPENREEL_WEBHOOK_RETRY_WINDOW_S"]))


@pytest.fixture
def stack(one_worker_stack: Stack) -> Stack:
    return one_worker_stack


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


def webhook_lines(stack: Stack, request_id: str) -> list[str]:
    with stack.client() as client:
        return [line["message"] for line in status(client, request_id)["logs"] if "webhook" in line["message"]]


def test_a_slow_receiver_is_timed_out_retried_on_schedule_and_never_holds_the_worker(
    stack: Stack, receiver: ScriptedServer
) -> None:
    url = receiver.route("/slow", Reply(200, delay_s=TIMEOUT_S * 3), Reply(200, delay_s=TIMEOUT_S * 3), Reply(200))
    store = RecordStore(redis.Redis.from_url(stack.redis_url), retention_s=3600)
    with stack.client() as client:
        first = client.post(f"/queue/{APP}", params={"fal_webhook": url}, json=TINY).json()["request_id"]
        second = submit(client)
        wait_until(lambda: is_completed(client, first) and is_completed(client, second), timeout_s=60)
    # The worker only enqueued the delivery: the next request started at once, not after a timeout.
    handover_s = store.get(second).started_at - store.get(first).finished_at  # type: ignore[union-attr,operator]
    assert handover_s < TIMEOUT_S, handover_s
    wait_until(lambda: any("delivered" in line for line in webhook_lines(stack, first)), timeout_s=60)
    hits = receiver.hits_on("/slow")
    assert len(hits) == 3
    lines = webhook_lines(stack, first)
    assert [line.split(":")[0] for line in lines] == [
        f"webhook attempt 1/{ATTEMPTS} failed", f"webhook attempt 2/{ATTEMPTS} failed", "webhook delivered (attempt 3/4)"
    ]  # fmt: skip
    assert "ReadTimeout" in lines[0]
    # Each retry waits its interval after the timed-out try; RQ schedules in whole seconds, so
    # a retry may come up to a second early (or late).
    for gap, interval in zip([b.at - a.at for a, b in zip(hits, hits[1:])], INTERVALS, strict=False):
        assert TIMEOUT_S + interval - 1.0 <= gap <= TIMEOUT_S + interval + 2.0, (gap, interval)


def test_error_answers_use_every_attempt_then_give_up(stack: Stack, receiver: ScriptedServer) -> None:
    codes = [400, 404, 410, 500, 503]
    with stack.client() as client:
        ids = {
            code: client.post(
                f"/queue/{APP}", params={"fal_webhook": receiver.route(f"/{code}", Reply(code, b"no"))}, json=TINY
            ).json()["request_id"]
            for code in codes
        }
    for code, request_id in ids.items():
        wait_until(lambda: any("giving up" in line for line in webhook_lines(stack, request_id)), timeout_s=60)  # noqa: B023
    time.sleep(INTERVALS[-1] + 1)  # no try after giving up
    for code, request_id in ids.items():
        assert len(receiver.hits_on(f"/{code}")) == ATTEMPTS, code
        last = webhook_lines(stack, request_id)[-1]
        assert last == f"webhook attempt {ATTEMPTS}/{ATTEMPTS} failed: HTTP {code}; giving up"
