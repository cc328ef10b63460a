"""Running one request inside a worker: claim it, run its pipeline, record exactly one outcome.

A request never raises out of here: every failure becomes a COMPLETED record with fal's
``error``/``error_type``, and the worker goes on serving (an out-of-memory included). In a
worker group this is rank 0's side: it announces each request to the followers, shares the
inputs and the cancel decisions with them, and closes the request with them; the one exception
that leaves here is a group that broke under a request (``GroupBroken``: re-queued by RQ).
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import redis
import torch
from pydantic import BaseModel, ValidationError

from openreel import metrics
from openreel.queues import queue_name
from openreel.records import CANCELLED_ERROR, TIMEOUT_ERROR, RecordStore, RequestError, RequestRecord
from openreel.settings import Settings
from openreel.storage import make_storage
from openreel.webhooks import WebhookQueue
from pipelines.fal_types import seed_for
from pipelines.registry import ENDPOINTS
from workers.context import InputError, JobContext, Progress, RequestCancelled
from workers.group import Group, GroupBroken, Order, SharedInputs
from workers.inputs import InputResolver
from workers.outputs import OutputWriter
from workers.residency import Residency

log = logging.getLogger("openreel.worker")


class Runner(Protocol):
    endpoint_id: str

    def warm_up(self) -> None: ...

    def networks(self) -> list[torch.nn.Module]: ...

    def run(self, request: Any, ctx: JobContext) -> BaseModel: ...


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory() -> None:
    """After a failure only: tracebacks form reference cycles that pin tensors until a full
    collection. Successful runs free theirs by reference counting, and a full collection over
    torch's heap costs ~0.3 s, most of the serving overhead of a small request."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Runtime:
    def __init__(
        self,
        settings: Settings,
        connection: redis.Redis,
        runners: dict[str, Runner],
        worker_name: str,
        residency: Residency | None = None,
        group: Group | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.group_broken: GroupBroken | None = None
        """Set when the group failed to close a request: the worker must stop for a restart."""
        # Without one (a runtime outside a worker), nothing is registered and nothing moves.
        self.residency = residency or Residency(torch.device("cpu"), None)
        self.store = RecordStore(connection, settings.retention_s, WebhookQueue(connection, settings))
        self.storage = make_storage(settings, connection)
        self.runners = runners
        self.worker_name = worker_name

    def execute(self, request_id: str) -> None:
        claim = self.store.claim(request_id, self.worker_name)
        if claim == "expired":
            self.store.complete(request_id, error=TIMEOUT_ERROR)
            return
        if claim != "claimed":
            log.info("skipping %s: %s", request_id, claim)
            return
        record = self.store.get(request_id)
        assert record is not None
        self.store.log(request_id, f"started on worker {self.worker_name} (attempt {record.attempts})")
        self._record_wait(record)

        def cancelled() -> bool:
            wanted = self.store.cancel_requested(request_id)
            return wanted if self.group is None else self.group.agree_cancel(wanted)

        progress = Progress(
            log=lambda message: self.store.log(request_id, message),
            cancelled=cancelled,
            cancel_at_stages=self.group is None,
        )
        error: RequestError | None = None
        output: dict[str, Any] | None = None
        try:
            output = self._run(
                request_id, record.endpoint, record.input, record.files_base_url, record.object_lifetime_s, progress
            )
        except RequestCancelled:
            error = CANCELLED_ERROR
        except InputError as exc:
            error = RequestError(status_code=422, detail=exc.detail, error_type=exc.request_error_type)
        except ValidationError as exc:
            detail = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
            error = RequestError(status_code=422, detail=detail, error_type="invalid_input")
        except Exception as exc:  # noqa: BLE001 - every failure must end the request, not the worker
            if is_out_of_memory(exc):
                log.warning("request %s ran out of memory: %s", request_id, exc)
                error = RequestError(
                    status_code=500,
                    detail=f"The worker ran out of memory for this request ({exc}). "
                    "Try a smaller size or fewer steps.",
                    error_type="out_of_memory",
                )
            else:
                log.exception("request %s failed", request_id)
                error = RequestError(status_code=500, detail=f"{type(exc).__name__}: {exc}", error_type="internal_error")
        if error is not None:
            release_memory()
            self._close_with_group(error)  # first: a failure the group caused is not the client's
            self.store.log(request_id, error.message, level="ERROR")
        self.store.complete(request_id, output=output, error=error)
        self._record_run(record, error, progress.finish() if error is None else {})
        if error is None:
            self._close_with_group(None)  # after: the client need not wait for the followers

    def _close_with_group(self, error: RequestError | None) -> None:
        """In a group, finish the request together with the followers.

        A rank lost mid-request fails rank 0's run too (its collectives break): that request
        was not the client's fault and goes back to the queue, through RQ's failure callback
        (workers/job.py). A rank lost after rank 0 produced the output does not undo it. Either
        way the worker stops afterwards, for torchrun to restart the whole group."""
        if self.group is None:
            return
        try:
            self.group.close_request("ok" if error is None else error.error_type)
        except GroupBroken as broken:
            log.error("%s; stopping so that torchrun restarts the group", broken)
            self.group_broken = broken
            if error is not None:
                raise

    def _record_wait(self, record: RequestRecord) -> None:
        """Queue wait of first attempts: a retry's wait since submission includes the lost run."""
        if record.attempts == 1 and record.started_at is not None:
            queue = queue_name(record.family, record.priority)
            waited = max(0.0, record.started_at - record.created_at)  # API and worker clocks may differ
            with self.store.redis.pipeline(transaction=False) as pipe:
                metrics.QUEUE_WAIT.observe(pipe, waited, queue)
                pipe.execute()

    def _record_run(self, record: RequestRecord, error: RequestError | None, stages: dict[str, float]) -> None:
        """Run time by outcome; stage times of successful runs only, as a cancelled or failed
        run's last stage was cut short."""
        assert record.started_at is not None
        outcome = "ok" if error is None else error.error_type
        with self.store.redis.pipeline(transaction=False) as pipe:
            metrics.RUN_DURATION.observe(pipe, time.time() - record.started_at, record.endpoint, outcome)
            for stage, seconds in stages.items():
                metrics.STAGE_DURATION.observe(pipe, seconds, record.endpoint, stage)
            pipe.execute()

    def _run(
        self,
        request_id: str,
        endpoint_id: str,
        payload: Any,
        files_base_url: str,
        lifetime_s: int | None,
        progress: Progress,
    ) -> dict[str, Any]:
        runner = self.runners.get(endpoint_id)
        if runner is None:
            raise RuntimeError(f"this worker does not serve {endpoint_id}")
        if self.group is not None:
            payload = with_seed(ENDPOINTS[endpoint_id].input_model, payload)
        request = parse_request(endpoint_id, payload, self.settings)
        writer = OutputWriter(self.storage, files_base_url, progress, Path(self.settings.data_dir) / "tmp", lifetime_s)
        inputs = InputResolver(self.settings, self.storage, progress)
        ctx = JobContext(
            request_id=request_id,
            progress=progress,
            write_video=writer.write_video,
            inputs=inputs if self.group is None else SharedInputs(self.group, inputs),
        )
        with torch.no_grad():  # not inference mode: moved weights must stay usable outside it
            for move in self.residency.acquire(endpoint_id):
                progress.log(move.describe(self.residency.device))
                progress.record("swap", move.seconds)
        if self.group is not None:
            self.group.announce(Order(request_id, endpoint_id, payload))
        with torch.inference_mode():
            result = runner.run(request, ctx)
        return result.model_dump(mode="json", exclude_none=True)


def parse_request(endpoint_id: str, payload: Any, settings: Settings) -> BaseModel:
    """The endpoint's input model, validated against the bounds of ``settings`` (every rank of a
    worker group parses the same payload this way, and must arrive at the same request)."""
    return ENDPOINTS[endpoint_id].input_model.model_validate(payload, context={"settings": settings})


def with_seed(input_model: type[BaseModel], payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with a seed drawn where the schema has one and the client gave none, as the
    runner would draw it: every rank of a group must sample the same noise."""
    if "seed" not in input_model.model_fields or payload.get("seed") is not None:
        return payload
    return {**payload, "seed": seed_for(None)}


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no openreel worker runtime in this process")
    return _current
