"""Prometheus metrics of the whole deployment, kept in Redis and rendered by any API process.

Requests run on workers, webhooks on the io-worker, and there may be several of each on several
hosts, so per-process registries would each see a slice. Instead every process adds to shared
Redis hashes (one HINCRBY per counter, two per histogram observation: its bucket and its sum)
and the API's ``GET /metrics`` reads them back at scrape time, together with gauges read from
the live state: queue lengths from RQ, workers and their GPU memory from the worker registry.

Counters and histograms live as long as the Redis data does: they restart from zero only when
Redis does, which Prometheus' ``rate()`` handles as a counter reset.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue

from openreel import worker_registry

KEY_PREFIX = "openreel:metrics:"
SUM_FIELD = "sum"
INF = math.inf

RedisLike = redis.Redis | redis.client.Pipeline


def _field(values: Iterable[str]) -> str:
    return json.dumps(list(values))


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == INF else repr(float(bound))


@dataclass(frozen=True)
class RedisCounter:
    name: str
    documentation: str
    labels: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.name}"

    def inc(self, target: RedisLike, *values: str, amount: int = 1) -> None:
        target.hincrby(self.key, _field(values), amount)

    def family(self, stored: dict[bytes, bytes]) -> Metric:
        metric = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for field, count in sorted(stored.items()):
            metric.add_metric(json.loads(field), int(count))
        return metric


@dataclass(frozen=True)
class RedisHistogram:
    """Buckets are stored as plain counts per upper bound (one HINCRBY per observation) and made
    cumulative, as Prometheus wants them, only when rendered."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.name}"

    def observe(self, target: RedisLike, value: float, *values: str) -> None:
        bound = next((b for b in self.buckets if value <= b), INF)
        target.hincrby(self.key, _field((*values, _bound_text(bound))), 1)
        target.hincrbyfloat(self.key, _field((*values, SUM_FIELD)), value)

    def family(self, stored: dict[bytes, bytes]) -> Metric:
        series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        for field, number in stored.items():
            *values, slot = json.loads(field)
            series[tuple(values)][slot] = float(number)
        metric = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, slots in sorted(series.items()):
            cumulative, buckets = 0.0, []
            for bound in (*self.buckets, INF):
                cumulative += slots.get(_bound_text(bound), 0.0)
                buckets.append((_bound_text(bound), cumulative))
            metric.add_metric(list(values), buckets, slots.get(SUM_FIELD, 0.0))
        return metric


# Seconds: from a loopback round trip to an hour-long queue or a 20-minute 720p generation.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)

REQUESTS_SUBMITTED = RedisCounter(
    "openreel_requests_submitted", "Requests accepted and queued.", ("endpoint", "queue")
)
REQUESTS_COMPLETED = RedisCounter(
    "openreel_requests",
    "Requests that reached COMPLETED, by outcome: 'ok', or fal's error_type (request_cancelled, "
    "request_timeout, invalid_input, out_of_memory, internal_error, runner_disconnected).",
    ("endpoint", "outcome"),
)
QUEUE_WAIT = RedisHistogram(
    "openreel_queue_wait_seconds",
    "Seconds from submission to a worker's claim, first attempts only.",
    ("queue",),
    WAIT_BUCKETS,
)
RUN_DURATION = RedisHistogram(
    "openreel_run_seconds", "Seconds from a worker's claim to the recorded outcome.", ("endpoint", "outcome"),
    STAGE_BUCKETS,
)
STAGE_DURATION = RedisHistogram(
    "openreel_stage_seconds",
    "Seconds per pipeline stage (encoding_prompt, denoising, decoding, ...) of requests that succeeded.",
    ("endpoint", "stage"),
    STAGE_BUCKETS,
)
WEBHOOK_ATTEMPTS = RedisCounter(
    "openreel_webhook_attempts",
    "Webhook delivery tries by outcome: delivered, retried (failed, another try follows), failed (the last "
    "try failed), refused (the address is not allowed; never sent).",
    ("outcome",),
)
STORED = (REQUESTS_SUBMITTED, REQUESTS_COMPLETED, QUEUE_WAIT, RUN_DURATION, STAGE_DURATION, WEBHOOK_ATTEMPTS)

GPU_GAUGES = {
    "gpu_memory_bytes": "GPU memory allocated by the worker's tensors (torch.cuda.memory_allocated).",
    "gpu_memory_peak_bytes": "Most GPU memory the worker's tensors held since it started "
    "(torch.cuda.max_memory_allocated).",
    "gpu_memory_total_bytes": "Memory of the worker's GPU.",
}


class DeploymentCollector(Collector):
    """Reads everything at scrape time, so any API process renders the same numbers."""

    def __init__(self, connection: redis.Redis, endpoints: Sequence[str], queue_names: Sequence[str]) -> None:
        self.redis = connection
        self.endpoints = list(endpoints)
        self.queue_names = list(queue_names)

    def collect(self) -> Iterator[Metric]:
        with self.redis.pipeline(transaction=False) as pipe:
            for metric in STORED:
                pipe.hgetall(metric.key)
            stored = pipe.execute()
        for metric, values in zip(STORED, stored, strict=True):
            yield metric.family(values)
        yield self._queue_depths()
        yield from self._workers(worker_registry.live_workers(self.redis))

    def _queue_depths(self) -> Metric:
        """The queues this API feeds, listed even while empty, and any other queue RQ knows."""
        known = {queue.name for queue in Queue.all(connection=self.redis)}
        names = sorted({*self.queue_names, *known})
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(Queue(name, connection=self.redis).key)
            depths = pipe.execute()
        metric = GaugeMetricFamily("openreel_queue_depth", "Jobs waiting in each RQ queue.", labels=("queue",))
        for name, depth in zip(names, depths, strict=True):
            metric.add_metric([name], depth)
        return metric

    def _workers(self, workers: list[dict[str, Any]]) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("openreel_workers", "GPU workers by state.", labels=("state",))
        for state in worker_registry.STATES:
            by_state.add_metric([state], sum(w.get("state") == state for w in workers))
        yield by_state

        served = sorted({*self.endpoints, *(e for w in workers for e in w.get("endpoints", []))})
        per_endpoint = GaugeMetricFamily(
            "openreel_endpoint_workers",
            "GPU workers serving each endpoint, by state (a worker serving several endpoints counts for each).",
            labels=("endpoint", "state"),
        )
        for endpoint in served:
            for state in worker_registry.STATES:
                count = sum(w.get("state") == state and endpoint in w.get("endpoints", []) for w in workers)
                per_endpoint.add_metric([endpoint, state], count)
        yield per_endpoint

        for field, documentation in GPU_GAUGES.items():
            gauge = GaugeMetricFamily(f"openreel_worker_{field}", documentation, labels=("worker", "host"))
            for worker in workers:
                if field in worker:
                    gauge.add_metric([worker["name"], worker.get("host", "")], worker[field])
            yield gauge


def render(connection: redis.Redis, endpoints: Sequence[str], queue_names: Sequence[str]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(connection, endpoints, queue_names))
    return generate_latest(registry)
