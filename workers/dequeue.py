"""Taking jobs off RQ queues without losing one to a worker that dies at the wrong moment.

RQ pops from several queues with BLPOP: the job id leaves the queue before the worker records
it anywhere. A worker killed in that gap, or a host that vanishes while its BLPOP is pending
(Redis only notices a dead peer when TCP does, minutes later, and meanwhile hands it the next
job), takes the job with it: the request would stay IN_QUEUE for ever. RQ's lossless pop (BLMOVE
into ``<queue>:intermediate``) only exists for one queue, and every worker here serves two or
more (normal and low, and maybe several families).

So workers move each job id from its queue into that queue's intermediate list in one Redis
command, in the worker's queue order, and block on the first queue between passes. The job
leaves the intermediate list in the same transaction that marks it started (RQ's
``prepare_job_execution``), so a job found in an intermediate list on two maintenance
sweeps at least ``grace_s`` apart, was stranded by a dead worker and goes back to the front of its
queue, whatever its retry budget: it never ran, so running it is not a retry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis
from rq import Queue
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job

BLOCK_SLICE_S = 0.5
"""Longest a job on any queue but the first in the worker's order waits for an idle worker."""

def stranded_key(queue: Queue) -> str:
    """Hash: job id -> Unix time a sweep first found it in the queue's intermediate list."""
    return f"openreel:stranded:{queue.name}"


# Only a job still in the list moves: a worker that started it meanwhile took it out in the
# transaction that started it.
_RESCUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""


class LosslessQueue(Queue):
    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: redis.Redis,
        job_class: type[Job] | None = None,
        serializer: object = None,
        death_penalty_class: object = None,
    ) -> tuple[Job, Queue] | None:
        ordered = list(queues)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for queue in ordered:
                job_id = connection.lmove(queue.key, queue.intermediate_queue_key)
                if job_id is not None:
                    job = _fetch(queue, job_id.decode())
                    if job is not None:
                        return job, queue
                    break  # deleted meanwhile (cancelled): look again from the first queue
            else:
                if deadline is None:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DequeueTimeout(timeout, [q.key for q in ordered])
                first = ordered[0]
                job_id = connection.blmove(first.key, first.intermediate_queue_key, min(left, BLOCK_SLICE_S))
                if job_id is not None:
                    job = _fetch(first, job_id.decode())
                    if job is not None:
                        return job, first


def _fetch(queue: Queue, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:
        queue.connection.lrem(queue.intermediate_queue_key, 1, job_id)
        return None


def rescue_stranded(queue: Queue, grace_s: float, now: float | None = None) -> list[str]:
    """Put back on ``queue`` the jobs its intermediate list has held for ``grace_s`` or longer."""
    connection = queue.connection
    now = time.time() if now is None else now
    rescue = connection.register_script(_RESCUE)
    marks = stranded_key(queue)
    held = {raw.decode() for raw in connection.lrange(queue.intermediate_queue_key, 0, -1)}
    seen = {key.decode(): float(value) for key, value in connection.hgetall(marks).items()}
    rescued, gone = [], [job_id for job_id in seen if job_id not in held]
    for job_id in held:
        if job_id not in seen:
            connection.hset(marks, job_id, now)
        elif now - seen[job_id] >= grace_s:
            if rescue(keys=[queue.intermediate_queue_key, queue.key], args=[job_id]):
                rescued.append(job_id)
            gone.append(job_id)
    if gone:
        connection.hdel(marks, *gone)
    return rescued
