"""``/openapi.json`` (the whole server) and fal's per-endpoint queue document.

fal's endpoint pages link ``https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=...``; the
same path answers here, and so does the shorter ``/openapi/queue/openapi.json``. Both are public,
like fal's and like ``/openapi.json``.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from server.openapi import queue_document, server_document
from server.queue_routes import find_endpoint

router = APIRouter(tags=["openapi"])


@router.get(
    "/openapi/queue/openapi.json",
    summary="fal's OpenAPI document of one endpoint's queue routes",
    responses={404: {"description": "The endpoint is not served here."}},
)
@router.get("/api/openapi/queue/openapi.json", include_in_schema=False)
def queue_openapi(
    request: Request, endpoint_id: str = Query(..., description="e.g. fal-ai/cogvideox-5b")
) -> JSONResponse:
    endpoint = find_endpoint(request, endpoint_id)
    origin = request.state.origin
    playground = f"{origin}/?endpoint={quote(endpoint.id, safe='/')}"
    return JSONResponse(queue_document(endpoint, f"{origin}/queue", playground))


def install_server_document(app: FastAPI) -> None:
    """Serve ``server_document`` at FastAPI's ``/openapi.json`` (and so in ``/docs``), built once."""

    def document() -> dict[str, object]:
        if app.openapi_schema is None:
            app.openapi_schema = server_document(app, app.state.endpoints.values())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
