"""Which of its queues a worker serving several families takes its next job from.

The worker takes from the first non-empty queue in its list (``workers/dequeue.py``), so the
policy is the order of that list, set before every dequeue:

1. ``normal`` queues before ``low`` ones, as fal's priority header promises;
2. within a priority, a queue whose oldest job has waited ``residency_max_wait_s`` or longer
   comes first, oldest first, whatever moving its weights to the device costs: no request
   starves behind a stream of cheaper ones;
3. then the queues of families the worker has on its device, then the others, each oldest
   first. With everything resident (or no memory pressure) that is plain oldest-first.

The waits come from RQ's ``enqueued_at``, written by the API host's clock: hosts need
synchronised clocks (NTP) for the limit to mean what it says.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from rq import Queue
from rq.job import Job
from rq.utils import utcparse

from openreel.queues import PRIORITIES, Priority


@dataclass(frozen=True)
class Waiting:
    """One queue's state when the worker is about to dequeue."""

    queue: str
    family: str
    priority: int
    """Index in ``PRIORITIES``: 0 for normal."""
    oldest_enqueued_at: float | None
    """Unix time its first job was enqueued; None when it is empty."""


def order(waiting: list[Waiting], resident_families: set[str], now: float, max_wait_s: float) -> list[str]:
    """Queue names in the order the worker should try them (see the module's docstring)."""

    def rank(item: Waiting) -> tuple[int, int, float]:
        if item.oldest_enqueued_at is None:
            return item.priority, 3, 0.0
        if now - item.oldest_enqueued_at >= max_wait_s:
            return item.priority, 0, item.oldest_enqueued_at
        return item.priority, 1 if item.family in resident_families else 2, item.oldest_enqueued_at

    return [item.queue for item in sorted(waiting, key=rank)]


def read_waiting(connection: redis.Redis, queues: list[tuple[Queue, str, Priority]]) -> list[Waiting]:
    """Each queue's oldest job and its enqueue time, for ``(queue, family, priority)`` triples:
    two pipelined round trips for all of them."""
    with connection.pipeline(transaction=False) as pipe:
        for queue, _, _ in queues:
            pipe.lindex(queue.key, 0)
        heads = pipe.execute()
    with connection.pipeline(transaction=False) as pipe:
        for head in heads:
            if head is not None:
                pipe.hget(Job.key_for(head.decode()), "enqueued_at")
        stamps = iter(pipe.execute())
    waiting = []
    for (queue, family, priority), head in zip(queues, heads, strict=True):
        stamp = next(stamps) if head is not None else None
        enqueued_at = utcparse(stamp.decode()).timestamp() if stamp else None
        waiting.append(Waiting(queue.name, family, PRIORITIES.index(priority), enqueued_at))
    return waiting
