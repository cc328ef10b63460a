"""fal's ``fal-ai/video-as-prompt`` schema, field for field, and its output sizes.

fal names sizes by ``aspect_ratio`` and ``resolution`` only. Wan2.1-I2V-14B-480P generates
832x480 (the Video-As-Prompt inference script's size), so 480p is that; 720p is Wan's 1280x720;
"580p" is not a multiple of 16 (the VAE downsamples by 8, the transformer patches by 2), so it
is the nearest 16:9 size that is: 1024x576. 9:16 swaps the sides.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pipelines.fal_types import File

AspectRatio = Literal["16:9", "9:16"]
Resolution = Literal["480p", "580p", "720p"]
Size = tuple[int, int]  # (width, height)

SIZE_MULTIPLE = 16
LANDSCAPE_SIZES: dict[str, Size] = {"480p": (832, 480), "580p": (1024, 576), "720p": (1280, 720)}


def output_size(aspect_ratio: AspectRatio, resolution: Resolution) -> Size:
    """(width, height) of the video fal's ``aspect_ratio`` and ``resolution`` ask for."""
    width, height = LANDSCAPE_SIZES[resolution]
    return (width, height) if aspect_ratio == "16:9" else (height, width)


def capped_size(size: Size, max_pixels: int) -> Size:
    """``size`` scaled down, aspect kept as closely as multiples of 16 allow, to at most
    ``max_pixels`` per frame; unchanged when it fits or when ``max_pixels`` is 0 (no cap)."""
    width, height = size
    if not max_pixels or width * height <= max_pixels:
        return size
    scale = (max_pixels / (width * height)) ** 0.5
    width, height = (max(SIZE_MULTIPLE, round(side * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for side in size)
    # Rounding to the nearest multiple may overshoot the cap: shave the longer side until it fits.
    while width * height > max_pixels and max(width, height) > SIZE_MULTIPLE:
        if width >= height:
            width -= SIZE_MULTIPLE
        else:
            height -= SIZE_MULTIPLE
    return width, height


class VideoAsPromptInput(BaseModel):
    prompt: str = Field(..., description="The prompt to generate an image from.")
    video_url: str = Field(..., description="reference video to generate effect video from.")
    image_url: str = Field(..., description="Input image to generate the effect video for.")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="Random seed for reproducible generation. If set none, a random seed will be used.",
    )
    num_frames: int = Field(
        49,
        ge=5,
        le=121,
        description="The number of frames to generate. A count that is not 1 more than a multiple of 4 is "
        "rounded down to one, as Wan's VAE needs.",
    )
    fps: int = Field(
        16,
        ge=1,
        le=60,
        description="Frames per second for the output video. Only applicable if output_type is 'video'.",
    )
    video_description: str = Field(..., description="A brief description of the input video content.")
    enable_safety_checker: bool = Field(True, description="If set to true, the safety checker will be enabled.")
    aspect_ratio: AspectRatio = Field("9:16", description="Aspect ratio of the generated video.")
    resolution: Resolution = Field("480p", description="Resolution of the generated video.")
    guidance_scale: float = Field(5.0, ge=0.0, le=20.0, description="Guidance scale for generation.")


class VideoAsPromptOutput(BaseModel):
    video: File = Field(..., description="The URLs of the generated video.")
