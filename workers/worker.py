"""The worker process: load pipelines once, warm them, announce readiness, serve RQ queues.

It is an RQ ``SimpleWorker`` because CUDA cannot survive RQ's fork-per-job. Plain
SimpleWorkers send no heartbeat while a job runs, so a long generation would look
abandoned and be run twice; here a thread keeps the worker, the execution and the job alive
in Redis for as long as the process is, and stops the moment the process dies.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from openreel import queues, worker_registry
from openreel.settings import Settings
from pipelines import registry
from workers import runtime

log = logging.getLogger("openreel.worker")


class GpuWorker(SimpleWorker):
    def __init__(self, queue_list: list[Queue], *, settings: Settings, **kwargs: object) -> None:
        self.settings = settings  # read by dequeue_timeout, which RQ's __init__ already calls
        self.running: Job | None = None
        super().__init__(queue_list, maintenance_interval=settings.maintenance_s, **kwargs)  # type: ignore[arg-type]

    @property
    def dequeue_timeout(self) -> int:
        # Maintenance (re-queueing jobs of dead workers) only runs between dequeues.
        return self.settings.maintenance_s

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.settings.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.running = job
        try:
            super().execute_job(job, queue)
        finally:
            self.running = None

    def keep_job_alive(self) -> None:
        job, execution = self.running, self.execution
        if job is not None and execution is not None:
            self.maintain_heartbeats(job)


def worker_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def connect(url: str, attempts: int = 60) -> redis.Redis:
    connection = redis.Redis.from_url(url)
    for attempt in range(attempts):
        try:
            connection.ping()
            return connection
        except redis.ConnectionError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    return connection


def run_worker(settings: Settings, redis_url: str) -> None:
    import torch  # deferred: keeps `openreel --help` and the API free of it

    name = worker_name()
    connection = connect(redis_url)
    endpoints = registry.select(settings.endpoints)
    families = sorted({e.family for e in endpoints})
    info = {
        "name": name,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "endpoints": [e.id for e in endpoints],
        "models": settings.models,
        "device": settings.device,
        "state": "loading",
    }
    worker_registry.announce(connection, name, info, settings.heartbeat_ttl_s)

    runners: dict[str, runtime.Runner] = {}
    for family in families:
        started = time.perf_counter()
        loaded = registry.load_family(family, settings=settings, endpoints=info["endpoints"])
        runners.update(loaded)  # type: ignore[arg-type]
        log.info("loaded %s (%s preset) in %.1f s", family, settings.models, time.perf_counter() - started)
    if settings.warmup:
        for runner in runners.values():
            started = time.perf_counter()
            runner.warm_up()
            log.info("warmed %s in %.1f s", runner.endpoint_id, time.perf_counter() - started)
    runtime.install(runtime.Runtime(settings, connection, runners, name))

    # Normal queues of every family first, then the low ones: low waits behind all normal work.
    queue_list = [Queue(queues.queue_name(f, p), connection=connection) for p in queues.PRIORITIES for f in families]
    worker = GpuWorker(queue_list, settings=settings, connection=connection, name=name)
    info["state"] = "ready"
    info["cuda"] = torch.cuda.is_available()

    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(settings.heartbeat_s):
            try:
                worker_registry.announce(connection, name, info, settings.heartbeat_ttl_s)
                worker.keep_job_alive()
            except redis.RedisError as error:
                log.warning("heartbeat failed: %s", error)

    worker_registry.announce(connection, name, info, settings.heartbeat_ttl_s)
    beat = threading.Thread(target=heartbeat, name="heartbeat", daemon=True)
    beat.start()
    log.info("worker %s ready for %s", name, ", ".join(info["endpoints"]))  # type: ignore[arg-type]
    try:
        worker.work(with_scheduler=False)
    finally:
        stop.set()
        worker_registry.withdraw(connection, name)
