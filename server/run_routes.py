"""fal's synchronous run route: the same queue and workers, with the HTTP call held open.

Going through the queue keeps one execution path (priorities, retries, cancellation) for
both styles; a client that hangs up cancels its request rather than leaving GPU work behind.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from server.auth import key_owner, require_key
from server.queue_routes import service, submit_request

router = APIRouter(prefix="/run", dependencies=[Depends(require_key)])


@router.api_route("/{endpoint_id:path}", methods=["POST", "GET"])
async def run(request: Request, endpoint_id: str) -> JSONResponse:
    record = await submit_request(request, endpoint_id)
    requests = service(request)
    owner = key_owner(request)
    poll_s = request.app.state.settings.poll_interval_s
    while True:
        current = await run_in_threadpool(requests.get, record.app, record.request_id, owner)
        if current.status == "COMPLETED":
            return JSONResponse(await run_in_threadpool(requests.result, record.app, record.request_id, owner))
        if await request.is_disconnected():
            await run_in_threadpool(requests.cancel, record.app, record.request_id, owner)
            return JSONResponse({"detail": "Client disconnected"}, status_code=499)
        await asyncio.sleep(poll_s)
