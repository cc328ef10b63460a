"""Input files to pixels: what a file is comes from its bytes, never from its name or headers.

A ``video_url`` that holds a PNG would otherwise decode (ffmpeg reads a PNG as a one-frame
video) and a mislabelled upload would fail deep inside a pipeline; here both end as a 422
naming the field, before any GPU work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, UnidentifiedImageError

from workers.context import InputError

Loc = Sequence[str | int]

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# ISO base media files (MP4, MOV) share the "ftyp" box with HEIF/AVIF still images.
IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float
    max_side: int
    max_frames: int


@dataclass(frozen=True)
class Video:
    frames: np.ndarray
    """uint8 (F, H, W, 3) RGB, the layout the output writer takes back."""
    fps: float


# Below this share of the frames an MP4/MOV's index promises, the file is taken as truncated.
TRUNCATED_FRACTION = 0.9


def looks_like_video(head: bytes) -> bool:
    """Whether the first bytes are those of a video container ffmpeg can demux."""
    if head[4:8] == b"ftyp":
        return head[8:12] not in IMAGE_BRANDS
    return (
        head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska, WebM
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith((b"FLV\x01", b"OggS", b"GIF87a", b"GIF89a", b"\x00\x00\x01\xba"))  # FLV, Ogg, GIF, MPEG-PS
        or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47)  # MPEG transport stream
    )


def read_video(path: Path, loc: Loc, limits: VideoLimits) -> Video:
    """All frames of a video as RGB, within the duration, size and frame-count limits."""
    with path.open("rb") as file:
        head = file.read(512)
    if not looks_like_video(head):
        raise InputError(list(loc), "The file is not a video (MP4, MOV, WebM, MKV, AVI, GIF, ...)")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration):
        raise InputError(list(loc), "The video could not be decoded (no readable video stream)") from None
    try:
        width, height = meta["size"]
        fps = float(meta.get("fps") or 0)
        duration = float(meta.get("duration") or 0)
        if max(width, height) > limits.max_side:
            raise InputError(list(loc), f"The video is {width}x{height}; the largest side allowed is {limits.max_side}")
        if duration > limits.max_seconds:
            raise InputError(list(loc), f"The video lasts {duration:.1f} s; the limit is {limits.max_seconds:g} s")
        frames = []
        for raw in reader:
            if len(frames) == limits.max_frames:
                raise InputError(list(loc), f"The video has more than {limits.max_frames} frames")
            frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
    except (OSError, RuntimeError):
        raise InputError(list(loc), "The video could not be decoded") from None
    finally:
        reader.close()
    if not frames or fps <= 0:
        raise InputError(list(loc), "The video has no frames or no frame rate")
    # An MP4/MOV's index states its duration; ffmpeg decodes what data there is and stops
    # quietly where a truncated file ends, so a short count is the only sign of the damage.
    expected = duration * fps
    if head[4:8] == b"ftyp" and len(frames) < TRUNCATED_FRACTION * expected:
        raise InputError(
            list(loc), f"The video is truncated or damaged: {len(frames)} of its {expected:.0f} frames could be read"
        )
    return Video(np.stack(frames), fps)


def read_image(path: Path, loc: Loc, max_side: int) -> Image.Image:
    """The image as RGB; the size is checked from the header, before the pixels are decoded."""
    try:
        image = Image.open(path, formats=IMAGE_FORMATS)
    except (UnidentifiedImageError, OSError):
        raise InputError(list(loc), f"The file is not an image ({', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError:
        raise InputError(list(loc), f"The image is far larger than {max_side} pixels a side") from None
    with image:
        width, height = image.size
        if max(width, height) > max_side:
            raise InputError(list(loc), f"The image is {width}x{height}; the largest side allowed is {max_side}")
        try:
            return image.convert("RGB")
        except (OSError, ValueError):
            raise InputError(list(loc), "The image could not be decoded") from None
