"""What metrics cost: the Redis writes a request adds, and rendering /metrics.

    python scripts/bench_metrics.py [--endpoints 5] [--workers 8]

Runs its own embedded redis-server on loopback. A worker records a request's queue wait (one
pipeline) and its run and stage times (one more); the completion count and the submission count
ride along in pipelines that exist anyway. The render is what one /metrics scrape does, over as
many endpoints and workers as asked, every series filled in.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import redis

from openreel import metrics, worker_registry
from openreel.redis_server import EmbeddedRedis

STAGES = ("encoding_prompt", "denoising", "decoding", "encoding_video", "uploading")


def timed_ms(action: object, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    server = EmbeddedRedis(Path(tempfile.mkdtemp()))
    connection = redis.Redis.from_url(server.start())
    endpoints = [f"fal-ai/endpoint-{i}" for i in range(args.endpoints)]
    try:

        def record_wait() -> None:
            with connection.pipeline(transaction=False) as pipe:
                metrics.QUEUE_WAIT.observe(pipe, 0.3, "family")
                pipe.execute()

        def record_run() -> None:
            with connection.pipeline(transaction=False) as pipe:
                metrics.RUN_DURATION.observe(pipe, 40.0, endpoints[0], "ok")
                for stage in STAGES:
                    metrics.STAGE_DURATION.observe(pipe, 8.0, endpoints[0], stage)
                pipe.execute()

        wait_ms, run_ms = timed_ms(record_wait, 2000), timed_ms(record_run, 2000)
        for endpoint in endpoints:  # every series present, as after a day of traffic
            for outcome in ("ok", "invalid_input", "request_cancelled", "internal_error"):
                metrics.REQUESTS_COMPLETED.inc(connection, endpoint, outcome)
                for bucket_value in metrics.STAGE_BUCKETS:
                    metrics.RUN_DURATION.observe(connection, bucket_value, endpoint, outcome)
            for stage in STAGES:
                for bucket_value in metrics.STAGE_BUCKETS:
                    metrics.STAGE_DURATION.observe(connection, bucket_value, endpoint, stage)
        for index in range(args.workers):
            info = {"host": "gpu-host", "endpoints": endpoints, "gpu_memory_bytes": 1, "gpu_memory_total_bytes": 2}
            worker_registry.announce(connection, f"worker-{index}", {"name": f"worker-{index}", **info}, ttl_s=60)
        queue_names = ["family", "family.low", "webhooks"]
        body = metrics.render(connection, endpoints, queue_names)
        render_ms = timed_ms(lambda: metrics.render(connection, endpoints, queue_names), 200)
        print(f"queue wait, one pipeline: {wait_ms:.3f} ms")
        print(f"run and {len(STAGES)} stages, one pipeline: {run_ms:.3f} ms")
        print(f"render, {args.endpoints} endpoints and {args.workers} workers: {render_ms:.2f} ms, {len(body)} bytes")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
