"""Files under ``<root>/<uuid>/<name>``, served by the API at ``/files/<uuid>/<name>``.

Everything is written under ``<root>/.staging`` first and renamed into place, so a reader never
sees half a file. The declared content type sits next to the file, because an upload's name
(``1712345678.octet``, ``upload.bin``) often says nothing about it.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import redis

from openreel.storage.base import Storage, Upload, is_key

CONTENT_TYPE_FILE = ".content-type"  # a leading dot: no key can name it


class LocalStorage(Storage):
    def __init__(self, root: Path, connection: redis.Redis, upload_expiry_s: int) -> None:
        super().__init__(connection, upload_expiry_s)
        self.root = root
        self.staging = root / ".staging"
        self.multipart = root / ".multipart"

    def url(self, key: str, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/files/{quote(key)}"

    def path_of(self, key: str) -> Path | None:
        """The file behind ``key``, or None when the key is malformed or absent."""
        if not is_key(key):
            return None
        path = self.root / key
        return path if path.is_file() else None

    def content_type(self, key: str) -> str:
        try:
            return (self.root / key).with_name(CONTENT_TYPE_FILE).read_text().strip()
        except OSError:
            return mimetypes.guess_type(key)[0] or "application/octet-stream"

    def open(self, key: str) -> BinaryIO:
        path = self.path_of(key)
        if path is None:
            raise FileNotFoundError(key)
        return path.open("rb")

    def exists(self, key: str) -> bool:
        return self.path_of(key) is not None

    def _staging_file(self) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / uuid.uuid4().hex

    def _install(self, staged: Path, key: str, content_type: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.with_name(CONTENT_TYPE_FILE).write_text(content_type)
        os.replace(staged, target)

    def _write_file(self, key: str, path: Path, content_type: str, expires_at: float | None) -> None:
        staged = self._staging_file()
        try:
            shutil.copyfile(path, staged)
            self._install(staged, key, content_type)
        finally:
            staged.unlink(missing_ok=True)

    def _write_stream(self, key: str, chunks: Iterable[bytes], content_type: str, expires_at: float | None) -> None:
        staged = self._staging_file()
        try:
            with staged.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            self._install(staged, key, content_type)
        finally:
            staged.unlink(missing_ok=True)

    def _remove(self, key: str) -> None:
        shutil.rmtree(self.root / key.split("/")[0], ignore_errors=True)

    def _begin_multipart(self, key: str, content_type: str, expires_at: float | None) -> str:
        return ""

    def _write_part(self, upload: Upload, part_number: int, chunks: Iterable[bytes]) -> str:
        directory = self.multipart / upload.upload_id
        directory.mkdir(parents=True, exist_ok=True)
        staged = self._staging_file()
        try:
            with staged.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            os.replace(staged, directory / str(part_number))
        finally:
            staged.unlink(missing_ok=True)
        # Clients only hand the ETag back on completion, to name the version of the part they
        # mean; a random one does that, where an MD5 like S3's would double the CPU time per part.
        return f'"{uuid.uuid4().hex}"'

    def _join_parts(self, upload: Upload, parts: list[tuple[int, str]]) -> None:
        staged = self._staging_file()
        try:
            with staged.open("wb") as out:
                for number, _ in parts:
                    with (self.multipart / upload.upload_id / str(number)).open("rb") as part:
                        shutil.copyfileobj(part, out, 1024 * 1024)
            self._install(staged, upload.key, upload.content_type)
        finally:
            staged.unlink(missing_ok=True)
        self._drop_parts(upload)

    def _drop_parts(self, upload: Upload) -> None:
        shutil.rmtree(self.multipart / upload.upload_id, ignore_errors=True)

    def _sweep_backend(self, now: float) -> int:
        """Staged files older than an upload may take were left by a writer that died."""
        removed = 0
        if self.staging.is_dir():
            for path in self.staging.iterdir():
                try:
                    if path.stat().st_mtime < now - self.upload_expiry_s:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed
