"""Workers killed with SIGKILL at random moments while requests are in flight, replacements
started: every request ends once, with a video or a clear error, and none runs again after it
succeeded. The long variant (``-m slow``) kills more often over more requests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from typing import Any

import pytest
import redis

from openreel.records import RecordStore
from tests.reliability.faults import FAULT_STACK_ENV, check_ended_once, ending, is_completed, submit
from tests.stack import Stack


def run_with_kills(make_stack: Any, requests: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    stack: Stack = make_stack(workers=0, env=FAULT_STACK_ENV).start(wait_ready=False)
    workers: list[subprocess.Popen[bytes]] = [stack.start_worker(), stack.start_worker()]
    stack.wait(ready=True)
    store = RecordStore(redis.Redis.from_url(stack.redis_url), retention_s=3600)
    with stack.client() as client:
        ids = [submit(client) for _ in range(requests)]
        killed = 0
        while not all(is_completed(client, request_id) for request_id in ids):
            time.sleep(rng.uniform(0.2, 2.5))
            alive = [w for w in workers if w.poll() is None]
            if killed < kills and alive:
                victim = rng.choice(alive)
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait()
                killed += 1
                workers.append(stack.start_worker())
        assert killed == kills, f"requests finished after {killed} of {kills} kills (seed {seed})"
        first = {request_id: ending(client, store.get(request_id)) for request_id in ids}  # type: ignore[arg-type]
        # Long enough for a dead worker's job to be found and swept: a request re-run now would show.
        time.sleep(float(stack.child_env()["OPENREEL_HEARTBEAT_TTL_S"]) * 2)
        for request_id in ids:
            check_ended_once(first[request_id], ending(client, store.get(request_id)))  # type: ignore[arg-type]
    succeeded = sum(e.succeeded for e in first.values())
    retried = sum(e.record.attempts > 1 for e in first.values())
    print(f"seed {seed}: {requests} requests, {kills} kills, {succeeded} videos, {retried} re-run after a kill")
    assert succeeded >= requests - kills  # at most the requests running at a kill may fail (retries permitting)


def test_random_worker_kills_lose_and_duplicate_nothing(make_stack: Any) -> None:
    run_with_kills(make_stack, requests=20, kills=2, seed=int(os.environ.get("FAULT_SEED", "8")))


@pytest.mark.slow
def test_random_worker_kills_long(make_stack: Any) -> None:
    run_with_kills(make_stack, requests=60, kills=15, seed=int(os.environ.get("FAULT_SEED", "18")))
