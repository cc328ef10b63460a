"""Which fal "virtual host" (run, queue, rest, cdn) a request is for, whatever way it arrived.

The fal clients reach one server in several ways (see the README): a path prefix
(``FAL_QUEUE_RUN_HOST=host:port/queue``), a ``Host`` header such as ``queue.fal.run`` (the
HTTPS_PROXY recipe), or the JS client's proxy mode, which posts everything to
``/api/fal/proxy`` with the original URL in ``x-fal-target-url``. This middleware rewrites
all of them to one canonical path (``/queue/...``, ``/run/...``) and records the public base
URL the client used, so the status and file URLs handed back point where it can reach.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

PROXY_PATH = "/api/fal/proxy"
VHOST_PREFIXES = ("queue", "run", "rest", "cdn")
# Paths the server itself owns: never rewritten by Host header.
OWN_PREFIXES = tuple(f"/{p}/" for p in VHOST_PREFIXES) + (
    "/files/", "/health", "/live", "/metrics", "/docs", "/openapi.json", "/.well-known/"
)
# Also the server's own on every host: fal's per-endpoint API documents and the browser
# playground, whose page is "/" (compared whole: every path starts with it).
PAGE_PREFIXES = ("/openapi/", "/api/openapi/", "/playground/")


def vhost_of(hostname: str) -> str:
    if hostname.startswith("queue."):
        return "queue"
    if hostname.startswith("rest."):
        return "rest"
    if hostname.startswith("v3."):
        return "cdn"
    return "run"


class FalHostRouting:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "localhost")
        origin = f"{scope.get('scheme', 'http')}://{host}"
        path: str = scope["path"]
        query: bytes = scope.get("query_string", b"")

        if path.rstrip("/") == PROXY_PATH:
            target = headers.get("x-fal-target-url")
            if not target:
                await _reject(send, 400, "Missing the x-fal-target-url header")
                return
            parts = urlsplit(target)
            vhost = vhost_of(parts.hostname or "")
            path, query, base = f"/{vhost}{parts.path or '/'}", parts.query.encode(), f"{origin}/{vhost}"
        elif (path == "/" or path.startswith(OWN_PREFIXES + PAGE_PREFIXES)) and not _cdn_file(host, path):
            first = path.split("/")[1]
            base = f"{origin}/{first}" if first in VHOST_PREFIXES else origin
        else:
            vhost = vhost_of(host.split(":")[0])
            path, base = f"/{vhost}{path}", origin

        state = scope.setdefault("state", {})
        state["vhost_base"], state["origin"] = base, origin
        scope = {**scope, "path": path, "raw_path": path.encode(), "query_string": query}
        await self.app(scope, receive, send)


def _cdn_file(host: str, path: str) -> bool:
    """CDN file URLs (``v3.*/files/...``) also carry the multipart routes, so that host owns /files/."""
    return path.startswith("/files/") and vhost_of(host.split(":")[0]) == "cdn"


async def _reject(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
