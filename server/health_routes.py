"""``GET /health``: 200 only when every enabled endpoint has at least one ready worker."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from openreel import worker_registry

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    workers = await run_in_threadpool(worker_registry.live_workers, request.app.state.redis)
    ready = {endpoint for w in workers if w.get("state") == "ready" for endpoint in w.get("endpoints", [])}
    missing = sorted(set(request.app.state.endpoints) - ready)
    body = {"status": "ok" if not missing else "unavailable", "endpoints_without_worker": missing, "workers": workers}
    return JSONResponse(body, status_code=200 if not missing else 503)
