"""fal's ``fal-ai/animatediff-v2v/turbo`` schema, field for field (names, defaults, ranges)."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pipelines.fal_types import File

DEFAULT_NEGATIVE_PROMPT = "(bad quality, worst quality:1.2), ugly faces, bad anime"
# fal's turbo pages: "4-12 is recommended for turbo mode", the range its forms allow.
MIN_STEPS, MAX_STEPS = 4, 12
# Each LoRA is loaded and switched on per request; this bounds what one request can ask.
MAX_LORAS = 8


class LoraWeight(BaseModel):
    path: str = Field(..., description="URL or the path to the LoRA weights. Or HF model name.")
    scale: float = Field(
        1.0,
        allow_inf_nan=False,
        description="The scale of the LoRA weight. This is used to scale the LoRA weight before merging it with "
        "the base model.",
    )


class AnimateDiffV2VTurboInput(BaseModel):
    video_url: str = Field(..., description="URL of the video.")
    prompt: str = Field(
        ...,
        description="The prompt to use for generating the image. Be as descriptive as possible for best results.",
    )
    negative_prompt: str = Field(
        DEFAULT_NEGATIVE_PROMPT,
        description="The negative prompt to use. Use it to address details that you don't want in the image. This "
        "could be colors, objects, scenery and even the small details (e.g. moustache, blurry, low resolution).",
    )
    num_inference_steps: int = Field(
        8,
        ge=MIN_STEPS,
        le=MAX_STEPS,
        description="Increasing the amount of steps tells Stable Diffusion that it should take more steps to "
        "generate your final result which can increase the amount of detail in your image.",
    )
    guidance_scale: float = Field(
        2.2,
        ge=0.0,
        le=20.0,
        description="The CFG (Classifier Free Guidance) scale is a measure of how close you want the model to "
        "stick to your prompt when looking for a related image to show you.",
    )
    loras: list[LoraWeight] = Field(
        default_factory=list,
        description="The list of LoRA weights to use.",
        json_schema_extra={"default": []},  # pydantic omits factory defaults
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="The same seed and the same prompt given to the same version of Stable Diffusion will output "
        "the same image every time.",
    )
    select_every_nth_frame: int = Field(
        2,
        ge=1,
        description="Select every Nth frame from the video. This can be used to reduce the number of frames to "
        "process, which can reduce the time and the cost. However, it can also reduce the quality of the final "
        "video.",
    )

    @model_validator(mode="after")
    def _bounded_loras(self) -> AnimateDiffV2VTurboInput:
        if len(self.loras) > MAX_LORAS:
            # Located at the first LoRA too many, so the 422 names it (loras.8), not the list.
            error = PydanticCustomError("too_many_loras", "At most {limit} LoRAs are supported", {"limit": MAX_LORAS})
            extra = InitErrorDetails(type=error, loc=("loras", MAX_LORAS), input=self.loras[MAX_LORAS].model_dump())
            raise ValidationError.from_exception_data(type(self).__name__, [extra])
        return self


class AnimateDiffOutput(BaseModel):
    video: File = Field(..., description="Generated video file.")
    seed: int = Field(..., description="Seed used for generating the video.")
