"""Download an output file and read it back with ffmpeg: what a user's player would see."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import imageio_ffmpeg


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    width: int
    height: int
    fps: float
    codec: str
    size_bytes: int


def probe_video(path: Path) -> VideoFacts:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = sum(1 for _ in reader)
    width, height = meta["size"]
    return VideoFacts(frames, width, height, meta["fps"], meta["codec"], path.stat().st_size)


def download_video(url: str, directory: Path, verify: ssl.SSLContext | bool = True) -> VideoFacts:
    response = httpx.get(url, verify=verify, timeout=30)
    response.raise_for_status()
    assert response.headers["content-type"] == "video/mp4"
    path = directory / "download.mp4"
    path.write_bytes(response.content)
    return probe_video(path)

