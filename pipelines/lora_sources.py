"""Where a LoRA ``path`` points: a URL, a Hugging Face repo, or a file this server allows.

* ``http(s)://`` and ``data:`` URLs go through the request's input resolver (SSRF guard, size
  limits, the SHA-256 input cache).
* ``owner/name`` is a Hugging Face repo, taken from the local Hugging Face cache. Fetching it at
  request time would let any caller make the worker download gigabytes from the hub, so that
  needs ``OPENREEL_LORA_HUB_DOWNLOAD``.
* An absolute path must lie under one of ``OPENREEL_LORA_DIRS``; otherwise a caller could make
  the worker read any file it can.

Whatever cannot be resolved is the caller's input: an ``InputError`` naming the field.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from workers.context import InputError

Loc = Sequence[str | int]

# What diffusers' save_lora_weights writes and its loaders look for first.
WEIGHT_NAME = "pytorch_lora_weights.safetensors"
HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
URL_PREFIXES = ("http://", "https://", "data:")


class FileInputs(Protocol):
    def file(self, url: str, loc: Loc) -> Path: ...


@dataclass(frozen=True)
class LoraFile:
    path: Path
    sha256: str
    source: str
    """How it was found, for the request's logs."""


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Keyed by size and mtime too, so a file replaced in place is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


class LoraSources:
    def __init__(self, allowed_dirs: Sequence[str | Path], hub_download: bool) -> None:
        self.allowed_dirs = [Path(directory).resolve() for directory in allowed_dirs]
        self.hub_download = hub_download

    def resolve(self, path: str, loc: Loc, inputs: FileInputs | None) -> LoraFile:
        if path.lower().startswith(URL_PREFIXES):
            if inputs is None:
                raise RuntimeError("a LoRA URL needs the request's input resolver")
            local, source = inputs.file(path, loc), "from its URL"
        elif path.startswith("/"):
            local, source = self._local(path, loc), "from a local directory"
        elif HF_REPO_ID.match(path):
            local, source = self._hub(path, loc), f"from the Hugging Face repo {path}"
        else:
            raise InputError(
                list(loc),
                "Expected an http(s) or data: URL, a Hugging Face repo id (owner/name) or an absolute path",
            )
        return LoraFile(local, content_hash(local), source)

    def _local(self, path: str, loc: Loc) -> Path:
        # Resolved before the check, so neither '..' nor a symlink leads out of an allowed directory,
        # and checked before existence, so refusals say nothing about files elsewhere.
        real = Path(path).resolve()
        if not any(real.is_relative_to(directory) for directory in self.allowed_dirs):
            raise InputError(list(loc), "Local LoRA paths must lie in a directory listed in OPENREEL_LORA_DIRS")
        if not real.is_file():
            raise InputError(list(loc), "No such LoRA file")
        return real

    def _hub(self, repo_id: str, loc: Loc) -> Path:
        try:
            directory = Path(
                snapshot_download(repo_id, allow_patterns=["*.safetensors"], local_files_only=not self.hub_download)
            )
        except LocalEntryNotFoundError as error:
            if self.hub_download:
                raise InputError(list(loc), f"The Hugging Face repo {repo_id} could not be fetched: {error}") from None
            raise InputError(
                list(loc),
                f"The Hugging Face repo {repo_id} is not in this server's cache, and downloading at request time "
                "is off (OPENREEL_LORA_HUB_DOWNLOAD)",
            ) from None
        except (HfHubHTTPError, HFValidationError, OSError) as error:
            raise InputError(list(loc), f"The Hugging Face repo {repo_id} could not be fetched: {error}") from None
        return self._weights_in(directory, repo_id, loc)

    @staticmethod
    def _weights_in(directory: Path, repo_id: str, loc: Loc) -> Path:
        if (directory / WEIGHT_NAME).is_file():
            return directory / WEIGHT_NAME
        candidates = sorted(directory.glob("*.safetensors"))
        if len(candidates) != 1:
            raise InputError(
                list(loc),
                f"The Hugging Face repo {repo_id} has {len(candidates)} .safetensors files at its root and none "
                f"named {WEIGHT_NAME}: cannot tell which one is the LoRA",
            )
        return candidates[0]
