"""``GET /.well-known/jwks.json``: the public keys that verify webhook signatures.

Served on the bare path (``rest.*`` Host header, or a JWKS URL pointed at this server) and
under ``/rest`` (path-prefix setups), where fal's verifiers look on ``rest.fal.ai``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/.well-known/jwks.json")
@router.get("/rest/.well-known/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.jwks, headers={"cache-control": "public, max-age=3600"})
