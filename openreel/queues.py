"""RQ queues: one per endpoint family and priority, and how requests are put on them.

Workers listen to a family's normal queue before its low queue, so ``low`` requests wait
behind every ``normal`` one. RQ carries only the request id; the record holds the rest.
"""

from __future__ import annotations

from typing import Literal

import redis
from rq import Callback, Queue, Retry

from openreel import metrics
from openreel.records import CANCELLED_ERROR, RecordStore, RequestRecord

Priority = Literal["normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("normal", "low")

JOB_FUNCTION = "workers.job.run_request"
ON_JOB_FAILURE = "workers.job.on_job_failure"


def queue_name(family: str, priority: Priority) -> str:
    return family if priority == "normal" else f"{family}.low"


def family_queues(connection: redis.Redis, family: str) -> list[Queue]:
    """The family's queues in the order workers must serve them."""
    return [Queue(queue_name(family, p), connection=connection) for p in PRIORITIES]


def submit(
    connection: redis.Redis,
    store: RecordStore,
    record: RequestRecord,
    *,
    job_timeout_s: int,
    max_retries: int,
) -> None:
    """Create the record and enqueue its job in one Redis transaction: never one without the other."""
    queue = Queue(queue_name(record.family, record.priority), connection=connection)
    retries = 0 if record.no_retry else max_retries
    with connection.pipeline() as pipe:
        # RQ opens the MULTI itself and insists on being first in the pipeline.
        queue.enqueue_call(
            JOB_FUNCTION,
            args=(record.request_id,),
            job_id=record.request_id,
            timeout=job_timeout_s,
            result_ttl=600,
            failure_ttl=store.retention_s,
            retry=Retry(max=retries) if retries else None,
            on_failure=Callback(ON_JOB_FAILURE),
            pipeline=pipe,
        )
        store.create(record, pipe)
        metrics.REQUESTS_SUBMITTED.inc(pipe, record.endpoint, queue.name)
        pipe.execute()


def queue_position(connection: redis.Redis, record: RequestRecord) -> int:
    """Requests ahead of this one (0-based); low-priority requests also wait behind all normal ones."""
    normal, low = family_queues(connection, record.family)
    if record.priority == "normal":
        position = normal.get_job_position(record.request_id)
        return position or 0
    position = low.get_job_position(record.request_id) or 0
    return position + normal.count


def remove_queued(connection: redis.Redis, record: RequestRecord) -> None:
    """Take a not-yet-started request off its queue (cancel, start timeout)."""
    queue = Queue(queue_name(record.family, record.priority), connection=connection)
    if not queue.remove(record.request_id):
        return  # a worker already holds it; its claim sees the record completed and skips it
    job = queue.fetch_job(record.request_id)
    if job is not None:
        job.delete(remove_from_queue=False)


def cancel(connection: redis.Redis, store: RecordStore, record: RequestRecord) -> str:
    """Cancel for a client or an operator: 'cancelled' (it was queued: completed now and taken
    off its queue), 'requested' (it runs: stopped at its next step), 'completed' or 'missing'."""
    outcome = store.request_cancel(record.request_id)
    if outcome == "queued":
        if not store.complete(record.request_id, error=CANCELLED_ERROR):
            return "completed"  # a worker or a start timeout completed it first
        store.log(record.request_id, "cancelled before it started")
        remove_queued(connection, record)
        return "cancelled"
    if outcome == "running":
        store.log(record.request_id, "cancellation requested")
        return "requested"
    return outcome
