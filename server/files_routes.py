"""Public GET of stored output files (local storage backend)."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from server.errors import FalError

router = APIRouter()


@router.get("/files/{key:path}")
async def get_file(request: Request, key: str) -> FileResponse:
    path = request.app.state.storage.path_of(key)
    if path is None:
        raise FalError(404, "File not found")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type)
