"""Hostile input files, made cheaply: truncated and corrupt containers, a video of 100,000 frames,
16k sizes and a PNG decompression bomb, built from their headers rather than their pixels."""

from __future__ import annotations

import struct
import subprocess
import zlib

import imageio_ffmpeg

from tests.generated_inputs import gradient_frames, mp4_bytes, png_bytes


def _encode(lavfi_source: str, frames: int) -> bytes:
    """A black H.264 clip from ffmpeg's generator: cheap because it is tiny in pixels."""
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", lavfi_source, "-frames:v", str(frames),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4",
        "-movflags", "frag_keyframe+empty_moov", "pipe:1",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, check=True).stdout


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 30_000) -> bytes:
    """A grayscale PNG of side x side that inflates to side**2 bytes: its IDAT holds the first
    rows only (a few KiB), which is all a decoder gets to before the header must stop it."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def hostile_videos() -> dict[str, bytes]:
    good = mp4_bytes(gradient_frames(8, (32, 32)), 8)
    return {
        "truncated mp4": good[: len(good) // 2],
        "mp4 header then noise": good[:32] + bytes(range(256)) * 64,
        "not a video at all": b"\0" * 4096,
        "100,000 frames": _encode("color=c=black:s=16x16:r=2000", 100_000),  # 50 s: only the frame cap stops it
        "16k wide": _encode("color=c=black:s=16384x16:r=8", 1),
        "a png bomb as video": png_bomb(),
    }


def hostile_images() -> dict[str, bytes]:
    good = png_bytes((32, 32))
    return {
        "truncated png": good[: len(good) // 2],
        "png signature then noise": good[:8] + bytes(range(256)) * 16,
        "png bomb": png_bomb(),
        "16k png header": png_bomb(16_384),
        "an mp4 as image": mp4_bytes(gradient_frames(4, (32, 32)), 8),
    }
