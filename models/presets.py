"""Where a pipeline loads a Hugging Face repo from, under the "tiny" or "full" weight preset.

Runners call ``resolve`` and hand its answer to the same ``from_pretrained`` call in both
presets: a hub repo id for "full", a generated local directory for "tiny".

Torch-free on import (builders load lazily), so the CLI and the API can use it cheaply.
"""

from __future__ import annotations

import importlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from tqdm import tqdm

Preset = Literal["tiny", "full"]

# Written last inside a finished build; a directory without it is never handed out.
COMPLETE_MARKER = ".openreel-tiny-complete"


def _lazy(target: str) -> Callable[[Path], None]:
    """A builder that imports its module (and with it torch) only when it runs."""
    module_name, function_name = target.split(":")

    def build(directory: Path) -> None:
        getattr(importlib.import_module(module_name), function_name)(directory)

    build.__qualname__ = build.__name__ = f"build[{target}]"
    return build


TINY_BUILDERS: dict[str, Callable[[Path], None]] = {
    "THUDM/CogVideoX-5b": _lazy("models.tiny.cogvideox:build"),
    "THUDM/CogVideoX-5b-I2V": _lazy("models.tiny.cogvideox:build_i2v"),
    "AlexWortega/RIFE": _lazy("models.rife.weights:build_tiny"),
    "emilianJR/epiCRealism": _lazy("models.tiny.animatediff:build_base"),
    "wangfuyun/AnimateLCM": _lazy("models.tiny.animatediff:build_animatelcm"),
    "ByteDance/Video-As-Prompt-Wan2.1-14B": _lazy("models.tiny.video_as_prompt:build"),
    "CompVis/stable-diffusion-safety-checker": _lazy("models.tiny.safety_checker:build"),
}


def tiny_dir(repo_id: str, models_dir: Path) -> Path:
    return Path(models_dir) / "tiny" / repo_id


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE_MARKER).is_file()


def make_tiny(repo_id: str, models_dir: Path) -> Path:
    """The tiny directory for ``repo_id``, built first if missing; safe across processes.

    Each process builds into its own temporary sibling and renames it into place. A rename
    onto a directory that already has content fails, so exactly one build wins and the loser
    discards its copy; readers never see a partial directory.
    """
    target = tiny_dir(repo_id, models_dir)
    if is_complete(target):
        return target
    try:
        builder = TINY_BUILDERS[repo_id]
    except KeyError:
        known = ", ".join(sorted(TINY_BUILDERS))
        raise ValueError(f"no tiny preset for {repo_id!r}; known: {known}") from None

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        builder(scratch)
        (scratch / COMPLETE_MARKER).write_text(f"{repo_id}\n")
        _move_into_place(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _move_into_place(scratch: Path, target: Path) -> None:
    try:
        os.rename(scratch, target)
        return
    except OSError:
        if is_complete(target):
            return  # another process won the race with an equivalent build
    # A target without the marker cannot come from a rename (the marker travels with it):
    # it is debris from something else, so set it aside rather than trust or merge it.
    stale = target.with_name(f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(target, stale)
    except FileNotFoundError:
        pass
    else:
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(scratch, target)
    except OSError:
        if not is_complete(target):
            raise


def make_all_tiny(models_dir: Path) -> list[Path]:
    """Build every tiny repo that is missing (``openreel make-tiny-models``), with a progress bar:
    each takes seconds to a minute on a CPU."""
    return [make_tiny(repo_id, models_dir) for repo_id in tqdm(sorted(TINY_BUILDERS), desc="tiny repos", unit="repo")]


def resolve(repo_id: str, preset: Preset, models_dir: Path) -> str:
    """What to pass to ``from_pretrained``: the repo id ("full") or the tiny directory ("tiny")."""
    if preset == "full":
        return repo_id
    if preset == "tiny":
        return str(make_tiny(repo_id, models_dir))
    raise ValueError(f"unknown model preset {preset!r}; expected 'tiny' or 'full'")
