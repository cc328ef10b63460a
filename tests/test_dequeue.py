"""Workers take jobs without losing one to a worker that dies between taking it and starting it."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import pytest
import redis
from rq import Queue
from rq.exceptions import DequeueTimeout

from tests.reliability.faults import APP, FAULT_STACK_ENV, TINY, is_completed, submit
from tests.stack import wait_until
from workers.dequeue import BLOCK_SLICE_S, LosslessQueue, rescue_stranded, stranded_key


@pytest.fixture
def queues(redis_connection: redis.Redis, request: pytest.FixtureRequest) -> list[Queue]:
    names = [f"{request.node.name}", f"{request.node.name}.low"]
    made = [Queue(name, connection=redis_connection) for name in names]
    yield made
    for queue in made:
        queue.empty()
        redis_connection.delete(queue.intermediate_queue_key, stranded_key(queue))


def test_jobs_come_in_queue_order_and_wait_in_the_intermediate_list(queues: list[Queue]) -> None:
    normal, low = queues
    low_job = low.enqueue("builtins.len", "low")
    normal_job = normal.enqueue("builtins.len", "normal")
    job, queue = LosslessQueue.dequeue_any(queues, None, connection=normal.connection)
    assert (job.id, queue.name) == (normal_job.id, normal.name)
    assert normal.connection.lrange(normal.intermediate_queue_key, 0, -1) == [normal_job.id.encode()]
    job, queue = LosslessQueue.dequeue_any(queues, None, connection=normal.connection)
    assert (job.id, queue.name) == (low_job.id, low.name)
    assert LosslessQueue.dequeue_any(queues, None, connection=normal.connection) is None


def test_an_idle_worker_blocks_then_times_out_and_sees_every_queue(queues: list[Queue]) -> None:
    normal, low = queues
    started = time.monotonic()
    with pytest.raises(DequeueTimeout):
        LosslessQueue.dequeue_any(queues, 1, connection=normal.connection)
    assert 1 <= time.monotonic() - started < 2
    # A job on the second queue is found within one blocking slice of the first.
    low_job = low.enqueue("builtins.len", "low")
    started = time.monotonic()
    job, queue = LosslessQueue.dequeue_any(queues, 5, connection=normal.connection)
    assert job.id == low_job.id and time.monotonic() - started < BLOCK_SLICE_S + 0.5


def test_a_stranded_job_goes_back_to_the_front_after_the_grace(queues: list[Queue]) -> None:
    normal, _ = queues
    stranded = normal.enqueue("builtins.len", "stranded")
    waiting = normal.enqueue("builtins.len", "waiting")
    LosslessQueue.dequeue_any(queues, None, connection=normal.connection)  # its worker dies here
    assert normal.job_ids == [waiting.id]
    assert rescue_stranded(normal, grace_s=10, now=1000) == []  # first sight: only marked
    assert rescue_stranded(normal, grace_s=10, now=1009) == []
    assert rescue_stranded(normal, grace_s=10, now=1010) == [stranded.id]
    assert normal.job_ids == [stranded.id, waiting.id]
    assert normal.connection.llen(normal.intermediate_queue_key) == 0
    assert normal.connection.hlen(stranded_key(normal)) == 0


def _blocked_in_blmove(connection: redis.Redis, pid: int) -> bool:
    """Whether one of this process's Redis connections waits in a blocking pop."""
    ports = {f"127.0.0.1:{c.laddr.port}" for c in psutil.Process(pid).net_connections(kind="tcp")}
    return any(c["addr"] in ports and c["cmd"] == "blmove" and "b" in c["flags"] for c in connection.client_list())


def test_a_request_taken_by_a_vanished_worker_is_served_by_another(make_stack: Any) -> None:
    """A host that vanishes (SIGSTOP: its socket stays open, as with a pulled cable) while blocked
    waiting for work is handed the next job by Redis; a live worker's sweep puts it back."""
    stack = make_stack(workers=0, env=FAULT_STACK_ENV).start(wait_ready=False)
    connection = redis.Redis.from_url(stack.redis_url)
    lost_worker = stack.start_worker()
    intermediate = Queue("cogvideox", connection=connection).intermediate_queue_key
    with stack.client() as client:
        wait_until(lambda: client.get("/health").status_code == 200, timeout_s=120)
        try:
            # Stop it inside one of its blocking pops (they last BLOCK_SLICE_S); a submit that
            # misses the pop is served by it as usual, and the next try is made.
            for _ in range(10):
                wait_until(lambda: _blocked_in_blmove(connection, lost_worker.pid), timeout_s=30, interval_s=0.01)
                os.kill(lost_worker.pid, signal.SIGSTOP)
                request_id = submit(client, TINY)
                time.sleep(BLOCK_SLICE_S + 0.2)
                if connection.lrange(intermediate, 0, -1) == [request_id.encode()]:
                    break
                os.kill(lost_worker.pid, signal.SIGCONT)
                wait_until(lambda: is_completed(client, request_id), timeout_s=60)
            else:
                pytest.fail("the stopped worker was never handed a job")
            stack.start_worker()
            wait_until(lambda: is_completed(client, request_id), timeout_s=120)
            result = client.get(f"/queue/{APP}/requests/{request_id}").json()
            assert result["video"]["url"]
            assert connection.llen(intermediate) == 0
        finally:
            lost_worker.kill()
            lost_worker.wait()
