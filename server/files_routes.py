"""Public GET of stored files: from disk (local backend) or a redirect to the bucket (S3)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from openreel.storage import LocalStorage
from openreel.storage.base import is_key
from server.errors import FalError
from server.uploads import files_base

router = APIRouter()


class StoredFileResponse(FileResponse):
    """Starlette's FileResponse already answers ranges as browsers seeking in an MP4 need (206,
    open-ended and suffix ranges, several ranges, 416 past the end); only its refusals change: a
    range unit other than bytes is ignored, as RFC 9110 requires, and a bad or unsatisfiable
    byte range is a 416 in fal's error shape instead of plain text."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        requested = Headers(scope=scope).get("range")
        if requested is not None and self.stat_result is not None:
            size = self.stat_result.st_size
            try:
                self._parse_range_header(requested, size)
            except (MalformedRangeHeader, RangeNotSatisfiable):
                if requested.partition("=")[0].strip().lower() == "bytes":
                    refusal = FalError(416, "Range not satisfiable", headers={"content-range": f"bytes */{size}"})
                    await refusal.response()(scope, receive, send)
                    return
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        await super().__call__(scope, receive, send)


@router.api_route("/files/{key:path}", methods=["GET", "HEAD"])
def get_file(request: Request, key: str) -> Response:
    return file_response(request, key)


def file_response(request: Request, key: str) -> Response:
    storage = request.app.state.storage
    if not isinstance(storage, LocalStorage):
        if not is_key(key):
            raise FalError(404, "File not found")
        return RedirectResponse(storage.url(key, files_base(request)), status_code=307)
    path = storage.path_of(key)
    try:
        stat = path.stat() if path is not None else None
    except FileNotFoundError:  # deleted by a sweep since path_of looked
        stat = None
    if path is None or stat is None:
        raise FalError(404, "File not found")
    return StoredFileResponse(
        path,
        stat_result=stat,
        media_type=storage.content_type(key),
        # Uploads declare their own type: browsers must not second-guess it into something runnable.
        headers={"x-content-type-options": "nosniff"},
    )
