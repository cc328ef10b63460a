"""The FastAPI application: fal's run and queue routes, files and health.

This process never imports torch: it validates with the torch-free schemas and hands work
to GPU workers through Redis.
"""

from __future__ import annotations

import redis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from openreel.settings import Settings
from openreel.signing import jwks, load_signing_key
from openreel.storage import make_storage
from pipelines import registry
from server import files_routes, health_routes, jwks_routes, queue_routes, run_routes
from server import cdn_routes, metrics_routes, storage_routes
from server import openapi_routes, playground_routes
from server.auth import KeyCheck
from server.errors import REQUEST_ID_HEADER, RequestIdMiddleware, install_error_handlers
from server.requests import RequestService
from server.upload_signing import UploadSigner
from server.vhosts import FalHostRouting


def create_app(settings: Settings, redis_url: str) -> FastAPI:
    app = FastAPI(title="openreel", summary="fal-compatible video generation API")
    connection = redis.Redis.from_url(redis_url, health_check_interval=30)
    app.state.settings = settings
    app.state.redis = connection
    app.state.endpoints = {e.id: e for e in registry.select(settings.endpoints)}
    app.state.requests = RequestService(settings, connection)
    app.state.storage = make_storage(settings, connection)
    app.state.upload_signer = UploadSigner(connection)
    app.state.key_check = KeyCheck(settings, connection)
    app.state.jwks = jwks(load_signing_key(settings, connection))  # made here on the first start

    install_error_handlers(app)
    # Generic {endpoint_id:path} routes: server/openapi.py documents them once per endpoint instead.
    for router in (queue_routes.router, run_routes.router):
        app.include_router(router, include_in_schema=False)
    for router in (files_routes.router, health_routes.router):
        app.include_router(router)
    for router in (storage_routes.keyed, storage_routes.presigned, cdn_routes.router):
        app.include_router(router)
    app.include_router(jwks_routes.router)
    app.include_router(metrics_routes.router)
    app.include_router(openapi_routes.router)
    app.include_router(playground_routes.router)
    app.mount("/playground", playground_routes.assets, name="playground")
    openapi_routes.install_server_document(app)

    # Starlette runs the last added middleware first: CORS, then request ids, then routing.
    app.add_middleware(FalHostRouting)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[REQUEST_ID_HEADER, "x-fal-request-timeout-type", "x-fal-error-type"],
    )
    return app
