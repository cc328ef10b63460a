"""Request records in Redis: the fal-visible state of every request, shared by API and workers.

RQ only carries the request id; everything a client can see (status, logs, result, error)
lives here, with its own retention, because RQ's result TTLs are far shorter than fal's.
State changes that race (claim by a worker, cancel by a client, completion) are Lua scripts,
so a request reaches COMPLETED exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from pydantic import BaseModel, Field

from openreel import metrics

Status = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]

KEY_PREFIX = "openreel:req:"
# The last failed requests, newest first, for 'openreel status' (cancellations are not failures).
RECENT_FAILURES_KEY = "openreel:recent-failures"
RECENT_FAILURES_KEPT = 50


def record_key(request_id: str) -> str:
    return f"{KEY_PREFIX}{request_id}"


def logs_key(request_id: str) -> str:
    return f"{KEY_PREFIX}{request_id}:logs"


class RequestError(BaseModel):
    """How a failed request is reported: HTTP status of the result route plus fal's body."""

    status_code: int
    detail: Any
    error_type: str

    @property
    def message(self) -> str:
        if isinstance(self.detail, str):
            return self.detail
        return "; ".join(str(item.get("msg", item)) for item in self.detail)


TIMEOUT_ERROR = RequestError(
    status_code=504, detail="Request timed out before a worker started it", error_type="request_timeout"
)
CANCELLED_ERROR = RequestError(status_code=499, detail="Request was cancelled", error_type="request_cancelled")
WORKER_LOST_ERROR = RequestError(
    status_code=503, detail="The worker running this request died and no retries are left", error_type="runner_disconnected"
)


class RequestRecord(BaseModel):
    request_id: str
    endpoint: str = Field(description="Full endpoint id as submitted, subpath included.")
    app: str = Field(description="{ns/}owner/alias: the part status, result and cancel routes use.")
    family: str
    status: Status = "IN_QUEUE"
    priority: Literal["normal", "low"] = "normal"
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: RequestError | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    start_deadline: float | None = Field(None, description="Unix time by which a worker must start it.")
    no_retry: bool = False
    store_io: bool = True
    webhook_url: str | None = None
    object_lifetime_s: int | None = Field(None, description="Seconds output files are kept (lifecycle header).")
    files_base_url: str = Field(description="Base of the URLs of output files.")
    owner: str | None = Field(None, description="Digest of the API key that submitted it; only that key reads it.")
    worker: str | None = None
    attempts: int = 0
    cancel_requested: bool = False

    def to_hash(self) -> dict[str, str]:
        data = self.model_dump(mode="json")
        return {key: json.dumps(value) for key, value in data.items()}

    @classmethod
    def from_hash(cls, data: dict[bytes, bytes]) -> RequestRecord:
        return cls.model_validate({key.decode(): json.loads(value) for key, value in data.items()})

    @property
    def inference_time(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round(self.finished_at - self.started_at, 4)


def _utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def log_line(message: str, level: str = "INFO", ts: float | None = None) -> dict[str, str]:
    return {"message": message, "level": level, "source": "USER", "timestamp": _utc_iso(ts or time.time())}


# Values are JSON-encoded in the hash, so the scripts compare against JSON strings.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == '"COMPLETED"' then return 'completed' end
local deadline = redis.call('HGET', KEYS[1], 'start_deadline')
if deadline and deadline ~= 'null' and tonumber(deadline) < tonumber(ARGV[2]) then return 'expired' end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts')) + 1
redis.call('HSET', KEYS[1], 'status', '"IN_PROGRESS"', 'worker', ARGV[1], 'started_at', ARGV[2],
           'attempts', tostring(attempts))
return 'claimed'
"""

_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == '"COMPLETED"' then return 0 end
redis.call('HSET', KEYS[1], 'status', '"COMPLETED"', unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

_REQUEST_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == '"COMPLETED"' then return 'completed' end
if status == '"IN_QUEUE"' then return 'queued' end
redis.call('HSET', KEYS[1], 'cancel_requested', 'true')
return 'running'
"""

_REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"IN_PROGRESS"' then return 0 end
redis.call('HSET', KEYS[1], 'status', '"IN_QUEUE"', 'worker', 'null', 'started_at', 'null')
return 1
"""


# Called once per request that reaches COMPLETED with a webhook URL (openreel.webhooks.WebhookQueue).
WebhookHook = Callable[[RequestRecord, dict[str, Any] | None, RequestError | None], None]


class RecordStore:
    """Reads and state transitions of request records; one instance per process.

    Processes that complete requests pass ``webhooks``, so every way a request can end
    (result, cancel, start timeout, lost worker) sends its webhook from ``complete``.
    """

    def __init__(self, connection: redis.Redis, retention_s: int, webhooks: WebhookHook | None = None) -> None:
        self.redis = connection
        self.retention_s = retention_s
        self.webhooks = webhooks
        self._claim = connection.register_script(_CLAIM)
        self._finish = connection.register_script(_FINISH)
        self._request_cancel = connection.register_script(_REQUEST_CANCEL)
        self._requeue = connection.register_script(_REQUEUE)

    # --- reads -------------------------------------------------------------------------------
    def get(self, request_id: str) -> RequestRecord | None:
        data = self.redis.hgetall(record_key(request_id))
        return RequestRecord.from_hash(data) if data else None

    def logs(self, request_id: str, start: int = 0) -> list[dict[str, str]]:
        return [json.loads(item) for item in self.redis.lrange(logs_key(request_id), start, -1)]

    # --- writes ------------------------------------------------------------------------------
    def create(self, record: RequestRecord, pipeline: redis.client.Pipeline) -> None:
        key = record_key(record.request_id)
        pipeline.hset(key, mapping=record.to_hash())
        pipeline.expire(key, self.retention_s)

    def log(self, request_id: str, message: str, level: str = "INFO") -> None:
        key = logs_key(request_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(log_line(message, level)))
            pipe.expire(key, self.retention_s)
            pipe.execute()

    def claim(self, request_id: str, worker: str) -> str:
        """'claimed', or why not: 'completed', 'expired' (start deadline passed) or 'missing'."""
        result = self._claim(keys=[record_key(request_id)], args=[json.dumps(worker), time.time()])
        return result.decode()

    def complete(
        self, request_id: str, *, output: dict[str, Any] | None = None, error: RequestError | None = None
    ) -> bool:
        """Move to COMPLETED unless it already is; False when another path completed it first."""
        now = time.time()
        fields: dict[str, Any] = {"finished_at": now, "output": output, "error": error and error.model_dump()}
        record = self.get(request_id)
        if record is not None and record.started_at is None:
            fields["started_at"] = now  # never ran: zero inference time rather than none
        args: list[Any] = [self.retention_s]
        for key, value in fields.items():
            args += [key, json.dumps(value)]
        done = self._finish(keys=[record_key(request_id), logs_key(request_id)], args=args)
        if done and record is not None:
            self._count_outcome(record, error, now)
            if record.webhook_url and self.webhooks is not None:
                self.webhooks(record, output, error)
        return bool(done)

    def _count_outcome(self, record: RequestRecord, error: RequestError | None, now: float) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            metrics.REQUESTS_COMPLETED.inc(pipe, record.endpoint, "ok" if error is None else error.error_type)
            if error is not None and error.error_type != CANCELLED_ERROR.error_type:
                failure = {
                    "request_id": record.request_id,
                    "endpoint": record.endpoint,
                    "error_type": error.error_type,
                    "message": error.message,
                    "finished_at": now,
                }
                pipe.lpush(RECENT_FAILURES_KEY, json.dumps(failure))
                pipe.ltrim(RECENT_FAILURES_KEY, 0, RECENT_FAILURES_KEPT - 1)
            pipe.execute()

    def recent_failures(self, limit: int) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.redis.lrange(RECENT_FAILURES_KEY, 0, limit - 1)]

    def request_cancel(self, request_id: str) -> str:
        """'queued' (caller removes it), 'running' (flag set), 'completed' or 'missing'."""
        return self._request_cancel(keys=[record_key(request_id)]).decode()

    def cancel_requested(self, request_id: str) -> bool:
        return self.redis.hget(record_key(request_id), "cancel_requested") == b"true"

    def requeue(self, request_id: str) -> bool:
        """Back to IN_QUEUE after its worker died; RQ re-enqueues the job itself."""
        return bool(self._requeue(keys=[record_key(request_id)]))

    def forget_io(self, request_id: str) -> None:
        """Drop input and output payloads (X-Fal-Store-IO: 0) once the result has been read."""
        self.redis.hset(record_key(request_id), mapping={"input": "null", "output": "null"})
