"""``GET /metrics``: the deployment's Prometheus metrics (see openreel.metrics), behind the API key
when one is configured: they name hosts, endpoints and load. Prometheus sends the key with
``authorization: {credentials: <key>}`` in its scrape config (a Bearer token is accepted)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from openreel import metrics, queues
from openreel.webhooks import WEBHOOK_QUEUE
from server.auth import require_key

router = APIRouter(dependencies=[Depends(require_key)])


@router.get("/metrics", response_class=PlainTextResponse)  # so OpenAPI says text, not JSON
async def scrape(request: Request) -> Response:
    endpoints = request.app.state.endpoints
    families = sorted({endpoint.family for endpoint in endpoints.values()})
    queue_names = [queues.queue_name(f, p) for f in families for p in queues.PRIORITIES] + [WEBHOOK_QUEUE]
    body = await run_in_threadpool(metrics.render, request.app.state.redis, sorted(endpoints), queue_names)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
