"""fal's completion webhooks: the signed POST a request's ``fal_webhook`` URL receives.

The body is fixed when the request completes (so every retry sends the same bytes, even if
an ``X-Fal-Store-IO: 0`` result has been read meanwhile) and delivery runs as an RQ job on
the ``webhooks`` queue, served by ``openreel io-worker``: a GPU worker never waits on a
receiver. Failed tries are retried by RQ with exponential backoff; each try is logged into
the request's logs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import httpx
import redis
from rq import Queue, Retry, get_current_job

from openreel import metrics
from openreel.logging_setup import request_context
from openreel.netguard import AddressRefused, guarded_client
from openreel.records import RecordStore, RequestError, RequestRecord
from openreel.settings import Settings
from openreel.signing import load_signing_key, signature_headers

log = logging.getLogger("openreel.webhooks")

WEBHOOK_QUEUE = "webhooks"
DELIVER_FUNCTION = "openreel.webhooks.deliver"
# There are no user accounts here; receivers only need the value to rebuild the signed message.
USER_ID = "openreel"
LOG_LEVELS = {"INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}
# RQ's own limit on a try, above the HTTP timeout, for a receiver that trickles its answer.
JOB_TIMEOUT_MARGIN_S = 5


class WebhookFailed(Exception):
    """A try that did not get a 2xx; raising it makes RQ schedule the next try."""


def retry_intervals(max_attempts: int, window_s: int) -> list[int]:
    """Seconds before tries 2..N: each wait doubles, and together they span ``window_s``."""
    retries = max_attempts - 1
    if retries < 1:
        return []
    unit = window_s / (2**retries - 1)
    return [max(1, round(unit * 2**i)) for i in range(retries)]


def webhook_body(request_id: str, output: dict[str, Any] | None, error: RequestError | None) -> bytes:
    """The JSON fal posts. Outputs here are always JSON (records store them as JSON), so
    ``payload_error`` is always null."""
    if error is None:
        status, payload, message = "OK", output, None
    else:
        payload = {"detail": error.detail, "error_type": error.error_type}
        status, message = "ERROR", f"Invalid status code: {error.status_code}"
    body = {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": status,
        "payload": payload,
        "error": message,
        "payload_error": None,
    }
    return json.dumps(body).encode()


class WebhookQueue:
    """What ``RecordStore.complete`` calls for a request that asked for a webhook."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.queue = Queue(WEBHOOK_QUEUE, connection=connection)
        self.max_attempts = settings.webhook_max_attempts
        self.intervals = retry_intervals(settings.webhook_max_attempts, settings.webhook_retry_window_s)
        self.timeout_s = math.ceil(settings.webhook_timeout_s) + JOB_TIMEOUT_MARGIN_S
        self.failure_ttl_s = settings.retention_s

    def __call__(self, record: RequestRecord, output: dict[str, Any] | None, error: RequestError | None) -> None:
        body = webhook_body(record.request_id, output, error)
        self.queue.enqueue_call(
            DELIVER_FUNCTION,
            args=(record.request_id, record.webhook_url, body, self.max_attempts),
            job_id=f"webhook-{record.request_id}",
            timeout=self.timeout_s,
            result_ttl=0,
            failure_ttl=self.failure_ttl_s,
            retry=Retry(max=len(self.intervals), interval=self.intervals) if self.intervals else None,
        )


class Deliverer:
    """One delivery try at a time; lives in the io-worker."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.key = load_signing_key(settings, connection)
        self.store = RecordStore(connection, settings.retention_s)
        # One client for the process: building one loads the CA bundle, the main cost of a try.
        timeout = httpx.Timeout(settings.webhook_timeout_s)
        self.client = guarded_client(settings.fetch_allow, timeout=timeout, follow_redirects=False)

    def attempt(self, request_id: str, url: str, body: bytes, attempt: int, max_attempts: int) -> None:
        """Send once; raises ``WebhookFailed`` when RQ should try again."""
        headers = {"content-type": "application/json"}
        headers |= signature_headers(self.key, request_id, USER_ID, int(time.time()), body)
        tries = f"attempt {attempt}/{max_attempts}"
        try:
            with self.client.stream("POST", url, content=body, headers=headers) as response:
                code = response.status_code
        except (AddressRefused, httpx.InvalidURL) as refused:
            self._log(request_id, f"webhook not sent: {refused}", "ERROR")
            metrics.WEBHOOK_ATTEMPTS.inc(self.store.redis, "refused")
            return  # another try would be refused too
        except httpx.HTTPError as error:
            message = f"{tries} failed: {type(error).__name__}: {error}"
            raise self._failure(request_id, message, attempt == max_attempts) from None
        if 200 <= code < 300:
            self._log(request_id, f"webhook delivered ({tries}): HTTP {code}", "INFO")
            metrics.WEBHOOK_ATTEMPTS.inc(self.store.redis, "delivered")
            return
        note = " (redirects are not followed)" if 300 <= code < 400 else ""
        raise self._failure(request_id, f"{tries} failed: HTTP {code}{note}", attempt == max_attempts)

    def _failure(self, request_id: str, message: str, last: bool) -> WebhookFailed:
        self._log(request_id, f"webhook {message}{'; giving up' if last else ''}", "ERROR" if last else "WARN")
        metrics.WEBHOOK_ATTEMPTS.inc(self.store.redis, "failed" if last else "retried")
        return WebhookFailed(message)

    def _log(self, request_id: str, message: str, level: str) -> None:
        log.log(LOG_LEVELS[level], "%s: %s", request_id, message)
        self.store.log(request_id, message, level=level)


_deliverer: Deliverer | None = None


def install(deliverer: Deliverer) -> None:
    global _deliverer
    _deliverer = deliverer


def deliver(request_id: str, url: str, body: bytes, max_attempts: int) -> None:
    """The RQ job. RQ counts the retries left, which says which try this is."""
    if _deliverer is None:
        raise RuntimeError("webhooks are delivered by 'openreel io-worker', not this process")
    job = get_current_job()
    retries_left = job.retries_left if job is not None and job.retries_left is not None else 0
    with request_context(request_id):
        _deliverer.attempt(request_id, url, body, max_attempts - retries_left, max_attempts)
