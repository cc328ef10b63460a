"""fal's ``fal-ai/cogvideox-5b`` schemas (text-, image- and video-to-video), field for field
(names, defaults, ranges).

Size bounds come from the settings the validating process runs with: callers pass them as
``model_validate(payload, context={"settings": settings})``; without a context the defaults apply.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from openreel.settings import Settings
from pipelines.fal_types import File, ImageSize, ImageSizePreset, field_examples, resolve_size

# The VAE downsamples by 8 and the transformer patches by 2: sides must be multiples of 16.
SIZE_MULTIPLE = 16
MAX_LORAS = 1  # as on fal: "We currently support one lora."

# The examples on fal's three endpoint pages.
NEGATIVE_PROMPT_EXAMPLE = (
    "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, disconnected limbs, "
    "Ugly faces, incomplete arms"
)
T2V_PROMPT_EXAMPLE = (
    "A garden comes to life as a kaleidoscope of butterflies flutters amidst the blossoms, their delicate wings "
    "casting shadows on the petals below. In the background, a grand fountain cascades water with a gentle "
    "splendor, its rhythmic sound providing a soothing backdrop. Beneath the cool shade of a mature tree, a "
    "solitary wooden chair invites solitude and reflection, its smooth surface worn by the touch of countless "
    "visitors seeking a moment of tranquility in nature's embrace."
)
I2V_PROMPT_EXAMPLE = (
    "A low angle shot of a man walking down a street, illuminated by the neon signs of the bars around him"
)
V2V_PROMPT_EXAMPLE = (
    "An astronaut stands triumphantly at the peak of a towering mountain. Panorama of rugged peaks and valleys. "
    "Very futuristic vibe and animated aesthetic. Highlights of purple and golden colors in the scene. The sky is "
    "looks like an animated/cartoonish dream of galaxies, nebulae, stars, planets, moons, but the remainder of the "
    "scene is mostly realistic. "
)


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
        json_schema_extra={"default": {"height": 480, "width": 720}},  # pydantic omits factory defaults
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

    model_config = ConfigDict(
        json_schema_extra=field_examples(prompt=T2V_PROMPT_EXAMPLE, negative_prompt=NEGATIVE_PROMPT_EXAMPLE)
    )


class LoraInput(CogVideoXInput):
    loras: list[LoraWeight] = Field(
        default_factory=list,
        description="The LoRAs to use for the image generation. We currently support one lora.",
        json_schema_extra={"default": []},
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
    model_config = ConfigDict(
        json_schema_extra=field_examples(
            prompt=I2V_PROMPT_EXAMPLE,
            negative_prompt=NEGATIVE_PROMPT_EXAMPLE,
            image_url="https://d3phaj0sisr2ct.cloudfront.net/research/eugene.jpg",
        )
    )

    image_url: str = Field(..., description="The URL to the image to generate the video from.")


class VideoToVideoInput(LoraInput):
    model_config = ConfigDict(
        json_schema_extra=field_examples(
            prompt=V2V_PROMPT_EXAMPLE,
            negative_prompt=NEGATIVE_PROMPT_EXAMPLE,
            video_url="https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/diffusers/"
            "hiker.mp4",
        )
    )

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
