"""Webhook delivery latency and throughput of one io-worker, on whatever machine runs it.

Requests are submitted with ``?fal_webhook=`` to a stack without GPU workers and cancelled at
once, so each completes at the cancel call and only the webhook path is measured: enqueue, the
io-worker's pick-up, signing, the SSRF check and the POST to a receiver on loopback.

1. latency: N requests one after another; time from the cancel answer to the POST's arrival.
2. burst: M requests completed back to back; deliveries per second from the first completion to
   the last arrival (bounded by how fast one client submits and cancels), and how far the last
   delivery trails the last completion.

    python scripts/bench_webhooks.py [--requests 50] [--burst 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from bench_overhead import APP, TINY, _fmt, start_stack, stop

from openreel.redis_server import free_port


class Receiver:
    """Answers 200 to every POST and notes when each request id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.port = free_port()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                owner.arrived[self.headers["x-fal-webhook-request-id"]] = time.perf_counter()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, request_ids: list[str], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(request_id in self.arrived for request_id in request_ids):
            if time.monotonic() > deadline:
                raise SystemExit("webhooks did not all arrive")
            time.sleep(0.001)


def submit_and_cancel(client: httpx.Client, hook: str) -> tuple[str, float]:
    request_id = client.post(f"/queue/{APP}", params={"fal_webhook": hook}, json=TINY).json()["request_id"]
    client.put(f"/queue/{APP}/requests/{request_id}/cancel").raise_for_status()
    return request_id, time.perf_counter()


def latency(base: str, receiver: Receiver, requests: int) -> dict[str, float]:
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    samples = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(requests + 1):  # the first one warms connections and is dropped
            request_id, completed = submit_and_cancel(client, hook)
            receiver.wait_for([request_id])
            samples.append(receiver.arrived[request_id] - completed)
    samples = samples[1:]
    return {
        "latency_median_ms": statistics.median(samples) * 1000,
        "latency_p90_ms": statistics.quantiles(samples, n=10)[-1] * 1000,
        "latency_max_ms": max(samples) * 1000,
    }


def burst(base: str, receiver: Receiver, requests: int) -> dict[str, float]:
    hook = f"http://127.0.0.1:{receiver.port}/burst"
    with httpx.Client(base_url=base, timeout=60) as client:
        done = [submit_and_cancel(client, hook) for _ in range(requests)]
    ids = [request_id for request_id, _ in done]
    receiver.wait_for(ids)
    last_arrival = max(receiver.arrived[request_id] for request_id in ids)
    return {
        "deliveries_per_s": requests / (last_arrival - done[0][1]),
        "last_delivery_after_last_completion_ms": (last_arrival - done[-1][1]) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        allow = {"OPENREEL_FETCH_ALLOW": "127.0.0.1"}
        process, base = start_stack(Path(tmp) / "webhooks", workers=0, settings=allow)
        try:
            result = latency(base, receiver, args.requests)
            print(f"completion -> webhook arrival over {args.requests} requests: " + _fmt(result))
            print(f"burst of {args.burst} webhooks: " + _fmt(burst(base, receiver, args.burst)))
        finally:
            stop(process)


if __name__ == "__main__":
    main()
