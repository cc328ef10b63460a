"""The browser playground: static HTML, JS and CSS from ``server/playground``, no build step.

``/`` needs no key: the page holds no data; the API calls it makes carry the key the user
typed into it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

PLAYGROUND_DIR = Path(__file__).with_name("playground")

router = APIRouter(include_in_schema=False)
# Mounted by the app at /playground: StaticFiles refuses paths that climb out of the directory.
assets = StaticFiles(directory=PLAYGROUND_DIR)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(PLAYGROUND_DIR / "index.html", headers={"cache-control": "no-cache"})
