"""``openreel io-worker``: the light process for work that waits on the network or the clock.

It delivers webhooks (RQ's ``webhooks`` queue, with RQ's scheduler running the retry
backoff) and sweeps expired stored files, so GPU workers spend no time on either. It never
imports torch and holds no model, so it starts in about a second.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from openreel import webhooks, worker_registry
from openreel.settings import Settings
from openreel.storage import make_storage

log = logging.getLogger("openreel.io_worker")


class IoWorker(SimpleWorker):
    """In-process jobs: a delivery is one short HTTP call, not worth a fork each."""

    def __init__(self, *args: object, settings: Settings, **kwargs: object) -> None:
        self.settings = settings  # read by dequeue_timeout, which RQ's __init__ already calls
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def dequeue_timeout(self) -> int:
        # Wake for maintenance as GPU workers do, instead of RQ's 405 s blocking pop.
        return self.settings.maintenance_s

    def handle_exception(self, job: Job, *exc_info: object) -> None:
        # A failed try is expected and already logged in one line; tracebacks are for bugs.
        if not isinstance(exc_info[1], webhooks.WebhookFailed):
            super().handle_exception(job, *exc_info)


def sweep_storage_forever(settings: Settings, connection: redis.Redis, stop: threading.Event) -> None:
    storage = make_storage(settings, connection)
    while True:
        try:
            removed = storage.sweep_expired(time.time())
            if removed:
                log.info("storage sweep removed %d expired objects or uploads", removed)
        except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
            log.exception("storage sweep failed")
        if stop.wait(settings.storage_sweep_s):
            return


def run_io_worker(settings: Settings, redis_url: str) -> None:
    # redis-py's default 5 s socket timeout cut RQ's blocking pop short, and RQ raises the timeout
    # only for connections opened after the worker starts: the pool already held one, so the
    # io-worker quit 5 s after every start. Every connection outlives one blocking pop instead.
    connection = redis.Redis.from_url(redis_url, socket_timeout=settings.maintenance_s + 10)
    webhooks.install(webhooks.Deliverer(settings, connection))
    stop = threading.Event()
    sweeper = threading.Thread(
        target=sweep_storage_forever, args=(settings, connection, stop), name="storage-sweep", daemon=True
    )
    sweeper.start()
    worker = IoWorker(
        [Queue(webhooks.WEBHOOK_QUEUE, connection=connection)],
        connection=connection,
        settings=settings,
        name=worker_registry.process_name("io."),
        maintenance_interval=settings.maintenance_s,
        log_job_description=False,  # the arguments hold the whole webhook body
    )
    log.info("io-worker ready: webhooks, storage sweep every %s s", settings.storage_sweep_s)
    try:
        worker.work(with_scheduler=True)
    finally:
        stop.set()
