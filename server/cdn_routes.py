"""fal's CDN upload routes (``v3.fal.media``), the Python client's default upload path.

They take the bearer token from ``POST /storage/auth/token``. A multipart upload's
``access_url`` is both the file's URL and the base of its part URLs
(``{access_url}/multipart/{uploadId}/{n}``), so it always points at these routes, and a GET on it
serves the file (or redirects to the bucket).
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from openreel.storage import UploadNotFound
from server.errors import FalError
from server.files_routes import file_response
from server.uploads import (
    CompleteBody,
    complete_upload,
    content_type,
    default_file_name,
    expires_at,
    fal_errors,
    files_base,
    storage,
    store_body,
)

router = APIRouter(prefix="/cdn")


def require_token(request: Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not request.app.state.upload_signer.valid_token(token.strip()):
        raise FalError(401, "Missing or expired CDN token: get one from POST /storage/auth/token", "unauthorized")


NEEDS_TOKEN = [Depends(require_token)]


def _name_and_type(request: Request) -> tuple[str, str]:
    kind = content_type(request.headers.get("content-type"))
    return request.headers.get("x-fal-file-name") or default_file_name(kind), kind


@router.post("/files/upload", dependencies=NEEDS_TOKEN)
async def upload(request: Request) -> dict[str, str]:
    name, kind = _name_and_type(request)
    limit, expiry = request.app.state.settings.upload_max_bytes, expires_at(request)
    key, _ = await store_body(request, lambda body: storage(request).put_stream(body, name, kind, limit, expiry))
    return {"access_url": storage(request).url(key, files_base(request))}


@router.post("/files/upload/multipart", dependencies=NEEDS_TOKEN)
def create_multipart(request: Request) -> dict[str, str]:
    name, kind = _name_and_type(request)
    upload = storage(request).create_multipart(name, kind, expires_at(request))
    return {"access_url": f"{request.state.vhost_base}/files/{upload.key}", "uploadId": upload.upload_id}


@router.put("/files/{folder}/{name}/multipart/{upload_id}/{part_number}", dependencies=NEEDS_TOKEN)
async def put_part(request: Request, folder: str, name: str, upload_id: str, part_number: int) -> JSONResponse:
    limit = request.app.state.settings.upload_max_bytes

    def store(body: Iterator[bytes]) -> str:
        _check_upload(request, f"{folder}/{name}", upload_id)
        return storage(request).put_part(upload_id, part_number, body, limit)

    etag = await store_body(request, store)
    return JSONResponse({"partNumber": part_number, "etag": etag}, headers={"etag": etag})


@router.post("/files/{folder}/{name}/multipart/{upload_id}/complete", dependencies=NEEDS_TOKEN)
def complete(request: Request, folder: str, name: str, upload_id: str, body: CompleteBody) -> dict[str, object]:
    with fal_errors():
        _check_upload(request, f"{folder}/{name}", upload_id)
    key, size = complete_upload(request, upload_id, body)
    return {"access_url": f"{request.state.vhost_base}/files/{key}", "file_size": size}


@router.api_route("/files/{key:path}", methods=["GET", "HEAD"])
def get_file(request: Request, key: str) -> Response:
    return file_response(request, key)


def _check_upload(request: Request, key: str, upload_id: str) -> None:
    """An upload id is only valid under the access URL it was created with."""
    if storage(request).get_upload(upload_id).key != key:
        raise UploadNotFound()
