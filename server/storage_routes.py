"""fal's REST storage routes (``rest.fal.ai/storage/...``): presigned uploads and CDN tokens.

``initiate`` hands out an upload URL signed with the deployment's secret: the JS client PUTs
to it with no credentials, the Python client with its API key, which is then simply unused.
Multipart uploads (JS, over 90 MiB) PUT parts to ``{upload_url path}/{n}{query}`` and read
``{partNumber, etag}`` from the JSON answer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from openreel.storage import new_key
from server.auth import require_key
from server.errors import FalError
from server.upload_signing import UploadSigner
from server.uploads import (
    CompleteBody,
    complete_upload,
    content_type,
    default_file_name,
    expires_at,
    files_base,
    lifetime_s,
    storage,
    store_body,
)

keyed = APIRouter(prefix="/rest/storage", dependencies=[Depends(require_key)])
# Authorised by the signature in the URL, not by a key.
presigned = APIRouter(prefix="/rest/storage/upload")


class InitiateBody(BaseModel):
    file_name: str | None = Field(None, max_length=1024)
    content_type: str | None = Field(None, max_length=255)


def signer(request: Request) -> UploadSigner:
    return request.app.state.upload_signer


def url_expiry(request: Request) -> int:
    return int(time.time()) + request.app.state.settings.upload_url_expiry_s


def check_signature(request: Request, signature: str, expires: int, *fields: object) -> None:
    if not signer(request).valid(signature, expires, *fields):
        raise FalError(403, "The upload URL is invalid or has expired")


@keyed.post("/upload/initiate")
def initiate(request: Request, body: InitiateBody | None = None) -> dict[str, str]:
    body = body or InitiateBody()
    kind = content_type(body.content_type)
    key = new_key(body.file_name or default_file_name(kind))
    lifetime = lifetime_s(request) or 0  # signed into the URL: the PUT cannot change it
    expires = url_expiry(request)
    query = {"expires": expires, "lifetime": lifetime, "signature": signer(request).sign(expires, "put", key, lifetime)}
    return {
        "upload_url": f"{request.state.vhost_base}/storage/upload/object/{key}?{urlencode(query)}",
        "file_url": storage(request).url(key, files_base(request)),
    }


@presigned.put("/object/{folder}/{name}")
async def put_object(
    request: Request, folder: str, name: str, expires: int, signature: str, lifetime: int = 0
) -> dict[str, object]:
    key = f"{folder}/{name}"
    check_signature(request, signature, expires, "put", key, lifetime)
    limit = request.app.state.settings.upload_max_bytes
    kind = content_type(request.headers.get("content-type"))
    expiry = time.time() + lifetime if lifetime else None
    size = await store_body(request, lambda body: storage(request).write_stream(key, body, kind, limit, expiry))
    return {"file_url": storage(request).url(key, files_base(request)), "file_size": size}


@keyed.post("/upload/initiate-multipart")
def initiate_multipart(request: Request, body: InitiateBody | None = None) -> dict[str, str]:
    body = body or InitiateBody()
    kind = content_type(body.content_type)
    upload = storage(request).create_multipart(body.file_name or default_file_name(kind), kind, expires_at(request))
    expires = url_expiry(request)
    query = {"expires": expires, "signature": signer(request).sign(expires, "multipart", upload.upload_id)}
    return {
        "upload_url": f"{request.state.vhost_base}/storage/upload/multipart/{upload.upload_id}?{urlencode(query)}",
        "file_url": storage(request).url(upload.key, files_base(request)),
    }


@presigned.put("/multipart/{upload_id}/{part_number}")
async def put_part(
    request: Request, upload_id: str, part_number: int, expires: int, signature: str
) -> JSONResponse:
    check_signature(request, signature, expires, "multipart", upload_id)
    limit = request.app.state.settings.upload_max_bytes
    etag = await store_body(request, lambda body: storage(request).put_part(upload_id, part_number, body, limit))
    return JSONResponse({"partNumber": part_number, "etag": etag}, headers={"etag": etag})


@presigned.post("/multipart/{upload_id}/complete")
def complete(request: Request, upload_id: str, expires: int, signature: str, body: CompleteBody) -> dict[str, object]:
    check_signature(request, signature, expires, "multipart", upload_id)
    key, size = complete_upload(request, upload_id, body)
    return {"file_url": storage(request).url(key, files_base(request)), "file_size": size}


@keyed.post("/auth/token")
def cdn_token(request: Request) -> dict[str, str]:
    """A short-lived bearer token for the CDN routes (the Python client's default upload path)."""
    expires = url_expiry(request)
    return {
        "token": signer(request).token(expires),
        "token_type": "Bearer",
        "base_url": cdn_base(request),
        # fromisoformat() in the Python client needs an explicit offset to compare with aware times.
        "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
    }


def cdn_base(request: Request) -> str:
    """Where this client reaches the CDN routes. Behind a path prefix: ``/cdn`` beside ``/rest``.
    By Host header: the ``v3.`` sibling of the ``rest.`` (or ``rest.alpha.``) host, which for fal's
    own names is ``v3.fal.media``, the host the Python client hard-codes and TLS certificates name."""
    base: str = request.state.vhost_base
    if base.endswith("/rest"):
        return base.removesuffix("/rest") + "/cdn"
    scheme, _, host = base.partition("://")
    domain = host.removeprefix("rest.").removeprefix("alpha.")
    if domain.split(":")[0] == "fal.ai":
        domain = domain.replace("fal.ai", "fal.media", 1)
    return f"{scheme}://v3.{domain}"
