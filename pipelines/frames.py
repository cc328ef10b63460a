"""Fitting input pictures and clips to what a model generates: frame rate, length, framing.

Torch-free numpy/PIL, uint8 RGB frames (F, H, W, 3) in and out, the layout the input decoder
produces and the output writer takes.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

Size = tuple[int, int]  # (width, height)


def center_crop_box(width: int, height: int, aspect: float) -> tuple[float, float, float, float]:
    """The largest centered (left, top, right, bottom) box of ``aspect`` (width / height)."""
    if width / height > aspect:
        crop_width = height * aspect
        left = (width - crop_width) / 2
        return left, 0.0, left + crop_width, float(height)
    crop_height = width / aspect
    top = (height - crop_height) / 2
    return 0.0, top, float(width), top + crop_height


def fit_image(image: Image.Image, size: Size, aspect: float | None = None) -> Image.Image:
    """``image`` center-cropped to ``aspect`` (default: that of ``size``), then resized to ``size``.

    With an ``aspect`` other than the size's, the crop is stretched: that is how a frame framed
    for one shape goes through a model that only generates another, and comes back undistorted.
    """
    box = center_crop_box(image.width, image.height, aspect or size[0] / size[1])
    return image.resize(size, Image.Resampling.LANCZOS, box=box)


def fit_frames(frames: np.ndarray, size: Size) -> np.ndarray:
    """Every frame center-cropped to the aspect ratio of ``size`` and resized to it; frames of
    that size come back as they are (a same-size resample would still soften them)."""
    if (frames.shape[2], frames.shape[1]) == size:
        return frames
    return np.stack([np.asarray(fit_image(Image.fromarray(frame), size)) for frame in frames])


def resize_frames(frames: np.ndarray, size: Size) -> np.ndarray:
    """Every frame resized to ``size`` whole (no crop); frames of that size come back as they are."""
    if (frames.shape[2], frames.shape[1]) == size:
        return frames
    resized = [Image.fromarray(frame).resize(size, Image.Resampling.LANCZOS) for frame in frames]
    return np.stack([np.asarray(frame) for frame in resized])


def resample_fps(frames: np.ndarray, source_fps: float, target_fps: float) -> np.ndarray:
    """The frames shown at each tick of ``target_fps``: the one on screen at that moment, so
    the clip keeps its duration and speed (frames are dropped or repeated, never blended)."""
    duration = len(frames) / source_fps
    ticks = max(1, math.floor(duration * target_fps + 1e-6))
    indices = np.minimum(np.floor(np.arange(ticks) * source_fps / target_fps + 1e-6).astype(int), len(frames) - 1)
    return frames[indices]


def fit_length(frames: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` frames; a shorter clip holds its last frame to reach ``count``."""
    if len(frames) >= count:
        return frames[:count]
    hold = np.repeat(frames[-1:], count - len(frames), axis=0)
    return np.concatenate([frames, hold])


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8, rounding the way diffusers' own PIL output does."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
