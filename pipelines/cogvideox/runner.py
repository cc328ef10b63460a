"""CogVideoX-5B runners (worker-side only: imports torch and diffusers).

One base runs every request the same way: inputs, LoRA, prompt encoding, denoising with
progress and cancellation, decoding, RIFE, the MP4. Each endpoint only says what it hands the
diffusers pipeline (``prepare``) and how to warm it up.
"""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline, CogVideoXVideoToVideoPipeline
from PIL import Image

from openreel.settings import Settings
from pipelines.cogvideox.components import CogVideoXComponents
from pipelines.cogvideox.schema import (
    CogVideoXInput,
    CogVideoXOutput,
    ImageToVideoInput,
    TextToVideoInput,
    VideoToVideoInput,
)
from pipelines.fal_types import resolve_size, seed_for
from pipelines.frames import Size, fit_frames, fit_image, fit_length, resample_fps, resize_frames, to_uint8
from pipelines.lora_adapters import RequestedLora
from pipelines.speed import separate_qkv
from workers.context import JobContext

T2V_ENDPOINT = "fal-ai/cogvideox-5b"
I2V_ENDPOINT = "fal-ai/cogvideox-5b/image-to-video"
V2V_ENDPOINT = "fal-ai/cogvideox-5b/video-to-video"

# CogVideoX-5B is trained on 49-frame clips: 6 s at its native 8 fps, plus the first frame.
NUM_FRAMES = 49
NATIVE_FPS = 8
WARM_UP_FRAMES = 9
DEFAULT_SIZE = (720, 480)  # fal's default video_size, the size the model was trained at


@dataclass
class Prepared:
    """What one request asks of the shared generation."""

    size: Size
    """(width, height) of the delivered frames."""
    steps: int
    """Denoising steps that will run, for the ``step i/N`` lines."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """The endpoint's own pipeline arguments (sizes, image, video, strength)."""
    frames: np.ndarray | None = None
    """Set when there is nothing to generate: these are the frames to deliver."""


class CogVideoXRunner(ABC):
    endpoint_id: ClassVar[str]
    pipeline_class: ClassVar[type]
    model: ClassVar[str] = "CogVideoX-5B"

    def __init__(self, components: CogVideoXComponents, transformer: Any = None) -> None:
        self.components = components
        self.pipe = components.pipeline(self.pipeline_class, transformer)
        self.adapters = components.adapters_for(self.pipe, self.model)

    @property
    def max_text_tokens(self) -> int:
        return self.pipe.transformer.config.max_text_seq_length

    def networks(self) -> list[torch.nn.Module]:
        """The networks this endpoint's runs use, for the worker's residency manager."""
        pipe_networks = [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]
        return self.components.memory.movable([*pipe_networks, self.components.rife.model])

    # --- what each endpoint says -------------------------------------------------------------
    @abstractmethod
    def prepare(self, request: Any, ctx: JobContext) -> Prepared:
        """Fetch and fit the request's inputs; say what to generate, or hand back final frames."""

    @abstractmethod
    def warm_up_arguments(self, frames: int, size: Size) -> dict[str, Any]:
        """Pipeline arguments for a generation of this endpoint's kind of ``frames`` at ``size``."""

    # --- shared ------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """One generation so the CUDA context, kernels and allocator pools exist before the first
        user request. Latents only, to keep worker start-up short. Small, unless the blocks are
        compiled: then at the default request's shape, so that request finds them compiled."""
        self.components.memory.prepare(self.pipe)
        compiled = self.components.speed.compile
        shape = (NUM_FRAMES, DEFAULT_SIZE) if compiled else (WARM_UP_FRAMES, (64, 64))
        with torch.inference_mode(), self.components.speed.attention_context():
            self.pipe(
                prompt="warm up",
                num_inference_steps=2,
                guidance_scale=7.0,
                use_dynamic_cfg=True,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="latent",
                max_sequence_length=self.max_text_tokens,
                **self.warm_up_arguments(*shape),
            )
        self.components.rife.double(np.zeros((2, 32, 32, 3), np.uint8))

    def run(self, request: CogVideoXInput, ctx: JobContext) -> CogVideoXOutput:
        seed = seed_for(request.seed)
        try:
            with torch.inference_mode():
                prepared = self.prepare(request, ctx)
                with self._lora(request, ctx):
                    if prepared.frames is None:
                        frames = self._generate(request, prepared, seed, ctx)
                    else:
                        frames = prepared.frames
                frames = self._interpolate(frames, request, ctx)
        except BaseException as error:
            # A failed or cancelled run's traceback keeps the pipeline frames, and with them
            # the latents and embeddings, alive for as long as the worker holds the exception.
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            self.components.release_cached_memory()
        ctx.progress.stage("encoding video")
        file = ctx.write_video(frames, fps=request.export_fps, file_name="output.mp4")
        return CogVideoXOutput(video=file, timings=ctx.progress.finish(), seed=seed, prompt=request.prompt)

    @contextmanager
    def _lora(self, request: Any, ctx: JobContext) -> Iterator[None]:
        loras = getattr(request, "loras", None)  # text-to-video has no loras field, as on fal
        if not loras:
            yield
            return
        loc = ["loras", 0, "path"]
        lora = self.components.lora_sources.resolve(loras[0].path, loc, ctx.inputs)
        ctx.progress.stage("loading lora")
        requested = [RequestedLora(lora, loras[0].scale, loc)]
        with separate_qkv(self.pipe.transformer), self.adapters.applied(requested, ctx.progress.log):
            yield

    def _generate(self, request: CogVideoXInput, prepared: Prepared, seed: int, ctx: JobContext) -> np.ndarray:
        """uint8 frames (F, H, W, 3) at the delivered size."""
        pipe, progress = self.pipe, ctx.progress
        self.components.memory.prepare(pipe)
        use_cfg = request.guidance_scale > 1.0
        # A CPU generator draws the same noise whatever device runs the model.
        generator = torch.Generator("cpu").manual_seed(seed)

        progress.stage("encoding prompt")
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            do_classifier_free_guidance=use_cfg,
            max_sequence_length=self.max_text_tokens,
            device=self.components.device,
            dtype=self.components.dtype,
        )

        progress.stage("denoising")
        progress.log(f"speed: {self.components.speed.describe()}")
        with self.components.speed.attention_context():
            latents = pipe(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_embeds,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                use_dynamic_cfg=True,
                generator=generator,
                output_type="latent",
                callback_on_step_end=progress.step_callback(prepared.steps),
                max_sequence_length=self.max_text_tokens,
                **prepared.arguments,
            ).frames
        del prompt_embeds, negative_embeds

        progress.stage("decoding")
        video = pipe.decode_latents(latents)
        del latents
        video = pipe.video_processor.postprocess_video(video=video, output_type="np")
        return resize_frames(to_uint8(video[0]), prepared.size)

    def _interpolate(self, frames: np.ndarray, request: CogVideoXInput, ctx: JobContext) -> np.ndarray:
        if not request.use_rife:
            return frames
        ctx.progress.stage("interpolating")
        doubled = self.components.rife.double(frames)
        ctx.progress.log(
            f"use_rife: {len(frames)} frames doubled to {len(doubled)}, written at {request.export_fps} fps "
            f"({len(doubled) / request.export_fps:.1f} s)"
        )
        return doubled


class TextToVideo(CogVideoXRunner):
    endpoint_id = T2V_ENDPOINT
    pipeline_class = CogVideoXPipeline

    def prepare(self, request: TextToVideoInput, ctx: JobContext) -> Prepared:
        width, height = resolve_size(request.video_size)
        arguments = dict(height=height, width=width, num_frames=NUM_FRAMES)
        return Prepared((width, height), request.num_inference_steps, arguments)

    def warm_up_arguments(self, frames: int, size: Size) -> dict[str, Any]:
        return dict(height=size[1], width=size[0], num_frames=frames)


class ImageToVideo(CogVideoXRunner):
    """THUDM/CogVideoX-5b-I2V learned its positional embeddings for one frame size only.

    Every request is generated at that size. The image is first center-cropped to the requested
    aspect ratio, so the video starts from the picture framed as asked; that framing is stretched
    to the native size for the model and the frames are resized back to the requested size, which
    undoes the stretch. The further the aspect ratio is from the native one, the more the model
    sees distorted shapes, and a size larger than the native one is an upscale.
    """

    endpoint_id = I2V_ENDPOINT
    pipeline_class = CogVideoXImageToVideoPipeline
    model = "CogVideoX-5B-I2V"

    @property
    def native_size(self) -> Size:
        config, scale = self.pipe.transformer.config, self.pipe.vae_scale_factor_spatial
        return config.sample_width * scale, config.sample_height * scale

    def prepare(self, request: ImageToVideoInput, ctx: JobContext) -> Prepared:
        image = ctx.inputs.image(request.image_url, ["image_url"])
        width, height = resolve_size(request.video_size)
        native_width, native_height = self.native_size
        if (width, height) != (native_width, native_height):
            ctx.progress.log(
                f"video_size: {self.model} generates {native_width}x{native_height} only; the image is framed "
                f"at {width}x{height} and the video resized to {width}x{height}"
            )
        framed = fit_image(image, (native_width, native_height), aspect=width / height)
        arguments = dict(image=framed, height=native_height, width=native_width, num_frames=NUM_FRAMES)
        return Prepared((width, height), request.num_inference_steps, arguments)

    def warm_up_arguments(self, frames: int, size: Size) -> dict[str, Any]:
        width, height = self.native_size  # whatever size a request asks for
        gray = Image.new("RGB", (width, height), (128, 128, 128))
        return dict(image=gray, height=height, width=width, num_frames=frames)


class VideoToVideo(CogVideoXRunner):
    """The input is conformed to what the model generates: resampled to its 8 fps (keeping the
    clip's speed), trimmed to 49 frames or padded by holding the last one, center-cropped and
    resized to ``video_size``. ``strength`` noises it for ``int(steps * strength)`` of the steps
    (diffusers' rule); where that is zero the conformed input is returned without generating."""

    endpoint_id = V2V_ENDPOINT
    pipeline_class = CogVideoXVideoToVideoPipeline

    def prepare(self, request: VideoToVideoInput, ctx: JobContext) -> Prepared:
        video = ctx.inputs.video(request.video_url, ["video_url"])
        size = resolve_size(request.video_size)
        resampled = resample_fps(video.frames, video.fps, NATIVE_FPS)
        frames = fit_frames(fit_length(resampled, NUM_FRAMES), size)
        ctx.progress.log(
            f"video_url: {len(video.frames)} frames at {video.fps:g} fps -> {len(resampled)} at {NATIVE_FPS} fps, "
            f"{'trimmed' if len(resampled) >= NUM_FRAMES else 'padded with its last frame'} to {NUM_FRAMES}, "
            f"fitted to {size[0]}x{size[1]}"
        )
        steps = min(int(request.num_inference_steps * request.strength), request.num_inference_steps)
        if steps == 0:
            ctx.progress.log(
                f"strength {request.strength:g} leaves 0 of {request.num_inference_steps} denoising steps: "
                "the input video is returned as it is"
            )
            return Prepared(size, 0, frames=frames)
        video_frames = [Image.fromarray(frame) for frame in frames]
        arguments = dict(video=video_frames, strength=request.strength, height=size[1], width=size[0])
        return Prepared(size, steps, arguments)

    def warm_up_arguments(self, frames: int, size: Size) -> dict[str, Any]:
        gray = Image.new("RGB", size, (128, 128, 128))
        return dict(video=[gray] * frames, strength=1.0, height=size[1], width=size[0])


def load_family(*, settings: Settings, endpoints: list[str] | None = None) -> dict[str, CogVideoXRunner]:
    """The CogVideoX runners for ``endpoints`` (all when None), keyed by endpoint id. The I2V
    transformer is loaded only when image-to-video is served."""
    wanted = set(endpoints) if endpoints is not None else {T2V_ENDPOINT, I2V_ENDPOINT, V2V_ENDPOINT}
    components = CogVideoXComponents.load(settings, with_i2v=I2V_ENDPOINT in wanted)
    runners: list[CogVideoXRunner] = []
    if T2V_ENDPOINT in wanted:
        runners.append(TextToVideo(components))
    if I2V_ENDPOINT in wanted:
        runners.append(ImageToVideo(components, components.i2v_transformer))
    if V2V_ENDPOINT in wanted:
        runners.append(VideoToVideo(components))
    return {runner.endpoint_id: runner for runner in runners}
