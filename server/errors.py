"""fal's error shapes, and the ``x-fal-request-id`` header on every response.

The Python client retries 5xx answers that lack ``x-fal-request-id``, and the JS client reads
the id from that header, so every response carries it, errors included.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openreel.logging_setup import request_scope

log = logging.getLogger("openreel.api")
access_log = logging.getLogger("openreel.access")

REQUEST_ID_HEADER = "x-fal-request-id"
# Status, result and cancel calls take the id from their URL, which can hold anything: only an
# id a header can carry (visible ASCII) is echoed; any other gets a fresh one.
HEADER_SAFE_ID = re.compile(r"[!-~]{1,200}")


class FalError(Exception):
    """An error answered in fal's shape: ``{"detail": ..., "error_type"?: ...}``."""

    def __init__(
        self,
        status_code: int,
        detail: Any,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code, self.detail, self.error_type = status_code, detail, error_type
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"detail": self.detail}
        headers = dict(self.headers)
        if self.error_type:
            body["error_type"] = self.error_type
            headers["x-fal-error-type"] = self.error_type
        return JSONResponse(body, status_code=self.status_code, headers=headers)


def validation_detail(error: ValidationError, prefix: tuple[str | int, ...] = ("body",)) -> list[dict[str, Any]]:
    """pydantic errors as FastAPI words them: loc, msg, type, input and a JSON-safe ctx."""
    detail = []
    for item in error.errors(include_url=False):
        entry: dict[str, Any] = {"loc": [*prefix, *item["loc"]], "msg": item["msg"], "type": item["type"]}
        if "input" in item:
            entry["input"] = item["input"]
        if "ctx" in item:
            entry["ctx"] = {key: _json_value(value) for key, value in item["ctx"].items()}
        detail.append(entry)
    return detail


def _json_value(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


class RequestIdMiddleware:
    """Routes that know the fal request id put it in ``request.state``; it goes into the response
    header and, through the logging scope, onto every log line of the call, this one's access
    line included. Calls about no request get a fresh id, logged with them as well."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    known = state.get("request_id")
                    state["request_id"] = known if known and HEADER_SAFE_ID.fullmatch(known) else str(uuid.uuid4())
                    headers[REQUEST_ID_HEADER] = state["request_id"]
            await send(message)

        with request_scope(state):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                # Reads (status polls, health probes) are most calls; they show at DEBUG only.
                level = logging.DEBUG if scope["method"] in ("GET", "HEAD", "OPTIONS") else logging.INFO
                elapsed_ms = (time.perf_counter() - started) * 1000
                access_log.log(level, "%s %s %s %.1f ms", scope["method"], scope["path"], status or "-", elapsed_ms)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FalError)
    async def _fal_error(request: Request, exc: FalError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(exc.errors(), custom_encoder={Exception: str})}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("queue backend error: %s", exc)
        return FalError(503, "The queue backend is unavailable; retry shortly.", "runner_connection_error").response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return FalError(500, "Internal server error", "internal_error").response()
