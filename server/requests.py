"""The API side of a request's life: submit, read (with start-timeout expiry), cancel, result.

Routes stay thin: they parse HTTP and call these functions, which run in the threadpool
because RQ and the record store speak synchronous Redis.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError

from openreel import queues
from openreel.netguard import is_web_url
from openreel.records import TIMEOUT_ERROR, RecordStore, RequestRecord
from openreel.settings import Settings
from openreel.webhooks import WebhookQueue
from pipelines.registry import Endpoint
from server.errors import FalError, validation_detail

TRUE_WORDS = {"1", "true", "yes"}
FALSE_WORDS = {"0", "false", "no"}
# fal's answers to a cancel call, by what openreel.queues.cancel did.
CANCEL_ANSWERS = {
    "cancelled": (202, "CANCELLATION_REQUESTED"),
    "requested": (202, "CANCELLATION_REQUESTED"),
    "completed": (400, "ALREADY_COMPLETED"),
    "missing": (404, "NOT_FOUND"),
}



@dataclass(frozen=True)
class SubmitOptions:
    """fal's platform headers, parsed; unknown values are refused with a 422."""

    priority: queues.Priority = "normal"
    start_timeout_s: float | None = None
    no_retry: bool = False
    store_io: bool = True
    webhook_url: str | None = None
    object_lifetime_s: int | None = None

    @classmethod
    def from_headers(cls, headers: Any, webhook_url: str | None) -> SubmitOptions:
        priority = headers.get("x-fal-queue-priority", "normal").strip().lower()
        if priority not in queues.PRIORITIES:
            raise _header_error("x-fal-queue-priority", f"must be one of {', '.join(queues.PRIORITIES)}")
        timeout = headers.get("x-fal-request-timeout")
        start_timeout_s = None
        if timeout is not None:
            try:
                start_timeout_s = float(timeout)
            except ValueError:
                raise _header_error("x-fal-request-timeout", "must be a number of seconds") from None
            if not start_timeout_s > 0:
                raise _header_error("x-fal-request-timeout", "must be greater than 0")
        store_io = headers.get("x-fal-store-io", "1").strip().lower() not in FALSE_WORDS
        no_retry = headers.get("x-fal-no-retry", "").strip().lower() in TRUE_WORDS
        if webhook_url is not None and not is_web_url(webhook_url):
            detail = [{"loc": ["query", "fal_webhook"], "msg": "must be an http(s) URL", "type": "value_error"}]
            raise FalError(422, detail)
        lifetime_s = object_lifetime_s(headers)
        return cls(priority, start_timeout_s, no_retry, store_io, webhook_url, lifetime_s)  # type: ignore[arg-type]


LIFECYCLE_HEADER = "x-fal-object-lifecycle-preference"
# fal's CDN upload routes read this older name; the clients send it (alone, from JS) on uploads.
UPLOAD_LIFECYCLE_HEADER = "x-fal-object-lifecycle"


def object_lifetime_s(headers: Any, names: tuple[str, ...] = (LIFECYCLE_HEADER,)) -> int | None:
    """``expiration_duration_seconds`` of the first lifecycle header present; None keeps files."""
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            preference = json.loads(raw)
        except ValueError:
            raise _header_error(name, 'must be JSON such as {"expiration_duration_seconds": 3600}') from None
        if not isinstance(preference, dict):
            raise _header_error(name, "must be a JSON object")
        seconds = preference.get("expiration_duration_seconds")
        if seconds is not None and (type(seconds) is not int or seconds <= 0):
            raise _header_error(name, "expiration_duration_seconds must be a positive whole number")
        return seconds
    return None


def _header_error(name: str, msg: str) -> FalError:
    return FalError(422, [{"loc": ["header", name], "msg": msg, "type": "value_error"}])


def app_of(endpoint_id: str) -> str:
    """``{ns/}owner/alias``: the part of an endpoint id that request-id routes use."""
    parts = endpoint_id.split("/")
    keep = 3 if parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep])


class RequestService:
    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        self.redis = connection
        self.store = RecordStore(connection, settings.retention_s, WebhookQueue(connection, settings))

    def submit(
        self, endpoint: Endpoint, payload: Any, options: SubmitOptions, files_base_url: str, owner: str | None = None
    ) -> RequestRecord:
        try:
            request = endpoint.input_model.model_validate(payload, context={"settings": self.settings})
        except ValidationError as error:
            raise FalError(422, validation_detail(error)) from None
        now = time.time()
        record = RequestRecord(
            request_id=str(uuid.uuid4()),
            endpoint=endpoint.id,
            app=app_of(endpoint.id),
            family=endpoint.family,
            priority=options.priority,
            input=request.model_dump(mode="json"),
            created_at=now,
            start_deadline=now + options.start_timeout_s if options.start_timeout_s else None,
            no_retry=options.no_retry,
            store_io=options.store_io,
            webhook_url=options.webhook_url,
            object_lifetime_s=options.object_lifetime_s,
            files_base_url=self.settings.public_url or files_base_url,
            owner=owner,
        )
        queues.submit(
            self.redis,
            self.store,
            record,
            job_timeout_s=self.settings.job_timeout_s,
            max_retries=self.settings.max_retries,
        )
        return record

    def get(self, app: str, request_id: str, owner: str | None = None) -> RequestRecord:
        """The record, after expiring a missed start deadline; 404 when unknown under this app
        or submitted with another API key (as fal answers: the id's existence is not revealed).

        ``app`` is what the clients send (``owner/alias``) or, as fal's OpenAPI documents write
        the paths, the request's whole endpoint id."""
        record = self.store.get(request_id)
        if (
            record is None
            or app not in (record.app, record.endpoint)
            or (record.owner is not None and record.owner != owner)
        ):
            raise FalError(404, "Request not found")
        if record.status == "IN_QUEUE" and record.start_deadline and time.time() > record.start_deadline:
            if self.store.complete(request_id, error=TIMEOUT_ERROR):
                queues.remove_queued(self.redis, record)
            record = self.store.get(request_id) or record
        return record

    def queue_position(self, record: RequestRecord) -> int:
        return queues.queue_position(self.redis, record)

    def cancel(self, app: str, request_id: str, owner: str | None = None) -> tuple[int, str]:
        """(HTTP status, fal outcome) of a cancel call."""
        try:
            record = self.get(app, request_id, owner)
        except FalError:
            return 404, "NOT_FOUND"
        return CANCEL_ANSWERS[queues.cancel(self.redis, self.store, record)]

    def result(self, app: str, request_id: str, owner: str | None = None) -> dict[str, Any]:
        """The output of a completed request, or its error raised as a ``FalError``."""
        record = self.get(app, request_id, owner)
        if record.status != "COMPLETED":
            raise FalError(400, "Request is still in progress")
        if record.error is not None:
            headers = {"x-fal-request-timeout-type": "user"} if record.error.status_code == 504 else {}
            raise FalError(record.error.status_code, record.error.detail, record.error.error_type, headers)
        if record.output is None:
            raise FalError(404, "The result was not kept (X-Fal-Store-IO: 0) and has already been read")
        if not record.store_io:
            self.store.forget_io(request_id)
        return record.output
