"""The exact status JSON fal's clients parse (see docs/protocol snapshots in tests)."""

from __future__ import annotations

from typing import Any

from openreel.records import RequestRecord


def request_urls(queue_base: str, record: RequestRecord) -> dict[str, str]:
    response_url = f"{queue_base}/{record.app}/requests/{record.request_id}"
    return {
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def submitted_body(queue_base: str, record: RequestRecord, queue_position: int) -> dict[str, Any]:
    return {
        "status": "IN_QUEUE",
        "request_id": record.request_id,
        **request_urls(queue_base, record),
        "queue_position": queue_position,
        "gateway_request_id": record.request_id,
    }


def status_body(
    queue_base: str,
    record: RequestRecord,
    logs: list[dict[str, str]] | None,
    queue_position: int | None = None,
) -> dict[str, Any]:
    """``logs`` is None when the client did not ask for them; the key stays, as clients require."""
    body: dict[str, Any] = {"status": record.status, "request_id": record.request_id, **request_urls(queue_base, record)}
    if record.status == "IN_QUEUE":
        body["queue_position"] = queue_position if queue_position is not None else 0
    body["logs"] = logs
    if record.status == "COMPLETED":
        body["metrics"] = {"inference_time": record.inference_time}
        if record.error is not None:
            body["error"] = record.error.message
            body["error_type"] = record.error.error_type
    return body
