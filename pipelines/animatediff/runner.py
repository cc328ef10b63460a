"""``fal-ai/animatediff-v2v/turbo`` (worker-side only: imports torch and diffusers).

An SD1.5 checkpoint with the AnimateLCM motion adapter, its LCM LoRA fused into the UNet at
load, and the LCM scheduler: the few-step, low-CFG sampler fal's defaults (8 steps, CFG 2.2)
fit. The input keeps every ``select_every_nth_frame``-th frame and its duration (the video is
written at the input's fps / n). Clips longer than the 16 frames a motion module attends to at
once go through FreeNoise's sliding windows, so any length up to OPENREEL_ANIMATEDIFF_MAX_FRAMES
works; prompts are weighted with the A1111 syntax fal's default negative prompt uses.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import AnimateDiffVideoToVideoPipeline, LCMScheduler, MotionAdapter
from PIL import Image

from models.presets import resolve
from openreel.settings import Settings
from pipelines.animatediff import ANIMATELCM_REPO, DEFAULT_BASE_REPO, LCM_LORA_FILE
from pipelines.animatediff.schema import AnimateDiffOutput, AnimateDiffV2VTurboInput
from pipelines.clip_prompts import ClipPromptEncoder
from pipelines.devices import dtype_for, resolve_device
from pipelines.fal_types import seed_for
from pipelines.frames import Size, fit_frames, to_uint8
from pipelines.lora_adapters import LoraAdapters, RequestedLora
from pipelines.lora_sources import LoraSources
from pipelines.memory import GIB, PipelineMemory
from workers.context import InputError, JobContext

log = logging.getLogger(__name__)

ENDPOINT = "fal-ai/animatediff-v2v/turbo"
MODEL = "AnimateDiff (SD1.5)"
# fal's turbo page has no strength field; its sibling fast-animatediff/turbo/video-to-video
# defaults to 0.7: enough noise to restyle, little enough to keep the input's layout and motion.
STRENGTH = 0.7
LCM_LORA_SCALE = 0.8  # AnimateLCM's recommended weight for its LoRA
# AnimateDiff motion modules are trained on 16-frame clips; FreeNoise slides windows of that
# length, 4 frames apart, over longer ones.
CONTEXT_FRAMES = 16
CONTEXT_STRIDE = 4
SIZE_MULTIPLE = 8  # the VAE downsamples by 8
# Peak memory above the weights: an estimate for 128 frames at 512x512 in bf16, not measured.
ACTIVATION_HEADROOM_BYTES = 16 * GIB
WARM_UP_FRAMES = 4


class EmbeddingsVideoToVideo(AnimateDiffVideoToVideoPipeline):
    """diffusers' pipeline, except that its FreeNoise path accepts prompt embeddings.

    With FreeNoise on, diffusers encodes text itself (so that prompts can change along the clip)
    and refuses embeddings; here one weighted prompt holds for every frame, so its embeddings
    are repeated per frame in the layout that path returns ([negative..., positive...])."""

    def _encode_prompt_free_noise(
        self,
        prompt: Any,
        num_frames: int,
        device: torch.device,
        num_videos_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt: Any = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if prompt_embeds is None:
            return super()._encode_prompt_free_noise(
                prompt, num_frames, device, num_videos_per_prompt, do_classifier_free_guidance, negative_prompt,
                prompt_embeds, negative_prompt_embeds, lora_scale, clip_skip,
            )  # fmt: skip
        positive = prompt_embeds.repeat_interleave(num_frames, dim=0)
        if not do_classifier_free_guidance:
            return positive, None
        negative = negative_prompt_embeds.repeat_interleave(num_frames, dim=0)
        return torch.cat([negative, positive]), negative


def fitted_size(width: int, height: int, max_side: int) -> Size:
    """The input's size scaled down (never up) to ``max_side``, both sides rounded down to
    multiples of 8 (at least 8): the aspect ratio changes by less than one 8-pixel step."""
    scale = min(1.0, max_side / max(width, height))
    return tuple(max(SIZE_MULTIPLE, int(side * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in (width, height))


class AnimateDiffTurbo:
    endpoint_id = ENDPOINT

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = dtype_for(self.device)
        self.pipe = self._load_pipeline(settings)
        networks = [self.pipe.unet, self.pipe.text_encoder, self.pipe.vae]
        self.memory = PipelineMemory.for_modules(
            networks, self.device, settings.memory_mode, settings.vae_tiling, ACTIVATION_HEADROOM_BYTES
        )
        self.memory.place(networks, self.pipe.vae)
        self.prompts = ClipPromptEncoder(self.pipe.tokenizer, self.pipe.text_encoder)
        self.lora_sources = LoraSources(settings.lora_dirs, settings.lora_hub_download)
        self.adapters = LoraAdapters(self.pipe, MODEL, settings.lora_max_loaded)

    def _load_pipeline(self, settings: Settings) -> EmbeddingsVideoToVideo:
        # The tiny preset has one generated stand-in for whichever SD1.5 checkpoint is configured.
        base_repo = settings.animatediff_base_model if settings.models == "full" else DEFAULT_BASE_REPO
        base = resolve(base_repo, settings.models, settings.models_dir)
        animatelcm = resolve(ANIMATELCM_REPO, settings.models, settings.models_dir)
        adapter = MotionAdapter.from_pretrained(animatelcm, dtype=self.dtype)
        pipe = EmbeddingsVideoToVideo.from_pretrained(
            base, motion_adapter=adapter, feature_extractor=None, image_encoder=None, dtype=self.dtype
        )
        log.info("loaded %s from %s and the motion adapter from %s (%s)", base_repo, base, animatelcm, self.dtype)
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, beta_schedule="linear")
        # Fused once: every request samples with it, and user LoRAs then come and go on top of
        # weights that never change again.
        pipe.load_lora_weights(animatelcm, weight_name=LCM_LORA_FILE, adapter_name="animatelcm")
        pipe.fuse_lora(lora_scale=LCM_LORA_SCALE, adapter_names=["animatelcm"])
        pipe.unload_lora_weights()
        # Swapping the motion modules' blocks for FreeNoise's copies their weights, which would
        # fail once LoRA adapters wrap them; so it happens here, once, and each request only sets
        # the window length (a single window as long as the clip computes the plain result).
        pipe.enable_free_noise(context_length=CONTEXT_FRAMES, context_stride=CONTEXT_STRIDE)
        pipe.set_progress_bar_config(disable=True)  # progress goes to the request's logs
        return pipe

    def networks(self) -> list[torch.nn.Module]:
        """The networks this endpoint's runs use, for the worker's residency manager."""
        return self.memory.movable([self.pipe.unet, self.pipe.text_encoder, self.pipe.vae])

    def warm_up(self) -> None:
        """One small generation, so kernels and allocator pools exist before the first request."""
        gray = np.full((WARM_UP_FRAMES, 64, 64, 3), 128, np.uint8)
        with torch.inference_mode():
            positive, negative = self.prompts.encode_pair("warm up", "", self.device)
            self._denoise(gray, positive, negative, steps=2, guidance_scale=2.0, seed=0, callback=None)

    def run(self, request: AnimateDiffV2VTurboInput, ctx: JobContext) -> AnimateDiffOutput:
        seed = seed_for(request.seed)
        try:
            with torch.inference_mode():
                frames, fps = self._input_frames(request, ctx)
                requested = self._resolve_loras(request, ctx)
                with self.adapters.applied(requested, ctx.progress.log):
                    ctx.progress.stage("encoding prompt")
                    positive, negative = self.prompts.encode_pair(
                        request.prompt, request.negative_prompt, self.device
                    )
                    ctx.progress.stage("denoising")
                    latents = self._denoise(
                        frames,
                        positive,
                        negative,
                        steps=request.num_inference_steps,
                        guidance_scale=request.guidance_scale,
                        seed=seed,
                        callback=ctx.progress.step_callback(request.num_inference_steps),
                    )
                ctx.progress.stage("decoding")
                video = self.pipe.decode_latents(latents)
                del latents
                frames = to_uint8(self.pipe.video_processor.postprocess_video(video=video, output_type="np")[0])
        except BaseException as error:
            # The traceback holds the pipeline's frames, and with them latents and embeddings.
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        ctx.progress.stage("encoding video")
        file = ctx.write_video(frames, fps=fps, file_name="output.mp4")
        return AnimateDiffOutput(video=file, seed=seed)

    def _input_frames(self, request: AnimateDiffV2VTurboInput, ctx: JobContext) -> tuple[np.ndarray, float]:
        """Every n-th frame, fitted to the output size, and the fps that keeps the clip's duration."""
        video = ctx.inputs.video(request.video_url, ["video_url"])
        step = request.select_every_nth_frame
        kept = video.frames[::step]
        limit = self.settings.animatediff_max_frames
        if len(kept) > limit:
            raise InputError(
                ["video_url"],
                f"The video has {len(video.frames)} frames; select_every_nth_frame={step} keeps {len(kept)}, more "
                f"than the {limit} this server generates: raise select_every_nth_frame or shorten the video",
            )
        height, width = kept.shape[1:3]
        size = fitted_size(width, height, self.settings.animatediff_max_side)
        fps = video.fps / step
        ctx.progress.log(
            f"video_url: {len(video.frames)} frames at {video.fps:g} fps -> every {step}: {len(kept)} at "
            f"{fps:g} fps, {width}x{height} fitted to {size[0]}x{size[1]}"
        )
        if len(kept) > CONTEXT_FRAMES:
            ctx.progress.log(f"{len(kept)} frames: FreeNoise windows of {CONTEXT_FRAMES}, {CONTEXT_STRIDE} apart")
        return fit_frames(kept, size), fps

    def _resolve_loras(self, request: AnimateDiffV2VTurboInput, ctx: JobContext) -> Sequence[RequestedLora]:
        requested = []
        for index, lora in enumerate(request.loras):
            loc = ["loras", index, "path"]
            requested.append(RequestedLora(self.lora_sources.resolve(lora.path, loc, ctx.inputs), lora.scale, loc))
        if requested:
            ctx.progress.stage("loading loras")
        return requested

    def _denoise(
        self,
        frames: np.ndarray,
        positive: torch.Tensor,
        negative: torch.Tensor,
        *,
        steps: int,
        guidance_scale: float,
        seed: int,
        callback: Any,
    ) -> torch.Tensor:
        """Latents (1, C, F, h, w) after ``steps`` LCM steps from the input noised to STRENGTH."""
        pipe = self.pipe
        self.memory.prepare(pipe)
        # A clip shorter than a window is one window of its own length.
        pipe.enable_free_noise(context_length=min(CONTEXT_FRAMES, len(frames)), context_stride=CONTEXT_STRIDE)
        height, width = frames.shape[1:3]
        return pipe(
            video=[Image.fromarray(frame) for frame in frames],
            prompt_embeds=positive.to(self.dtype),
            negative_prompt_embeds=negative.to(self.dtype),
            height=height,
            width=width,
            num_inference_steps=steps,
            # All the steps asked for run, over the last STRENGTH of the noise schedule (by default
            # diffusers would run int(steps x strength) of them).
            enforce_inference_steps=True,
            strength=STRENGTH,
            guidance_scale=guidance_scale,
            # A CPU generator draws the same noise whatever device runs the model.
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
            callback_on_step_end=callback,
        ).frames


def load_family(*, settings: Settings, endpoints: list[str] | None = None) -> dict[str, AnimateDiffTurbo]:
    """The family's one runner, keyed by its endpoint id."""
    if endpoints is not None and ENDPOINT not in endpoints:
        return {}
    return {ENDPOINT: AnimateDiffTurbo(settings)}
