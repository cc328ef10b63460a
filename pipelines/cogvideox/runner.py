"""CogVideoX-5B runners (worker-side only: imports torch and diffusers).

The weights are loaded once per worker into ``CogVideoXComponents``; each endpoint's runner
wraps them in its own diffusers pipeline object, so text-, image- and video-to-video share
one copy of the text encoder, VAE and (T2V/V2V) transformer.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

from models.presets import resolve
from pipelines.cogvideox.schema import TextToVideoInput, TextToVideoOutput
from pipelines.fal_types import resolve_size
from workers.context import JobContext

log = logging.getLogger(__name__)

T2V_REPO = "THUDM/CogVideoX-5b"
T2V_ENDPOINT = "fal-ai/cogvideox-5b"

# CogVideoX-5B is trained on 49-frame clips: 6 s at its native 8 fps, plus the first frame.
NUM_FRAMES = 49


def resolve_device(spec: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` as a torch device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {spec!r}; expected auto, cpu, cuda or cuda:N")
    return device


def dtype_for(device: torch.device) -> torch.dtype:
    # bf16 is what the 5B weights were trained and published in; CPUs run it slowly or not at all.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass
class CogVideoXComponents:
    """The loaded modules of the T2V repo, on their device, shared by every CogVideoX runner."""

    modules: dict[str, Any]
    location: str
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, *, preset: str, models_dir: Path, device: str) -> CogVideoXComponents:
        torch_device = resolve_device(device)
        dtype = dtype_for(torch_device)
        # One loading path for both presets: "tiny" only changes where the repo lives.
        location = resolve(T2V_REPO, preset, Path(models_dir))
        pipe = CogVideoXPipeline.from_pretrained(location, dtype=dtype)
        pipe.to(torch_device)
        log.info("loaded %s from %s on %s (%s)", T2V_REPO, location, torch_device, dtype)
        return cls(modules=dict(pipe.components), location=location, device=torch_device, dtype=dtype)

    def scheduler(self) -> CogVideoXDPMScheduler:
        """A fresh scheduler per pipeline: schedulers keep per-run state (timesteps).

        The THUDM demo swaps the repo's DDIM for DPM with trailing spacing; fal's defaults match
        that demo.
        """
        return CogVideoXDPMScheduler.from_config(self.modules["scheduler"].config, timestep_spacing="trailing")

    def release_cached_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class TextToVideo:
    endpoint_id = T2V_ENDPOINT

    def __init__(self, components: CogVideoXComponents) -> None:
        self.components = components
        self.pipe = CogVideoXPipeline(**{**components.modules, "scheduler": components.scheduler()})
        # Progress goes to the request's logs through the step callback, not to stderr.
        self.pipe.set_progress_bar_config(disable=True)

    @property
    def max_text_tokens(self) -> int:
        return self.pipe.transformer.config.max_text_seq_length

    def warm_up(self) -> None:
        """One small generation so the CUDA context, transformer kernels and allocator pools
        exist before the first user request. Latents only, to keep worker start-up short."""
        with torch.inference_mode():
            self.pipe(
                prompt="warm up",
                height=64,
                width=64,
                num_frames=9,
                num_inference_steps=2,
                guidance_scale=7.0,
                use_dynamic_cfg=True,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="latent",
                max_sequence_length=self.max_text_tokens,
            )

    def run(self, request: TextToVideoInput, ctx: JobContext) -> TextToVideoOutput:
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        try:
            with torch.inference_mode():
                frames = self._generate(request, seed, ctx)
        except BaseException as error:
            # A failed or cancelled run's traceback keeps the pipeline frames, and with them
            # the latents and embeddings, alive for as long as the worker holds the exception.
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            self.components.release_cached_memory()

        if request.use_rife:
            ctx.progress.log(
                "use_rife: frame interpolation is not available yet; "
                f"exporting the {len(frames)} generated frames as they are, without interpolation"
            )
        ctx.progress.stage("encoding video")
        file = ctx.write_video(frames, fps=request.export_fps, file_name="output.mp4")
        return TextToVideoOutput(video=file, timings=ctx.progress.finish(), seed=seed, prompt=request.prompt)

    def _generate(self, request: TextToVideoInput, seed: int, ctx: JobContext) -> np.ndarray:
        """uint8 frames (F, H, W, 3)."""
        pipe, progress = self.pipe, ctx.progress
        width, height = resolve_size(request.video_size)
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
        latents = pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            height=height,
            width=width,
            num_frames=NUM_FRAMES,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            use_dynamic_cfg=True,
            generator=generator,
            output_type="latent",
            callback_on_step_end=progress.step_callback(request.num_inference_steps),
            max_sequence_length=self.max_text_tokens,
        ).frames
        del prompt_embeds, negative_embeds

        progress.stage("decoding")
        video = pipe.decode_latents(latents)
        del latents
        video = pipe.video_processor.postprocess_video(video=video, output_type="np")
        return to_uint8(video[0])


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8, rounding the way diffusers' own PIL output does."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def load_family(*, preset: str, models_dir: Path, device: str) -> dict[str, TextToVideo]:
    """Every CogVideoX endpoint this worker serves, keyed by endpoint id."""
    components = CogVideoXComponents.load(preset=preset, models_dir=models_dir, device=device)
    runners = [TextToVideo(components)]
    return {runner.endpoint_id: runner for runner in runners}
