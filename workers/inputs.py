"""The one way a runner gets a request's input files (``video_url``, ``image_url``, LoRA ``path``).

A URL may name a file in our own storage (read from storage directly: it may not be reachable
over HTTP from the worker, and the SSRF guard would refuse a loopback API anyway), hold the
bytes itself (``data:``), or point anywhere on the web (fetched through the SSRF guard with
size, time and redirect limits). Every file lands in a cache under ``<data_dir>/inputs``
keyed by its SHA-256, with an index by URL, so a LoRA or reference video used by many
requests is fetched once. Whatever goes wrong is the client's input: an ``InputError``
(422 naming the field), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote_to_bytes

import httpx
from PIL import Image

from openreel.netguard import AddressRefused, guarded_client, is_web_url
from openreel.settings import Settings
from workers.context import InputError, Progress
from workers.decoding import Video, VideoLimits, read_image, read_video

Loc = Sequence[str | int]

CHUNK_BYTES = 1024 * 1024
# Web URLs may change content; a day bounds how long a changed file is served from the cache.
# Storage and data: URLs name their content for good and are not limited.
WEB_URL_CACHE_S = 24 * 3600


class InputStorage(Protocol):
    def key_from_url(self, url: str) -> str | None: ...

    def open(self, key: str) -> BinaryIO: ...


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


class InputCache:
    """``blobs/<sha256>`` holds contents; ``urls/<sha256 of a source>`` names the blob that a URL
    (or ``storage:<key>``) gave."""

    def __init__(self, root: Path) -> None:
        self.blobs, self.urls, self.partial = root / "blobs", root / "urls", root / "partial"
        for directory in (self.blobs, self.urls, self.partial):
            directory.mkdir(parents=True, exist_ok=True)

    def lookup(self, source: str, max_age_s: float | None) -> Path | None:
        index = self._index(source)
        try:
            if max_age_s is not None and index.stat().st_mtime < time.time() - max_age_s:
                return None
            blob = self.blobs / index.read_text().strip()
        except OSError:
            return None
        return blob if blob.is_file() else None

    def store(self, chunks: Iterable[bytes], source: str | None) -> Path:
        """Write ``chunks`` (a limit raised from inside them leaves nothing behind) and index it."""
        partial = self.partial / uuid.uuid4().hex
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
            blob = self.blobs / digest.hexdigest()
            os.replace(partial, blob)  # atomic: workers sharing the directory never see half a file
        finally:
            partial.unlink(missing_ok=True)
        if source is not None:
            index = self.partial / uuid.uuid4().hex
            index.write_text(blob.name)
            os.replace(index, self._index(source))
        return blob

    def _index(self, source: str) -> Path:
        return self.urls / hashlib.sha256(source.encode()).hexdigest()


class InputResolver:
    def __init__(self, settings: Settings, storage: InputStorage, progress: Progress) -> None:
        self.settings = settings
        self.storage = storage
        self.progress = progress
        self.cache = InputCache(settings.data_dir / "inputs")
        self._stage_open = False

    # --- what runners call ---------------------------------------------------------------
    def file(self, url: str, loc: Loc) -> Path:
        """A local copy of the file behind ``url`` (for example a LoRA's ``path``)."""
        if not self._stage_open:
            self.progress.stage("downloading inputs")
            self._stage_open = True
        field = ".".join(str(part) for part in loc)
        started = time.perf_counter()
        path, source = self._resolve(url, loc)
        size = path.stat().st_size
        self.progress.log(f"{field}: {_mib(size)} {source} in {time.perf_counter() - started:.2f} s")
        return path

    def video(self, url: str, loc: Loc) -> Video:
        settings = self.settings
        limits = VideoLimits(
            settings.input_video_max_seconds, settings.input_video_max_side, settings.input_video_max_frames
        )
        return read_video(self.file(url, loc), loc, limits)

    def image(self, url: str, loc: Loc) -> Image.Image:
        return read_image(self.file(url, loc), loc, self.settings.input_video_max_side)

    # --- sources ---------------------------------------------------------------------------
    def _resolve(self, url: str, loc: Loc) -> tuple[Path, str]:
        if url[:5].lower() == "data:":
            return self.cache.store([self._decode_data_uri(url, loc)], None), "decoded from a data URI"
        if not is_web_url(url):
            raise InputError(list(loc), "Unsupported URL: use http(s), a data: URI, or a file uploaded here")
        key = self.storage.key_from_url(url)
        if key is not None:
            # Indexed by key, not URL: once the object is deleted, its URL is just a web URL again.
            cached = self.cache.lookup(f"storage:{key}", None)
            return (cached, "from the input cache") if cached else (self._from_storage(key, loc), "read from storage")
        cached = self.cache.lookup(url, WEB_URL_CACHE_S)
        if cached is not None:
            return cached, "from the input cache"
        return self._download(url, loc), "downloaded"

    def _decode_data_uri(self, url: str, loc: Loc) -> bytes:
        header, comma, data = url[len("data:") :].partition(",")
        if not comma:
            raise InputError(list(loc), "Malformed data URI: no comma before the data")
        limit = self.settings.data_uri_max_bytes
        encoded_base64 = header.lower().endswith(";base64")
        # Refuse on a lower bound of the decoded size, before decoding a huge payload into memory.
        if (len(data) * 3 // 4 - 2 if encoded_base64 else len(data) // 3) > limit:
            raise InputError(list(loc), f"The data URI holds more than the {limit}-byte limit")
        try:
            content = base64.b64decode(data, validate=True) if encoded_base64 else unquote_to_bytes(data)
        except (binascii.Error, ValueError):
            raise InputError(list(loc), "Malformed data URI: the base64 data is invalid") from None
        if len(content) > limit:
            raise InputError(list(loc), f"The data URI holds more than the {limit}-byte limit")
        return content

    def _from_storage(self, key: str, loc: Loc) -> Path:
        try:
            with self.storage.open(key) as file:
                return self.cache.store(iter(lambda: file.read(CHUNK_BYTES), b""), f"storage:{key}")
        except FileNotFoundError:
            raise InputError(list(loc), "The file is no longer in storage") from None

    def _download(self, url: str, loc: Loc) -> Path:
        settings = self.settings
        timeout = httpx.Timeout(settings.fetch_read_timeout_s, connect=settings.fetch_connect_timeout_s)
        client = guarded_client(
            settings.fetch_allow, timeout=timeout, follow_redirects=True, max_redirects=settings.fetch_max_redirects
        )
        try:
            with client, client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InputError(list(loc), f"Downloading the file failed: HTTP {response.status_code}")
                return self.cache.store(self._capped(response, loc), url)
        except AddressRefused as refused:
            raise InputError(list(loc), f"The URL is not allowed: {refused}") from None
        except httpx.TooManyRedirects:
            message = f"Downloading the file failed: more than {settings.fetch_max_redirects} redirects"
            raise InputError(list(loc), message) from None
        except httpx.TimeoutException:
            raise InputError(list(loc), "Downloading the file failed: timed out") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise InputError(list(loc), f"Downloading the file failed: {type(error).__name__}: {error}") from None

    def _capped(self, response: httpx.Response, loc: Loc) -> Iterable[bytes]:
        limit = self.settings.fetch_max_bytes
        too_large = InputError(list(loc), f"The file is larger than the {limit}-byte limit")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        received = 0
        for chunk in response.iter_bytes(CHUNK_BYTES):
            received += len(chunk)
            if received > limit:
                raise too_large
            yield chunk
