"""Load on one API process: N submissions from C concurrent clients, each polling its request's
status every 100 ms until it completes (as the Python client does), then reading the result.

With ``--workers 0`` (the default) nothing runs the requests: each client cancels its request
after ``--polls`` polls, which completes it, as a GPU finishing in polls x 100 ms would. The API
sees the same calls either way, and CPU workers on the same machine would only measure
themselves (a 16x16 one-step request takes seconds of a busy 2-core CPU).

Reports errors (any non-2xx answer or transport failure), p50/p99 latency of submit and status
calls, requests per second, and the Redis memory each finished request keeps (records, logs and
RQ's job hashes, measured by INFO memory before and after).

    python scripts/bench_load.py [--submissions 1000] [--concurrency 50] [--polls 20] [--workers 0]

Starts its own stack (`openreel up`, tiny preset, embedded Redis) on a free loopback port; the
requests are the smallest the endpoint takes, so the API and Redis, not the pipeline, are loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import APP, _fmt, start_stack, stop  # noqa: E402

SMALLEST = {"prompt": "load", "video_size": {"width": 16, "height": 16}, "num_inference_steps": 1, "use_rife": False}
POLL_S = 0.1  # fal_client's status poll interval


@dataclass
class LoadResult:
    submit_s: list[float] = field(default_factory=list)
    status_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    completed: int = 0
    elapsed_s: float = 0.0
    redis_bytes_per_request: float = 0.0

    def figures(self) -> dict[str, float]:
        return {
            "errors": len(self.errors),
            "completed": self.completed,
            "submit_p50_ms": percentile(self.submit_s, 50) * 1000,
            "submit_p99_ms": percentile(self.submit_s, 99) * 1000,
            "status_p50_ms": percentile(self.status_s, 50) * 1000,
            "status_p99_ms": percentile(self.status_s, 99) * 1000,
            "status_calls": len(self.status_s),
            "api_calls_per_s": (len(self.submit_s) + len(self.status_s)) / self.elapsed_s,
            "redis_kib_per_request": self.redis_bytes_per_request / 1024,
        }


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else float("nan")


async def _timed(result: LoadResult, samples: list[float], call: Any) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call
    except httpx.HTTPError as error:
        result.errors.append(f"{type(error).__name__}: {error}")
        return None
    samples.append(time.perf_counter() - started)
    if response.is_error:
        result.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
        return None
    return response


async def _client_loop(
    client: httpx.AsyncClient, tickets: Any, result: LoadResult, payload: dict[str, Any], cancel_after: int | None
) -> None:
    for _ in tickets:
        submitted = await _timed(result, result.submit_s, client.post(f"/queue/{APP}", json=payload))
        if submitted is None:
            continue
        urls = submitted.json()
        polls = 0
        while True:
            await asyncio.sleep(POLL_S)
            answer = await _timed(result, result.status_s, client.get(urls["status_url"]))
            if answer is None:
                break
            polls += 1
            if polls == cancel_after and await _timed(result, [], client.put(urls["cancel_url"])) is None:
                break
            if answer.json()["status"] == "COMPLETED":
                final = await client.get(urls["response_url"])  # the result, or the cancelled request's 499
                if final.status_code in (200, 499):
                    result.completed += 1
                else:
                    result.errors.append(f"result HTTP {final.status_code}: {final.text[:200]}")
                break


async def run_load(
    base: str,
    redis_url: str,
    submissions: int,
    concurrency: int,
    *,
    headers: dict[str, str] | None = None,
    verify: Any = True,
    payload: dict[str, Any] = SMALLEST,
    cancel_after: int | None = None,
) -> LoadResult:
    """The load itself, against a running stack (the benchmark's own, or a test's); with
    ``cancel_after``, each client cancels its request after that many polls."""
    connection = redis.Redis.from_url(redis_url)
    memory_before = connection.info("memory")["used_memory"]
    result = LoadResult()
    tickets = iter(range(submissions))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits, headers=headers, verify=verify) as client:
        started = time.perf_counter()
        await asyncio.gather(*(_client_loop(client, tickets, result, payload, cancel_after) for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
    memory_after = connection.info("memory")["used_memory"]
    result.redis_bytes_per_request = (memory_after - memory_before) / max(1, result.completed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--polls", type=int, default=20, help="polls before a client cancels (--workers 0)")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "load"
        process, base = start_stack(data_dir, workers=args.workers, settings={"OPENREEL_ENDPOINTS": APP})
        try:
            redis_url = f"redis://127.0.0.1:{(data_dir / 'redis' / 'redis.port').read_text()}/0"
            cancel_after = None if args.workers else args.polls
            result = asyncio.run(run_load(base, redis_url, args.submissions, args.concurrency, cancel_after=cancel_after))
        finally:
            stop(process)
    finishing = f"{args.workers} tiny workers" if args.workers else f"cancelled after {args.polls} polls"
    print(f"{args.submissions} submissions, {args.concurrency} clients polling every {POLL_S * 1000:.0f} ms, "
          f"{finishing}, {result.elapsed_s:.0f} s: " + _fmt(result.figures()))
    for error in result.errors[:10]:
        print("  error:", error)


if __name__ == "__main__":
    main()
