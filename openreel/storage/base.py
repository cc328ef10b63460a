"""The storage interface both backends share, and the Redis bookkeeping that makes them alike.

Backends only move bytes. Expiry times and unfinished multipart uploads are kept here, in Redis
(which API, workers and the sweeper share), so one sweep deletes expired objects and abandoned
uploads of either backend without listing a directory or a bucket.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import redis

EXPIRY_KEY = "openreel:storage:expiry"  # sorted set: object key -> unix time it expires
UPLOADS_KEY = "openreel:storage:uploads"  # sorted set: upload id -> unix time it is abandoned
UPLOAD_PREFIX = "openreel:storage:upload:"  # hash per unfinished upload, and "<...>:parts"
# An upload's state outlives its deadline by this much, so a late sweep can still abort it.
UPLOAD_STATE_GRACE_S = 24 * 3600
READ_SIZE = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit, kept for both backends so clients see one behaviour

SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_KEY = re.compile(r"[0-9a-f]{32}/[A-Za-z0-9._-]{1,255}")
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")

Source = Iterable[bytes] | BinaryIO


class StorageError(Exception):
    """Input the storage refuses; the message is meant for the client."""


class TooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than the upload limit of {limit} bytes")
        self.limit = limit


class UploadNotFound(StorageError):
    def __init__(self) -> None:
        super().__init__("Unknown or expired upload")


def safe_file_name(name: str) -> str:
    cleaned = "".join(ch if ch in SAFE_NAME_CHARS else "_" for ch in Path(name).name)
    return cleaned[:255].strip(".") or "file"


def new_key(file_name: str) -> str:
    return f"{uuid.uuid4().hex}/{safe_file_name(file_name)}"


def is_key(key: str) -> bool:
    """True for keys this storage makes; anything else (``..``, absolute paths) never reaches a backend."""
    return bool(_KEY.fullmatch(key)) and key.split("/")[1] == safe_file_name(key.split("/")[1])


class Limited:
    """The chunks of a source, stopping with ``TooLarge`` past ``max_bytes``; counts what passed."""

    def __init__(self, source: Source, max_bytes: int) -> None:
        self.source, self.max_bytes, self.size = source, max_bytes, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in _chunks(self.source):
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise TooLarge(self.max_bytes)
            yield chunk


def _chunks(source: Source) -> Iterator[bytes]:
    if hasattr(source, "read"):
        while chunk := source.read(READ_SIZE):
            yield chunk
    else:
        yield from source


@dataclass(frozen=True)
class Upload:
    """An unfinished multipart upload: the key it will complete to and what the object gets."""

    upload_id: str
    key: str
    content_type: str
    expires_at: float | None
    backend_id: str = ""  # the backend's own upload handle (S3's UploadId)


class Storage(ABC):
    def __init__(self, connection: redis.Redis, upload_expiry_s: int) -> None:
        self.redis = connection
        self.upload_expiry_s = upload_expiry_s

    # --- what a backend implements -------------------------------------------------------
    @abstractmethod
    def url(self, key: str, base_url: str) -> str:
        """Where clients download ``key``; ``base_url`` is the API's public base (local backend)."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """The object's bytes; FileNotFoundError when it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def _write_file(self, key: str, path: Path, content_type: str, expires_at: float | None) -> None: ...

    @abstractmethod
    def _write_stream(self, key: str, chunks: Iterable[bytes], content_type: str, expires_at: float | None) -> None:
        """Store ``chunks`` under ``key``; nothing may be visible under ``key`` if they raise."""

    @abstractmethod
    def _remove(self, key: str) -> None: ...

    @abstractmethod
    def _begin_multipart(self, key: str, content_type: str, expires_at: float | None) -> str:
        """Start an upload; returns the backend's handle for it."""

    @abstractmethod
    def _write_part(self, upload: Upload, part_number: int, chunks: Iterable[bytes]) -> str:
        """Store one part; returns its quoted ETag."""

    @abstractmethod
    def _join_parts(self, upload: Upload, parts: list[tuple[int, str]]) -> None:
        """Assemble the listed parts (ascending, with their stored ETags) into ``upload.key``."""

    @abstractmethod
    def _drop_parts(self, upload: Upload) -> None: ...

    def _sweep_backend(self, now: float) -> int:
        """Backend leftovers that no Redis entry describes (e.g. files of a crashed writer)."""
        return 0

    # --- single objects ------------------------------------------------------------------
    def put_file(self, path: Path, file_name: str, content_type: str, expires_at: float | None = None) -> str:
        """Store a copy of the file at ``path``; returns its new key."""
        key = new_key(file_name)
        self._write_file(key, path, content_type, expires_at)
        self._track(key, expires_at)
        return key

    def put_stream(
        self, source: Source, file_name: str, content_type: str, max_bytes: int, expires_at: float | None = None
    ) -> tuple[str, int]:
        """Store chunks (an iterable of bytes or a binary file) under a new key; returns (key, size).
        Raises TooLarge past ``max_bytes``, and then nothing is stored."""
        key = new_key(file_name)
        return key, self.write_stream(key, source, content_type, max_bytes, expires_at)

    def write_stream(
        self, key: str, source: Source, content_type: str, max_bytes: int, expires_at: float | None = None
    ) -> int:
        """``put_stream`` under a key reserved earlier with ``new_key`` (a presigned upload URL names it)."""
        if not is_key(key):
            raise StorageError("Invalid key")
        chunks = Limited(source, max_bytes)
        self._write_stream(key, chunks, content_type, expires_at)
        self._track(key, expires_at)
        return chunks.size

    def delete(self, key: str) -> None:
        if is_key(key):
            self._remove(key)
        self.redis.zrem(EXPIRY_KEY, key)

    def key_from_url(self, url: str) -> str | None:
        """The key behind a URL this storage handed out, or None.

        File URLs are handed out under whatever host a client reached the API by (and S3 URLs
        under the bucket's), so the host cannot tell ours apart; the path ending in
        ``<uuid hex>/<name>`` and the object existing here can, since keys are random.
        """
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        segments = unquote(parts.path).split("/")
        if parts.scheme not in ("http", "https") or len(segments) < 3:
            return None
        key = "/".join(segments[-2:])
        return key if is_key(key) and self.exists(key) else None

    def _track(self, key: str, expires_at: float | None) -> None:
        if expires_at is not None:
            self.redis.zadd(EXPIRY_KEY, {key: expires_at})

    # --- multipart uploads ---------------------------------------------------------------
    def create_multipart(self, file_name: str, content_type: str, expires_at: float | None = None) -> Upload:
        key = new_key(file_name)
        backend_id = self._begin_multipart(key, content_type, expires_at)
        upload = Upload(uuid.uuid4().hex, key, content_type, expires_at, backend_id)
        deadline = time.time() + self.upload_expiry_s
        state = {name: json.dumps(value) for name, value in asdict(upload).items()}
        with self.redis.pipeline() as pipe:
            pipe.hset(_state_key(upload.upload_id), mapping=state)
            pipe.expireat(_state_key(upload.upload_id), int(deadline + UPLOAD_STATE_GRACE_S))
            pipe.zadd(UPLOADS_KEY, {upload.upload_id: deadline})
            pipe.execute()
        return upload

    def get_upload(self, upload_id: str) -> Upload:
        """The unfinished upload; UploadNotFound when unknown, completed or past its deadline."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound()
        deadline = self.redis.zscore(UPLOADS_KEY, upload_id)
        upload = self._load_upload(upload_id)
        if upload is None or deadline is None or deadline < time.time():
            raise UploadNotFound()
        return upload

    def put_part(self, upload_id: str, part_number: int, source: Source, max_bytes: int) -> str:
        """Store part ``part_number`` (1-based; a repeat replaces it); returns its quoted ETag.
        ``max_bytes`` bounds the whole upload, so the part may only use what other parts left."""
        upload = self.get_upload(upload_id)
        if not 1 <= part_number <= MAX_PARTS:
            raise StorageError(f"Part numbers run from 1 to {MAX_PARTS}")
        others = sum(p["size"] for n, p in self._parts(upload_id).items() if n != part_number)
        chunks = Limited(source, max_bytes - others)
        try:
            etag = self._write_part(upload, part_number, chunks)
        except TooLarge:
            raise TooLarge(max_bytes) from None  # the limit the client knows, not what was left of it
        part = json.dumps({"etag": etag, "size": chunks.size})
        with self.redis.pipeline() as pipe:
            pipe.hset(_parts_key(upload_id), str(part_number), part)
            pipe.expireat(_parts_key(upload_id), int(time.time() + self.upload_expiry_s + UPLOAD_STATE_GRACE_S))
            pipe.execute()
        return etag

    def complete_multipart(self, upload_id: str, parts: list[tuple[int, str]], max_bytes: int) -> tuple[str, int]:
        """Join the listed (part number, ETag) pairs, in part-number order; returns (key, size)."""
        upload = self.get_upload(upload_id)
        stored = self._parts(upload_id)
        numbers = sorted(number for number, _ in parts)
        if not numbers or len(set(numbers)) != len(numbers):
            raise StorageError("List each uploaded part once")
        for number, etag in parts:
            if number not in stored or stored[number]["etag"].strip('"') != etag.strip('"'):
                raise StorageError(f"Part {number} was not uploaded, or its etag differs")
        size = sum(stored[number]["size"] for number in numbers)
        if size > max_bytes:
            raise TooLarge(max_bytes)
        self._join_parts(upload, [(number, stored[number]["etag"]) for number in numbers])
        self._track(upload.key, upload.expires_at)
        self._forget_upload(upload_id)
        return upload.key, size

    def abort_multipart(self, upload_id: str) -> None:
        upload = self._load_upload(upload_id)
        if upload is not None:
            self._drop_parts(upload)
        self._forget_upload(upload_id)

    def _load_upload(self, upload_id: str) -> Upload | None:
        state = self.redis.hgetall(_state_key(upload_id))
        if not state:
            return None
        return Upload(**{name.decode(): json.loads(value) for name, value in state.items()})

    def _parts(self, upload_id: str) -> dict[int, dict]:
        return {int(n): json.loads(part) for n, part in self.redis.hgetall(_parts_key(upload_id)).items()}

    def _forget_upload(self, upload_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.delete(_state_key(upload_id), _parts_key(upload_id))
            pipe.zrem(UPLOADS_KEY, upload_id)
            pipe.execute()

    # --- expiry --------------------------------------------------------------------------
    def sweep_expired(self, now: float | None = None) -> int:
        """Delete objects past their expiry and abort uploads past their deadline; returns how
        many of both went. Safe to run from several processes at once."""
        now = time.time() if now is None else now
        removed = 0
        for key in self.redis.zrangebyscore(EXPIRY_KEY, "-inf", now):
            self.delete(key.decode())
            removed += 1
        for upload_id in self.redis.zrangebyscore(UPLOADS_KEY, "-inf", now):
            self.abort_multipart(upload_id.decode())
            removed += 1
        return removed + self._sweep_backend(now)


def _state_key(upload_id: str) -> str:
    return f"{UPLOAD_PREFIX}{upload_id}"


def _parts_key(upload_id: str) -> str:
    return f"{UPLOAD_PREFIX}{upload_id}:parts"
