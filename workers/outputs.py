"""The one output writer: frames to an H.264 MP4 (imageio-ffmpeg), stored, described as a fal File."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from openreel.storage import Storage
from pipelines.fal_types import File
from workers.context import Progress


def encode_mp4(frames: np.ndarray, fps: int, path: Path) -> None:
    """H.264 in yuv420p with the index up front (faststart), so browsers can play while downloading."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (F, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=8,
        macro_block_size=1,
        output_params=["-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


class OutputWriter:
    def __init__(
        self,
        storage: Storage,
        files_base_url: str,
        progress: Progress,
        scratch: Path,
        lifetime_s: int | None = None,
    ) -> None:
        self.storage = storage
        self.base_url = files_base_url
        self.progress = progress
        self.scratch = scratch
        self.lifetime_s = lifetime_s  # X-Fal-Object-Lifecycle-Preference of the request

    def write_video(self, frames: np.ndarray, fps: int, file_name: str = "output.mp4") -> File:
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            path = Path(tmp) / "video.mp4"
            encode_mp4(frames, fps, path)
            size = path.stat().st_size
            self.progress.stage("uploading")
            expires_at = time.time() + self.lifetime_s if self.lifetime_s else None
            key = self.storage.put_file(path, file_name, "video/mp4", expires_at)
        return File(
            url=self.storage.url(key, self.base_url),
            content_type="video/mp4",
            file_name=key.split("/")[-1],
            file_size=size,
        )
