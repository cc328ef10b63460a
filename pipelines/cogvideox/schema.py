"""fal's ``fal-ai/cogvideox-5b`` schemas (text-, image- and video-to-video), field for field
(names, defaults, ranges).

Size bounds come from the settings the validating process runs with: callers pass them as
``model_validate(payload, context={"settings": settings})``; without a context the defaults apply.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from openreel.settings import Settings
from pipelines.fal_types import File, ImageSize, ImageSizePreset, resolve_size

# The VAE downsamples by 8 and the transformer patches by 2: sides must be multiples of 16.
SIZE_MULTIPLE = 16
MAX_LORAS = 1  # as on fal: "We currently support one lora."


def _side_bounds(info: ValidationInfo) -> tuple[int, int]:
    settings = (info.context or {}).get("settings")
    if isinstance(settings, Settings):
        return settings.video_min_side, settings.video_max_side
    fields = Settings.model_fields
    return fields["video_min_side"].default, fields["video_max_side"].default


class LoraWeight(BaseModel):
    path: str = Field(..., description="URL or the path to the LoRA weights.")
    scale: float = Field(
        1.0,
        allow_inf_nan=False,
        description="The scale of the LoRA weight. This is used to scale the LoRA weight before merging it with "
        "the base model.",
    )


class CogVideoXInput(BaseModel):
    """The fields all three endpoints share."""

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
    def _size_fits_the_model(cls, value: ImageSize | str, info: ValidationInfo) -> ImageSize | str:
        low, high = _side_bounds(info)
        width, height = resolve_size(value)
        for side, name in ((width, "width"), (height, "height")):
            if side < low or side > high or side % SIZE_MULTIPLE:
                raise ValueError(
                    f"{name} must be a multiple of {SIZE_MULTIPLE} between {low} and {high}, got {side}"
                )
        return value


class TextToVideoInput(CogVideoXInput):
    """fal's text-to-video page lists no ``loras``; neither does this."""


class LoraInput(CogVideoXInput):
    loras: list[LoraWeight] = Field(
        default_factory=list,
        description="The LoRAs to use for the image generation. We currently support one lora.",
    )

    @model_validator(mode="after")
    def _one_lora(self) -> LoraInput:
        if len(self.loras) > MAX_LORAS:
            # Located at the first LoRA too many, so the 422 names it (loras.1), not the list.
            error = PydanticCustomError("too_many_loras", "Only {limit} LoRA is supported", {"limit": MAX_LORAS})
            extra = InitErrorDetails(type=error, loc=("loras", MAX_LORAS), input=self.loras[MAX_LORAS].model_dump())
            raise ValidationError.from_exception_data(type(self).__name__, [extra])
        return self


class ImageToVideoInput(LoraInput):
    image_url: str = Field(..., description="The URL to the image to generate the video from.")


class VideoToVideoInput(LoraInput):
    video_url: str = Field(..., description="The video to generate the video from.")
    strength: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="The strength to use for Video to Video.  1.0 completely remakes the video while 0.0 "
        "preserves the original.",
    )


class CogVideoXOutput(BaseModel):
    video: File = Field(..., description="The URL to the generated video")
    timings: dict[str, float] = Field(..., description="Seconds spent in each stage.")
    seed: int = Field(
        ...,
        description="Seed of the generated video. It will be the same value of the one passed in the input or "
        "the randomly generated that was used in case none was passed.",
    )
    prompt: str = Field(..., description="The prompt used for generating the video.")
