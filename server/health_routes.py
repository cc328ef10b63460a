"""``GET /health``: 200 only when every enabled endpoint has a ready worker; ``GET /live``: 200
while this process runs.

A worker that runs a job is ``busy`` and still counts as ready: a saturated deployment is
healthy, only slow. ``/live`` touches nothing outside the process, so a liveness probe never
restarts API processes because Redis or the workers are down: ``/health`` says that.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from openreel import worker_registry

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    workers = await run_in_threadpool(worker_registry.live_workers, request.app.state.redis)
    serving = worker_registry.SERVING
    ready = {endpoint for w in workers if w.get("state") in serving for endpoint in w.get("endpoints", [])}
    missing = sorted(set(request.app.state.endpoints) - ready)
    body = {"status": "ok" if not missing else "unavailable", "endpoints_without_worker": missing, "workers": workers}
    return JSONResponse(body, status_code=200 if not missing else 503)


@router.get("/live")
async def live() -> JSONResponse:
    return JSONResponse({"status": "alive"})
