"""The worker runtime on its own (real Redis, real tiny pipeline, no RQ): one outcome per request,
and an out-of-memory fails that request while the worker keeps serving."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from openreel import queues
from openreel.records import RecordStore, RequestRecord
from openreel.settings import Settings
from pipelines.cogvideox.runner import load_family
from workers.runtime import Runtime

APP = "fal-ai/cogvideox-5b"
SMALL = {"prompt": "tiny", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2}


class OutOfMemoryMidRun:
    """Fault injection: the real runner, but the device runs out of memory after the first step."""

    endpoint_id = APP

    def __init__(self, real: Any) -> None:
        self.real = real

    def run(self, request: Any, ctx: Any) -> Any:
        real_callback = ctx.progress.step_callback

        def failing_callback(total: int) -> Any:
            def on_step_end(*args: Any) -> Any:
                real_callback(total)(*args)
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

            return on_step_end

        ctx.progress.step_callback = failing_callback
        return self.real.run(request, ctx)


@pytest.fixture
def runtime(redis_connection: redis.Redis, tmp_path: Path, models_dir: Path) -> Runtime:
    settings = Settings(data_dir=tmp_path, model_cache_dir=models_dir, device="cpu")
    runners = load_family(settings=settings, endpoints=[APP])
    return Runtime(settings, redis_connection, runners, "test-worker")  # type: ignore[arg-type]


def enqueue(runtime: Runtime, request_id: str) -> RecordStore:
    record = RequestRecord(
        request_id=request_id, endpoint=APP, app=APP, family="cogvideox", input=SMALL,
        created_at=time.time(), files_base_url="http://127.0.0.1:1",
    )  # fmt: skip
    queues.submit(runtime.store.redis, runtime.store, record, job_timeout_s=60, max_retries=0)
    return runtime.store


def test_a_request_completes_once_even_if_delivered_twice(runtime: Runtime) -> None:
    store = enqueue(runtime, "twice")
    runtime.execute("twice")
    first = store.get("twice")
    assert first is not None and first.status == "COMPLETED" and first.error is None
    runtime.execute("twice")  # e.g. RQ re-delivering after a crash that followed completion
    again = store.get("twice")
    assert again == first and again.attempts == 1


def test_out_of_memory_fails_the_request_and_the_worker_keeps_serving(runtime: Runtime) -> None:
    real = runtime.runners[APP]
    store = enqueue(runtime, "oom")
    runtime.runners[APP] = OutOfMemoryMidRun(real)  # type: ignore[assignment]
    runtime.execute("oom")
    failed = store.get("oom")
    assert failed is not None and failed.error is not None
    assert (failed.error.status_code, failed.error.error_type) == (500, "out_of_memory")
    assert "ran out of memory" in failed.error.message

    runtime.runners[APP] = real
    enqueue(runtime, "after-oom")
    runtime.execute("after-oom")
    after = store.get("after-oom")
    assert after is not None and after.error is None and after.output["video"]["file_size"] > 0  # type: ignore[index]


def test_invalid_stored_input_becomes_a_422_not_a_crash(runtime: Runtime) -> None:
    store = enqueue(runtime, "bad")
    store.redis.hset("openreel:req:bad", "input", '{"prompt": 5}')
    runtime.execute("bad")
    record = store.get("bad")
    assert record is not None and record.error is not None and record.error.status_code == 422
