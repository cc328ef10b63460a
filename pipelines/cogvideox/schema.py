"""fal's ``fal-ai/cogvideox-5b`` schemas, field for field (names, defaults, ranges)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from pipelines.fal_types import File, ImageSize, ImageSizePreset, resolve_size

# The VAE downsamples by 8 and the transformer patches by 2: sides must be multiples of 16.
SIZE_MULTIPLE = 16
MAX_SIDE = 2048


class TextToVideoInput(BaseModel):
    prompt: str = Field(..., description="The prompt to generate the video from.")
    video_size: ImageSize | ImageSizePreset = Field(
        default_factory=lambda: ImageSize(width=720, height=480),
        description="The size of the generated video.",
    )
    negative_prompt: str = Field("", description="The negative prompt to generate video from")
    num_inference_steps: int = Field(50, ge=1, le=50, description="The number of inference steps to perform.")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="The same seed and the same prompt given to the same version of the model will output "
        "the same video every time.",
    )
    guidance_scale: float = Field(
        7.0,
        ge=0.0,
        le=20.0,
        description="The CFG (Classifier Free Guidance) scale is a measure of how close you want the model to "
        "stick to your prompt when looking for a related video to show you.",
    )
    use_rife: bool = Field(True, description="Use RIFE for video interpolation")
    export_fps: int = Field(16, ge=4, le=32, description="The target FPS of the video")

    @field_validator("video_size")
    @classmethod
    def _size_fits_the_model(cls, value: ImageSize | str) -> ImageSize | str:
        width, height = resolve_size(value)
        for side, name in ((width, "width"), (height, "height")):
            if side < SIZE_MULTIPLE or side > MAX_SIDE or side % SIZE_MULTIPLE:
                raise ValueError(
                    f"{name} must be a multiple of {SIZE_MULTIPLE} between {SIZE_MULTIPLE} and {MAX_SIDE}, "
                    f"got {side}"
                )
        return value


class TextToVideoOutput(BaseModel):
    video: File = Field(..., description="The URL to the generated video")
    timings: dict[str, float] = Field(..., description="Seconds spent in each stage.")
    seed: int = Field(
        ...,
        description="Seed of the generated video. It will be the same value of the one passed in the input or "
        "the randomly generated that was used in case none was passed.",
    )
    prompt: str = Field(..., description="The prompt used for generating the video.")
