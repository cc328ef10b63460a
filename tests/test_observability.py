"""Watching a running openreel: /metrics rendered from Redis, worker states in /health, /live
without Redis, and JSON log lines that carry the request id in every process."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from openreel import logging_setup, metrics, worker_registry
from tests.http_servers import Reply, ScriptedServer
from tests.stack import Stack, wait_until

APP = "fal-ai/cogvideox-5b"
V2V = "fal-ai/cogvideox-5b/video-to-video"
SMALL = {"prompt": "tiny", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "use_rife": False}
# Several seconds of denoising on the tiny preset, long enough to watch a busy worker.
SLOW = {"prompt": "slow", "video_size": {"width": 320, "height": 320}, "num_inference_steps": 50, "use_rife": False}
# Passes the schema, fails on the worker: the bytes are no video.
NOT_A_VIDEO = {"prompt": "x", "video_url": "data:text/plain;base64,aGVsbG8=", "num_inference_steps": 2}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: Stack) -> Samples:
    with stack.client() as http:
        response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")  # Prometheus text format
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def submit(http: httpx.Client, payload: dict[str, Any], app: str = APP, **params: str) -> str:
    response = http.post(f"/queue/{app}", json=payload, params=params)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def completed(http: httpx.Client, request_id: str) -> bool:
    return http.get(f"/queue/{APP}/requests/{request_id}/status").json()["status"] == "COMPLETED"


# --- metrics from Redis ------------------------------------------------------------------
def test_histograms_render_cumulative_buckets_per_label_set(redis_connection: redis.Redis) -> None:
    histogram = metrics.RedisHistogram("openreel_test_seconds", "test", ("stage",), (1.0, 5.0))
    redis_connection.delete(histogram.key)
    for seconds, stage in ((0.5, "a"), (3.0, "a"), (7.0, "a"), (1.0, "b")):
        histogram.observe(redis_connection, seconds, stage)
    family = histogram.family(redis_connection.hgetall(histogram.key))
    got = {(s.name, s.labels["stage"], s.labels.get("le")): s.value for s in family.samples}
    assert got == {
        ("openreel_test_seconds_bucket", "a", "1.0"): 1,
        ("openreel_test_seconds_bucket", "a", "5.0"): 2,
        ("openreel_test_seconds_bucket", "a", "+Inf"): 3,
        ("openreel_test_seconds_count", "a", None): 3,
        ("openreel_test_seconds_sum", "a", None): 10.5,
        ("openreel_test_seconds_bucket", "b", "1.0"): 1,
        ("openreel_test_seconds_bucket", "b", "5.0"): 1,
        ("openreel_test_seconds_bucket", "b", "+Inf"): 1,
        ("openreel_test_seconds_count", "b", None): 1,
        ("openreel_test_seconds_sum", "b", None): 1.0,
    }


def both_workers_serve(stack: Stack) -> bool:
    """/health turns 200 with one worker per endpoint; the stack's second may still be loading."""
    with stack.client() as http:
        workers = http.get("/health").json()["workers"]
    return len(workers) == 2 and all(w["state"] in worker_registry.SERVING for w in workers)


def test_metrics_count_requests_by_outcome_with_queue_wait_and_stage_times(stack: Stack) -> None:
    wait_until(lambda: both_workers_serve(stack), timeout_s=120)
    before = scrape(stack)
    with stack.client() as http:
        ok, failed = submit(http, SMALL), submit(http, NOT_A_VIDEO, app=V2V)
        wait_until(lambda: completed(http, ok) and completed(http, failed), timeout_s=60)
        assert httpx.get(f"{stack.base_url}/metrics", verify=stack.verify).status_code == 401  # key required
    after = scrape(stack)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("openreel_requests_total", endpoint=APP, outcome="ok") >= 1
    assert moved("openreel_requests_total", endpoint=V2V, outcome="invalid_input") >= 1
    assert moved("openreel_requests_submitted_total", endpoint=APP, queue="cogvideox") >= 1
    assert moved("openreel_queue_wait_seconds_count", queue="cogvideox") >= 2
    assert moved("openreel_run_seconds_count", endpoint=V2V, outcome="invalid_input") >= 1
    denoised = moved("openreel_stage_seconds_count", endpoint=APP, stage="denoising")
    assert denoised >= 1 and moved("openreel_stage_seconds_sum", endpoint=APP, stage="denoising") > 0
    assert value(after, "openreel_stage_seconds_bucket", endpoint=APP, stage="denoising", le="+Inf") == value(
        after, "openreel_stage_seconds_count", endpoint=APP, stage="denoising"
    )
    for queue in ("cogvideox", "cogvideox.low", "webhooks"):
        assert ("openreel_queue_depth", frozenset({("queue", queue)})) in after
    serving = sum(value(after, "openreel_workers", state=state) for state in worker_registry.SERVING)
    assert serving == 2 and value(after, "openreel_workers", state="failed") == 0
    assert sum(value(after, "openreel_endpoint_workers", endpoint=V2V, state=s) for s in ("ready", "busy")) == 2
    assert not any(name.startswith("openreel_worker_gpu") for name, _ in after)  # CPU workers publish none


def test_health_lists_worker_states_and_the_busy_worker_s_request(stack: Stack) -> None:
    wait_until(lambda: both_workers_serve(stack), timeout_s=120)
    with stack.client() as http:
        request_id = submit(http, SLOW)

        def busy_with_it() -> bool:
            workers = http.get("/health").json()["workers"]
            return any(w["state"] == "busy" and w.get("request_id") == request_id for w in workers)

        wait_until(busy_with_it, timeout_s=30)
        health = http.get("/health")
        assert health.status_code == 200  # busy workers still serve
        workers = health.json()["workers"]
        assert len(workers) == 2 and all(w["state"] in worker_registry.STATES and w["state_since"] for w in workers)
        assert http.put(f"/queue/{APP}/requests/{request_id}/cancel").status_code == 202
        wait_until(lambda: completed(http, request_id), timeout_s=30)
        wait_until(lambda: all(w["state"] == "ready" for w in http.get("/health").json()["workers"]), timeout_s=10)


# --- logs --------------------------------------------------------------------------------
@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_lines_are_json_off_a_terminal_and_text_on_demand(
    monkeypatch: pytest.MonkeyPatch, root_logging: None
) -> None:
    for log_format, is_json in (("auto", True), ("json", True), ("text", False)):
        stream = io.StringIO()  # not a terminal
        monkeypatch.setattr(sys, "stderr", stream)
        logging_setup.configure(log_format, "INFO", "worker")  # type: ignore[arg-type]
        with logging_setup.request_context("req-1"):
            logging.getLogger("rq.worker").info("job %s done", "x")
        logging.getLogger("openreel").info("between requests")
        first, second = stream.getvalue().splitlines()
        if is_json:
            line = json.loads(first)
            assert (line["message"], line["request_id"], line["process"], line["logger"]) == (
                "job x done", "req-1", "worker", "rq.worker"
            )
            assert json.loads(second)["request_id"] is None
        else:
            assert first.endswith("INFO rq.worker [req-1]: job x done")
            assert second.endswith("INFO openreel: between requests")


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


def test_one_request_s_lines_carry_its_id_in_every_process_and_webhooks_are_counted(
    make_stack: Any, receiver: ScriptedServer
) -> None:
    env = {"OPENREEL_FETCH_ALLOW": "127.0.0.1", "OPENREEL_ENDPOINTS": "cogvideox"}
    stack: Stack = make_stack(workers=1, env=env).start()
    url = receiver.route("/hook", Reply(500), Reply(200))
    with stack.client() as http:
        request_id = submit(http, SMALL, fal_webhook=url)
    wait_until(lambda: len(receiver.hits_on("/hook")) == 2, timeout_s=60)
    wait_until(lambda: value(scrape(stack), "openreel_webhook_attempts_total", outcome="delivered") == 1)
    samples = scrape(stack)
    assert value(samples, "openreel_webhook_attempts_total", outcome="retried") == 1
    assert value(samples, "openreel_webhook_attempts_total", outcome="failed") == 0

    # stderr of every process is a file here, so 'auto' writes JSON.
    lines = [json.loads(line) for line in (stack.directory / "up.log").read_text().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["request_id"] == request_id]
    assert {line["process"] for line in mine} == {"up", "worker", "io-worker"}
    assert any(line["logger"] == "openreel.access" and line["message"].startswith(f"POST /queue/{APP} 200") for line in mine)
    assert any(line["logger"] == "openreel.webhooks" and "webhook delivered" in line["message"] for line in mine)

    # A worker that cannot load says why, in /health and the metrics, until its entry expires.
    stack.env["OPENREEL_DEVICE"] = "cuda"  # this host has no CUDA
    stack.start_worker()
    with stack.client() as http:
        seen: list[tuple[int, list[dict[str, Any]], float]] = []

        def failure_shown() -> bool:
            health = http.get("/health")
            failed = [w for w in health.json()["workers"] if w["state"] == "failed"]
            seen.append((health.status_code, failed, value(scrape(stack), "openreel_workers", state="failed")))
            return bool(failed)

        wait_until(failure_shown, timeout_s=60, interval_s=0.1)
        status_code, failed, failed_gauge = seen[-1]
        assert "CUDA is not available" in failed[0]["error"] and failed_gauge == 1
        assert status_code == 200  # the first worker still serves

    # /live answers from the process alone; /health needs Redis.
    redis.Redis.from_url(stack.redis_url).shutdown(nosave=True)
    with stack.client() as http:
        assert http.get("/live").json() == {"status": "alive"}
        assert http.get("/health").status_code == 503
