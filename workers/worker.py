"""The worker process: load pipelines once, warm them, announce readiness, serve RQ queues.

It is an RQ ``SimpleWorker`` because CUDA cannot survive RQ's fork-per-job. Plain
SimpleWorkers send no heartbeat while a job runs, so a long generation would look
abandoned and be run twice; here a thread keeps the worker, the execution and the job alive
in Redis for as long as the process is, and stops the moment the process dies.

Started by torchrun with several ranks, the processes form a worker group (workers/group.py):
rank 0 is this worker, the others follow it (workers/follower.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import torch
from rq import Queue, SimpleWorker, worker_registration
from rq.job import Job
from rq.registry import clean_registries
from rq.utils import now

from openreel import queues, worker_registry
from openreel.gpus import launched_as_group
from openreel.logging_setup import request_context
from openreel.settings import Settings
from pipelines import registry
from pipelines.devices import resolve_device
from workers import queue_order as queue_order_policy
from workers import runtime
from workers.dequeue import LosslessQueue, rescue_stranded
from workers.follower import follow
from workers.group import Group
from workers.residency import Residency, default_budget

log = logging.getLogger("openreel.worker")


class GpuWorker(SimpleWorker):
    def __init__(
        self,
        queue_list: list[Queue],
        *,
        settings: Settings,
        presence: worker_registry.Presence,
        queue_order: Callable[[list[Queue]], list[Queue]] | None = None,
        **kwargs: object,
    ) -> None:
        self.settings = settings  # read by dequeue_timeout, which RQ's __init__ already calls
        self.presence = presence
        self.queue_order = queue_order
        self.running: Job | None = None
        super().__init__(
            queue_list,
            maintenance_interval=settings.maintenance_s,
            queue_class=LosslessQueue,
            **kwargs,  # type: ignore[arg-type]
        )

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # The first non-empty queue of the list is taken: ordering it is the whole policy.
        if self.queue_order is not None:
            self._ordered_queues = self.queue_order(self.queues)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # LosslessQueue parks every job in an intermediate list, not only single-queue workers' jobs.
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def clean_registries(self) -> None:
        # RQ's own sweep of intermediate lists fails a stuck job (lost, with x-fal-no-retry);
        # a job that never started goes back to its queue instead (workers/dequeue.py).
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                clean_registries(queue, self._exc_handlers)
                worker_registration.clean_worker_registry(queue)
                for job_id in rescue_stranded(queue, self.settings.heartbeat_ttl_s):
                    log.warning("job %s was stranded by a dead worker before it started: queued again", job_id)
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    @property
    def dequeue_timeout(self) -> int:
        # Maintenance (re-queueing jobs of dead workers) only runs between dequeues.
        return self.settings.maintenance_s

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.settings.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        # The job id is the request id: RQ's own lines about the job carry it too.
        self.running = job
        self.presence.set_state("busy", request_id=job.id)
        try:
            with request_context(job.id):
                super().execute_job(job, queue)
        finally:
            self.running = None
            self.presence.set_state("ready")
        broken = runtime.current().group_broken
        if broken is not None:
            raise broken  # ends RQ's work loop; run_worker then exits non-zero

    def keep_job_alive(self) -> None:
        job, execution = self.running, self.execution
        if job is not None and execution is not None:
            self.maintain_heartbeats(job)


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


def gpu_memory(device_spec: str) -> dict[str, int]:
    """The figures the heartbeat publishes for /metrics; none on a CPU worker."""
    if not torch.cuda.is_available():
        return {}
    device = torch.device("cuda" if device_spec == "auto" else device_spec)
    if device.type != "cuda":
        return {}
    return {
        "gpu_memory_bytes": torch.cuda.memory_allocated(device),
        "gpu_memory_peak_bytes": torch.cuda.max_memory_allocated(device),
        "gpu_memory_total_bytes": torch.cuda.get_device_properties(device).total_memory,
    }


def residency_for(settings: Settings) -> Residency:
    device = resolve_device(settings.device)
    return Residency(device, default_budget(device, settings.residency_budget_mib))


def load_runners(
    settings: Settings, families: list[str], endpoint_ids: list[str], residency: Residency, group: Group | None = None
) -> dict[str, runtime.Runner]:
    """Every family's runners, placed by ``residency``, split across ``group``'s ranks when the
    worker is one, and warmed up (on every rank of a group alike: warming runs its collectives)."""
    runners: dict[str, runtime.Runner] = {}
    for family in families:
        # Families are placed on the device as they load; the next one must not meet the last
        # one there when both do not fit together.
        residency.park_all()
        started = time.perf_counter()
        loaded: dict[str, runtime.Runner] = registry.load_family(  # type: ignore[assignment]
            family, settings=settings, endpoints=endpoint_ids
        )
        for runner in loaded.values():
            residency.register(runner.endpoint_id, family, runner.networks())
            if group is not None:
                group.split(runner)
        runners.update(loaded)
        log.info("loaded %s (%s preset) in %.1f s", family, settings.models, time.perf_counter() - started)
    if settings.warmup:
        for runner in runners.values():
            started = time.perf_counter()
            with torch.no_grad():
                residency.acquire(runner.endpoint_id)
            runner.warm_up()
            log.info("warmed %s in %.1f s", runner.endpoint_id, time.perf_counter() - started)
    return runners


def run_worker(settings: Settings, redis_url: str) -> None:
    endpoints = registry.select(settings.endpoints)
    families = sorted({e.family for e in endpoints})
    endpoint_ids = [e.id for e in endpoints]
    group = None
    if launched_as_group():  # the command line refused endpoints a group cannot split
        group = Group(settings)
        if not group.leader:
            run_follower(settings, group, families, endpoint_ids)
            return
    name = worker_registry.process_name()
    connection = connect(redis_url)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "endpoints": endpoint_ids,
        "models": settings.models,
        "device": settings.device,
        "cuda": torch.cuda.is_available(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if group is not None:
        info["group"] = {"ranks": group.size, "backend": group.backend}
    residency: Residency | None = None  # made once loading starts: a bad device is a failed worker

    def probe() -> dict[str, Any]:
        return gpu_memory(settings.device) | (residency.report() if residency is not None else {})

    presence = worker_registry.Presence(connection, name, info, settings.heartbeat_ttl_s, probe=probe)
    presence.set_state("starting")
    worker: GpuWorker | None = None
    stop = threading.Event()

    def heartbeat() -> None:
        # From the start: loading full weights takes longer than the registry's TTL.
        while not stop.wait(settings.heartbeat_s):
            try:
                presence.refresh()
                if worker is not None:
                    worker.keep_job_alive()
            except redis.RedisError as error:
                log.warning("heartbeat failed: %s", error)

    beat = threading.Thread(target=heartbeat, name="heartbeat", daemon=True)
    beat.start()
    failed = False
    try:
        presence.set_state("loading")
        placement = residency_for(settings)
        residency = placement  # from here on the heartbeat publishes it
        runners = load_runners(settings, families, endpoint_ids, placement, group)
        runtime.install(runtime.Runtime(settings, connection, runners, name, placement, group))
        # Normal queues of every family first, then the low ones: low waits behind all normal work.
        labelled = [
            (LosslessQueue(queues.queue_name(f, p), connection=connection), f, p)
            for p in queues.PRIORITIES
            for f in families
        ]

        def queue_order(listed: list[Queue]) -> list[Queue]:
            waiting = queue_order_policy.read_waiting(connection, labelled)
            names = queue_order_policy.order(
                waiting, placement.resident_families(), time.time(), settings.residency_max_wait_s
            )
            by_name = {queue.name: queue for queue in listed}
            return [by_name[name] for name in names]

        worker = GpuWorker(
            [queue for queue, _, _ in labelled],
            settings=settings,
            presence=presence,
            # One family's order is fixed: no need for two round trips before every dequeue.
            queue_order=queue_order if len(families) > 1 else None,
            connection=connection,
            name=name,
        )
        presence.set_state("ready")
        log.info("worker %s ready for %s", name, ", ".join(endpoint_ids))
        worker.work(with_scheduler=False)
        if runtime.current().group_broken is not None:
            raise runtime.current().group_broken
    except Exception as error:
        # Left in the registry until its TTL runs out, so /health and 'openreel status' say why.
        failed = True
        presence.set_state("failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        stop.set()
        if not failed:
            presence.withdraw()
        if group is not None:
            if not failed:
                group.announce(None)  # a broken group's followers may not listen: torchrun stops them
            group.leave()


def run_follower(settings: Settings, group: Group, families: list[str], endpoint_ids: list[str]) -> None:
    """A group rank other than 0: load and split the same pipelines, then follow rank 0."""
    runners = load_runners(settings, families, endpoint_ids, residency_for(settings), group)
    try:
        follow(group, settings, runners)
    finally:
        group.leave()
