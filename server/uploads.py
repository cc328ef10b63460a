"""What the rest and CDN upload routes share: request bodies streamed into storage, errors, names."""

from __future__ import annotations

import mimetypes
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio.from_thread
from fastapi import Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from openreel.storage import Storage, StorageError, TooLarge, UploadNotFound
from server.errors import FalError
from server.requests import LIFECYCLE_HEADER, UPLOAD_LIFECYCLE_HEADER, object_lifetime_s

T = TypeVar("T")

# Blocks handed from the event loop to the storage thread: one hop per MiB, not per socket read.
BLOCK_BYTES = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_CONTENT_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(\s*;.*)?")


class Part(BaseModel):
    part_number: int = Field(..., alias="partNumber")
    etag: str = Field(..., max_length=256)


class CompleteBody(BaseModel):
    """What both clients post to finish a multipart upload."""

    parts: list[Part] = Field(..., max_length=10_000)


def storage(request: Request) -> Storage:
    return request.app.state.storage


def files_base(request: Request) -> str:
    """The base of file URLs for this client (``OPENREEL_PUBLIC_URL`` or the origin it used)."""
    return request.app.state.settings.public_url or request.state.origin


def lifetime_s(request: Request) -> int | None:
    """Seconds an upload is kept, from its lifecycle headers (fal's clients send either name)."""
    return object_lifetime_s(request.headers, (LIFECYCLE_HEADER, UPLOAD_LIFECYCLE_HEADER))


def expires_at(request: Request) -> float | None:
    lifetime = lifetime_s(request)
    return time.time() + lifetime if lifetime else None


def content_type(declared: str | None) -> str:
    if declared and len(declared) <= 255 and _CONTENT_TYPE.fullmatch(declared.strip()):
        return declared.strip()
    return DEFAULT_CONTENT_TYPE


def default_file_name(content_type: str) -> str:
    """For uploads that send no name: ``upload`` with the content type's usual extension."""
    return "upload" + (mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin")


@contextmanager
def fal_errors() -> Iterator[None]:
    """Storage refusals as fal's error answers."""
    try:
        yield
    except TooLarge as error:
        raise FalError(413, str(error)) from None
    except UploadNotFound as error:
        raise FalError(404, str(error)) from None
    except StorageError as error:
        raise FalError(400, str(error)) from None
    except ClientDisconnect:
        raise FalError(400, "The upload was interrupted") from None


async def store_body(request: Request, store: Callable[[Iterator[bytes]], T]) -> T:
    """Run ``store`` in a worker thread on the body as it arrives, never holding all of it."""
    limit = request.app.state.settings.upload_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise FalError(413, str(TooLarge(limit)))
    with fal_errors():
        return await run_in_threadpool(store, _body_blocks(request))


def _body_blocks(request: Request) -> Iterator[bytes]:
    """The body as a blocking iterator, for code in a worker thread started by the event loop."""
    chunks = request.stream().__aiter__()

    async def next_block() -> bytes:
        block = bytearray()
        while len(block) < BLOCK_BYTES:
            try:
                block += await chunks.__anext__()
            except StopAsyncIteration:
                break
        return bytes(block)

    while block := anyio.from_thread.run(next_block):
        yield block


def complete_upload(request: Request, upload_id: str, body: CompleteBody) -> tuple[str, int]:
    """Join the parts the client lists; returns (key, size)."""
    parts = [(part.part_number, part.etag) for part in body.parts]
    with fal_errors():
        return storage(request).complete_multipart(upload_id, parts, request.app.state.settings.upload_max_bytes)
