"""The ``fal-ai/video-as-prompt`` runner (worker-side only: imports torch and diffusers).

One request: fetch the image and the reference clip, fit both to the output size (the clip
resampled evenly to ``num_frames``), encode the two captions, denoise with progress and
cancellation, decode, run the safety checker on sampled frames when asked, write the MP4.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKLWan, ContextParallelConfig
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, UMT5EncoderModel

from models.presets import resolve
from models.video_as_prompt import load_transformer
from openreel.settings import Settings
from pipelines.devices import dtype_for, resolve_device
from pipelines.fal_types import seed_for
from pipelines.frames import fit_frames, fit_image, to_uint8
from pipelines.memory import GIB, PipelineMemory, store_fp8
from pipelines.video_as_prompt import REPO, SAFETY_CHECKER_REPO
from pipelines.video_as_prompt.pipeline import VideoAsPromptPipeline, evenly_spaced, valid_frame_count
from pipelines.video_as_prompt.safety import SafetyChecker
from pipelines.video_as_prompt.schema import (
    VideoAsPromptInput,
    VideoAsPromptOutput,
    capped_size,
    output_size,
)
from workers.context import ContentPolicyViolation, JobContext

log = logging.getLogger(__name__)

ENDPOINT = "fal-ai/video-as-prompt"
# Peak above the weights for 832x480, 49 frames, both streams, in bf16: the Video-As-Prompt
# README's ~64 GB on an A100 minus about 50 GB of weights. Not measured here.
ACTIVATION_HEADROOM_BYTES = 14 * GIB


def load_pipeline(location: str, device: torch.device, dtype: torch.dtype) -> VideoAsPromptPipeline:
    """The published repo's components, each from its folder. Its ``model_index.json`` names a
    transformer class diffusers does not have, so nothing is loaded through it. The VAE and the
    image encoder stay in float32, as the Video-As-Prompt inference script keeps them."""
    scheduler_config = diffusers.UniPCMultistepScheduler.load_config(location, subfolder="scheduler")
    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    pipe = VideoAsPromptPipeline(
        tokenizer=AutoTokenizer.from_pretrained(location, subfolder="tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(location, subfolder="text_encoder", dtype=dtype).eval(),
        vae=AutoencoderKLWan.from_pretrained(location, subfolder="vae", dtype=torch.float32).eval(),
        scheduler=scheduler,
        image_processor=CLIPImageProcessor.from_pretrained(location, subfolder="image_processor"),
        image_encoder=CLIPVisionModel.from_pretrained(location, subfolder="image_encoder", dtype=torch.float32).eval(),
        transformer=load_transformer(location, dtype),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class VideoAsPromptRunner:
    endpoint_id = ENDPOINT

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = dtype_for(self.device)
        location = resolve(REPO, settings.models, settings.models_dir)
        self.pipe = load_pipeline(location, self.device, self.dtype)
        log.info("loaded %s from %s (%s)", REPO, location, self.dtype)
        if settings.fp8_weights:
            log.info("fp8 weights: %s", store_fp8(self.pipe.transformer, self.dtype))
        networks = [module for module in self.pipe.components.values() if isinstance(module, torch.nn.Module)]
        self.memory = PipelineMemory.for_modules(
            networks, self.device, settings.memory_mode, settings.vae_tiling, ACTIVATION_HEADROOM_BYTES
        )
        self.memory.place(networks, self.pipe.vae)
        checker = settings.safety_checker
        if checker is None or not Path(checker).is_dir():
            checker = resolve(checker or SAFETY_CHECKER_REPO, settings.models, settings.models_dir)
        self.safety = SafetyChecker(checker, self.device)
        log.info("safety checker from %s", checker)

    def split_sequence(self, config: ContextParallelConfig) -> None:
        """In a worker group: every rank runs the transformer on its slice of both token streams."""
        self.pipe.transformer.enable_parallelism(config=config)

    def networks(self) -> list[torch.nn.Module]:
        """The networks this endpoint's runs use, for the worker's residency manager."""
        pipe_networks = [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]
        return self.memory.movable([*pipe_networks, self.safety.model])

    def warm_up(self) -> None:
        """Two steps at the smallest size, so kernels and allocator pools exist before the first
        request; decode and safety check too, they have kernels of their own."""
        gray = Image.new("RGB", (32, 32), (128, 128, 128))
        with torch.inference_mode():
            self.memory.prepare(self.pipe)
            captions = self.pipe.encode_captions("warm up", "warm up", True, self.dtype)
            reference = self.pipe.prepare_reference([gray] * 5, 32, 32)
            latents = self.pipe.generate(
                gray, reference, captions, height=32, width=32, num_inference_steps=2, guidance_scale=5.0,
                generator=torch.Generator("cpu").manual_seed(0),
            )
            self.safety.flagged_frames(to_uint8(self.pipe.decode(latents)))
        self._release_cached_memory()

    def run(self, request: VideoAsPromptInput, ctx: JobContext) -> VideoAsPromptOutput:
        seed = seed_for(request.seed)
        try:
            with torch.inference_mode():
                frames = self._generate(request, seed, ctx)
        except BaseException as error:
            # The traceback's frames hold latents and embeddings for as long as the worker holds it.
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            self._release_cached_memory()
        if request.enable_safety_checker:
            ctx.progress.stage("safety check")
            flagged = self.safety.flagged_frames(frames)
            if flagged:
                raise ContentPolicyViolation(
                    f"The generated video was flagged by the safety checker (frames {flagged}) and is not returned."
                )
            ctx.progress.log(f"safety check: no sampled frame flagged")
        ctx.progress.stage("encoding video")
        file = ctx.write_video(frames, fps=request.fps, file_name="output.mp4")
        return VideoAsPromptOutput(video=file)

    def _generate(self, request: VideoAsPromptInput, seed: int, ctx: JobContext) -> np.ndarray:
        pipe, progress = self.pipe, ctx.progress
        size = output_size(request.aspect_ratio, request.resolution)
        width, height = capped_size(size, self.settings.video_as_prompt_max_pixels)
        if (width, height) != size:
            progress.log(
                f"resolution: {request.resolution} {request.aspect_ratio} is {size[0]}x{size[1]}, over this "
                f"server's OPENREEL_VIDEO_AS_PROMPT_MAX_PIXELS; generated and delivered at {width}x{height}"
            )
        num_frames = valid_frame_count(request.num_frames, pipe.vae_scale_factor_temporal)
        if num_frames != request.num_frames:
            progress.log(f"num_frames: {request.num_frames} rounded down to {num_frames} (1 + a multiple of 4)")

        assert ctx.inputs is not None
        image = fit_image(ctx.inputs.image(request.image_url, ["image_url"]).convert("RGB"), (width, height))
        clip = ctx.inputs.video(request.video_url, ["video_url"]).frames
        chosen = fit_frames(clip[evenly_spaced(len(clip), num_frames)], (width, height))
        progress.log(f"video_url: {len(clip)} frames -> {num_frames} evenly spaced, fitted to {width}x{height}")

        self.memory.prepare(pipe)
        progress.stage("encoding prompt")
        captions = pipe.encode_captions(request.prompt, request.video_description, request.guidance_scale > 1, self.dtype)
        progress.stage("encoding reference")
        reference = pipe.prepare_reference([Image.fromarray(frame) for frame in chosen], height, width)
        progress.stage("denoising")
        steps = self.settings.video_as_prompt_steps
        latents = pipe.generate(
            image,
            reference,
            captions,
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=request.guidance_scale,
            # A CPU generator draws the same noise whatever device runs the model.
            generator=torch.Generator("cpu").manual_seed(seed),
            on_step_end=progress.step_callback(steps),
        )
        del captions, reference
        progress.stage("decoding")
        return to_uint8(pipe.decode(latents))

    def _release_cached_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def load_family(*, settings: Settings, endpoints: list[str] | None = None) -> dict[str, VideoAsPromptRunner]:
    return {ENDPOINT: VideoAsPromptRunner(settings)}
