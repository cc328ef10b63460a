"""The functions RQ calls by name (see openreel.queues): run a request, and react to a lost worker."""

from __future__ import annotations

import logging
from typing import Any

import redis
from rq.exceptions import AbandonedJobError
from rq.job import Job

from openreel.records import WORKER_LOST_ERROR, RecordStore, RequestError
from openreel.settings import load_settings
from openreel.webhooks import WebhookQueue
from workers import runtime
from workers.group import GroupBroken

log = logging.getLogger("openreel.worker")


def run_request(request_id: str) -> None:
    runtime.current().execute(request_id)


def on_job_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: Any, traceback: Any) -> None:
    """RQ's failure callback. ``run_request`` raises only when a worker group lost a rank during
    the request; otherwise this is RQ's sweeper finding the job of a worker that died (kill -9,
    OOM killer, lost host). Both are the worker's failure, not the request's: re-queue or fail."""
    settings = load_settings()
    store = RecordStore(connection, settings.retention_s, WebhookQueue(connection, settings))
    request_id = job.id
    if exc_type is AbandonedJobError or issubclass(exc_type, GroupBroken):
        if job.retries_left:
            if store.requeue(request_id):
                store.log(request_id, "worker lost; request re-queued", level="WARN")
            return
        store.complete(request_id, error=WORKER_LOST_ERROR)
        return
    log.error("job %s raised %s: %s", request_id, exc_type.__name__, exc_value)
    store.complete(
        request_id,
        error=RequestError(status_code=500, detail=f"{exc_type.__name__}: {exc_value}", error_type="internal_error"),
    )
