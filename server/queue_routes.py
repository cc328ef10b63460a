"""fal's queue routes: submit, status, status stream, result, cancel.

Submit uses the full endpoint id (subpath included); the request-id routes use only
``{ns/}owner/alias``, as both official clients build them.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from openreel.records import RequestRecord
from pipelines.registry import Endpoint
from server.auth import key_owner, require_key
from server.errors import FalError
from server.requests import RequestService, SubmitOptions
from server.status import status_body, submitted_body

router = APIRouter(prefix="/queue", dependencies=[Depends(require_key)])

LOGS_ON = {"1", "true", "yes"}


def service(request: Request) -> RequestService:
    return request.app.state.requests


def queue_base(request: Request) -> str:
    return request.state.vhost_base


def find_endpoint(request: Request, endpoint_id: str) -> Endpoint:
    endpoint = request.app.state.endpoints.get(endpoint_id.strip("/"))
    if endpoint is None:
        raise FalError(404, f"Endpoint '{endpoint_id}' is not served here")
    return endpoint


async def read_body(request: Request) -> bytes:
    """The body, refused with a 413 as soon as it passes the limit (declared or counted), so a
    client cannot make the API hold more than that in memory."""
    limit = request.app.state.settings.request_body_max_bytes
    too_large = FalError(413, f"The request body is larger than {limit} bytes", "payload_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


async def read_json(request: Request) -> Any:
    body = await read_body(request)
    if not body.strip():
        return {}
    try:
        # Python's parser takes NaN, Infinity and 1e999 (as inf): refused here, as JSON has no
        # such numbers and an error that echoes them back could not be written as JSON.
        return json.loads(body, parse_float=_finite, parse_constant=_not_json)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the parser goes
        message = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise FalError(
            422, [{"loc": ["body"], "msg": f"Invalid JSON: {message}", "type": "json_invalid"}]
        ) from None


async def submit_request(request: Request, endpoint_id: str) -> RequestRecord:
    """Shared by queue submit and sync run: validate, create the record, enqueue."""
    endpoint = find_endpoint(request, endpoint_id)
    payload = await read_json(request) if request.method != "GET" else dict(request.query_params)
    options = SubmitOptions.from_headers(request.headers, request.query_params.get("fal_webhook"))
    record = await run_in_threadpool(
        service(request).submit, endpoint, payload, options, request.state.origin, key_owner(request)
    )
    request.state.request_id = record.request_id
    return record


@router.get("/{app:path}/requests/{request_id}/status")
async def get_status(request: Request, app: str, request_id: str, logs: str = "0") -> JSONResponse:
    request.state.request_id = request_id
    body = await run_in_threadpool(_status, request, app, request_id, logs.lower() in LOGS_ON)
    return JSONResponse(body, status_code=200 if body["status"] == "COMPLETED" else 202)


def _status(request: Request, app: str, request_id: str, with_logs: bool) -> dict[str, Any]:
    requests = service(request)
    record = requests.get(app, request_id, key_owner(request))
    position = requests.queue_position(record) if record.status == "IN_QUEUE" else None
    logs = requests.store.logs(request_id) if with_logs else None
    return status_body(queue_base(request), record, logs, position)


@router.get("/{app:path}/requests/{request_id}/status/stream")
async def stream_status(request: Request, app: str, request_id: str, logs: str = "0") -> StreamingResponse:
    request.state.request_id = request_id
    with_logs = logs.lower() in LOGS_ON
    await run_in_threadpool(service(request).get, app, request_id, key_owner(request))  # 404 before the stream
    return StreamingResponse(
        _status_events(request, app, request_id, with_logs),
        media_type="text/event-stream",
        headers={"cache-control": "no-store"},
    )


async def _status_events(request: Request, app: str, request_id: str, with_logs: bool) -> AsyncIterator[str]:
    """One event per change; each carries only log lines not sent before; ends after COMPLETED."""
    requests = service(request)
    poll_s = request.app.state.settings.poll_interval_s
    sent_logs = 0
    last: tuple[Any, ...] | None = None
    while True:
        record = await run_in_threadpool(requests.get, app, request_id, key_owner(request))
        new_logs = await run_in_threadpool(requests.store.logs, request_id, sent_logs) if with_logs else []
        position = (
            await run_in_threadpool(requests.queue_position, record) if record.status == "IN_QUEUE" else None
        )
        state = (record.status, position)
        if state != last or new_logs:
            sent_logs += len(new_logs)
            body = status_body(queue_base(request), record, new_logs if with_logs else None, position)
            yield f"data: {json.dumps(body)}\n\n"
            last = state
        if record.status == "COMPLETED" or await request.is_disconnected():
            return
        await asyncio.sleep(poll_s)


@router.get("/{app:path}/requests/{request_id}")
async def get_result(request: Request, app: str, request_id: str) -> JSONResponse:
    request.state.request_id = request_id
    return JSONResponse(await run_in_threadpool(service(request).result, app, request_id, key_owner(request)))


@router.put("/{app:path}/requests/{request_id}/cancel")
async def cancel(request: Request, app: str, request_id: str) -> JSONResponse:
    request.state.request_id = request_id
    status_code, outcome = await run_in_threadpool(service(request).cancel, app, request_id, key_owner(request))
    return JSONResponse({"status": outcome}, status_code=status_code)


@router.post("/{endpoint_id:path}")
async def submit(request: Request, endpoint_id: str) -> JSONResponse:
    record = await submit_request(request, endpoint_id)
    position = await run_in_threadpool(service(request).queue_position, record)
    return JSONResponse(submitted_body(queue_base(request), record, position))
