"""Where output files go and the URLs they are served at.

The local backend keeps files under ``<data_dir>/files/<uuid>/<name>``; the API serves them at
``/files/<uuid>/<name>``. Keys are random UUIDs, so URLs cannot be guessed.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import quote

SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def safe_file_name(name: str) -> str:
    cleaned = "".join(ch if ch in SAFE_NAME_CHARS else "_" for ch in Path(name).name)
    return cleaned.strip(".") or "file"


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, source: Path, file_name: str) -> str:
        """Move ``source`` into storage; returns its key ``<uuid>/<name>``."""
        key = f"{uuid.uuid4().hex}/{safe_file_name(file_name)}"
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name and rename, so a half-written file is never served.
        partial = target.with_name(target.name + ".partial")
        shutil.move(source, partial)
        partial.rename(target)
        return key

    def url(self, key: str, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/files/{quote(key)}"

    def path_of(self, key: str) -> Path | None:
        """The file behind ``key``, or None when the key is malformed, escapes the root or is absent."""
        parts = key.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") or p != safe_file_name(p) for p in parts[1:]):
            return None
        try:
            uuid.UUID(hex=parts[0])
        except ValueError:
            return None
        path = self.root / parts[0] / parts[1]
        return path if path.is_file() else None
