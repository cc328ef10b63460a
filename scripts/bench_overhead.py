"""Serving overhead of the queue path, on whatever machine runs it.

1. submit -> COMPLETED overhead: N sequential tiny requests through one worker; for each, the
   client-observed time from the submit call until the status route says COMPLETED, minus the
   pipeline's own stage timings (so what is left is HTTP, Redis, RQ dispatch and bookkeeping).
2. submit throughput of one API process: M submissions from C concurrent clients with no worker
   running (nothing is consumed, so only the API and Redis are measured).

    python scripts/bench_overhead.py [--requests 20] [--submissions 2000] [--concurrency 32]

Starts its own stack (`openreel up`, tiny preset, embedded Redis) on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from openreel.redis_server import free_port

APP = "fal-ai/cogvideox-5b"
TINY = {"prompt": "bench", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "seed": 1}
STATUS_POLL_S = 0.005


def start_stack(
    data_dir: Path, workers: int, settings: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENREEL_")}
    env |= {
        "OPENREEL_DATA_DIR": str(data_dir),
        "OPENREEL_PORT": str(port),
        "OPENREEL_WORKERS": str(workers),
        "OPENREEL_MODELS": "tiny",
        "HF_HUB_OFFLINE": "1",
        **(settings or {}),
    }
    log = open(data_dir.parent / f"up-{workers}.log", "wb")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen([sys.executable, "-m", "openreel.cli", "up"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            code = httpx.get(f"{base}/health").status_code
            if code == 200 or (workers == 0 and code == 503):
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("stack did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(2)
    process.wait(60)


def overhead(base: str, requests: int) -> dict[str, float]:
    samples, pipeline = [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(requests + 1):  # the first one warms caches and is dropped
            started = time.perf_counter()
            request_id = client.post(f"/queue/{APP}", json=TINY).json()["request_id"]
            while client.get(f"/queue/{APP}/requests/{request_id}/status").json()["status"] != "COMPLETED":
                time.sleep(STATUS_POLL_S)
            observed = time.perf_counter() - started
            stages = sum(client.get(f"/queue/{APP}/requests/{request_id}").json()["timings"].values())
            samples.append(observed - stages)
            pipeline.append(stages)
    samples, pipeline = samples[1:], pipeline[1:]
    return {
        "overhead_median_ms": statistics.median(samples) * 1000,
        "overhead_p90_ms": statistics.quantiles(samples, n=10)[-1] * 1000,
        "pipeline_median_ms": statistics.median(pipeline) * 1000,
    }


async def throughput(base: str, submissions: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(submissions))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in counter:
            started = time.perf_counter()
            response = await client.post(f"/queue/{APP}", json=TINY)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "submissions_per_s": submissions / elapsed,
        "submit_p50_ms": latencies[len(latencies) // 2] * 1000,
        "submit_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_stack(Path(tmp) / "one-worker", workers=1)
        try:
            result = overhead(base, args.requests)
        finally:
            stop(process)
        print(f"submit->COMPLETED overhead over {args.requests} tiny requests: " + _fmt(result))
        process, base = start_stack(Path(tmp) / "no-worker", workers=0)
        try:
            result = asyncio.run(throughput(base, args.submissions, args.concurrency))
        finally:
            stop(process)
        print(f"submit throughput, {args.submissions} submissions, {args.concurrency} clients: " + _fmt(result))


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.1f}" for key, value in values.items())


if __name__ == "__main__":
    main()
