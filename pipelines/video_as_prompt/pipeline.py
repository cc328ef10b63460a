"""Video-As-Prompt sampling on diffusers' Wan image-to-video pipeline.

The target is prepared exactly as Wan I2V prepares it (noise, the image as first frame of a
VAE-encoded condition clip, the first-frame mask, CLIP image tokens). The reference clip goes
through the same VAE and the same preparation, except that its latents are the clean encoded
clip instead of noise; its caption goes through the same UMT5. At every step the reference
stream is given a constant, almost clean timestep, and both classifier-free guidance passes
carry it (the unconditional one with the negative caption for the reference too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline
from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image

# What the published pipeline gives the reference stream at every step: clean latents, read as
# one step away from clean.
REFERENCE_TIMESTEP = 1.0

# Wan's default negative prompt, which the Video-As-Prompt pipeline uses for the target's and
# for the reference's unconditional pass alike.
NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards"
)

# The transformer's cross-attention splits image from text tokens by assuming 512 text tokens.
TEXT_TOKENS = 512


def evenly_spaced(count: int, wanted: int) -> np.ndarray:
    """Indices of ``wanted`` frames spread over ``count``, first and last included (the
    reference pipeline's ``frames_selection="evenly"``: linspace, truncated)."""
    return np.linspace(0, count - 1, wanted).astype(int)


def valid_frame_count(num_frames: int, temporal_factor: int) -> int:
    """Wan's VAE needs 1 + a multiple of its temporal factor; others round down, as in Wan."""
    return max(1, (num_frames - 1) // temporal_factor * temporal_factor + 1)


@dataclass
class Captions:
    """UMT5 embeddings of the target prompt and of the reference description, both passes."""

    prompt: torch.Tensor
    negative_prompt: torch.Tensor | None
    reference: torch.Tensor
    negative_reference: torch.Tensor | None


@dataclass
class Reference:
    """The reference clip as the expert reads it."""

    latents: torch.Tensor
    """(1, 36, F, H, W): clean latents, first-frame mask and first-frame condition."""
    image_tokens: torch.Tensor
    """CLIP tokens of its first frame."""


class VideoAsPromptPipeline(WanImageToVideoPipeline):
    """Wan2.1 I2V with a reference video: components as in ``WanImageToVideoPipeline``, the
    transformer a ``WanTransformer3DMOTModel``."""

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"

    def encode_captions(self, prompt: str, reference_prompt: str, guidance: bool, dtype: torch.dtype) -> Captions:
        def encode(text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
            positive, negative = self.encode_prompt(
                prompt=text,
                negative_prompt=NEGATIVE_PROMPT,
                do_classifier_free_guidance=guidance,
                max_sequence_length=TEXT_TOKENS,
                device=self._execution_device,
            )
            return positive.to(dtype), None if negative is None else negative.to(dtype)

        return Captions(*encode(prompt), *encode(reference_prompt))

    def prepare_reference(self, frames: list[Image.Image], height: int, width: int) -> Reference:
        """The reference clip (already ``num_frames`` frames) in the transformer's input layout:
        its clean latents, the first-frame mask and its own first-frame condition, as the target
        has them, and the CLIP tokens of its first frame."""
        device = self._execution_device
        dtype = self.transformer.dtype
        clip = self.video_processor.preprocess_video(frames, height=height, width=width)
        vae_device = get_module_execution_device(self.vae)
        encoded = retrieve_latents(self.vae.encode(clip.to(vae_device, self.vae.dtype)), sample_mode="argmax")
        mean, inverse_std = self._latent_statistics(encoded)
        latents = ((encoded.float() - mean) * inverse_std).to(device)
        first = self.video_processor.preprocess(frames[0], height=height, width=width).to(device, torch.float32)
        # Zero "noise" passed in, so no random numbers are drawn for the reference.
        _, condition = self.prepare_latents(
            first, 1, self.vae.config.z_dim, height, width, len(frames), torch.float32, device,
            latents=torch.zeros_like(latents),
        )
        image_tokens = self.encode_image(frames[0], device).to(dtype)
        return Reference(torch.cat([latents, condition], dim=1).to(dtype), image_tokens)

    def _latent_statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(like.device, torch.float32)
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(like.device)
        return mean, inverse_std.float()

    @torch.no_grad()
    def generate(
        self,
        image: Image.Image,
        reference: Reference,
        captions: Captions,
        *,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        generator: torch.Generator,
        on_step_end: Callable[..., dict[str, Any]] | None = None,
    ) -> torch.Tensor:
        """Target latents as long as the reference (a valid Wan frame count), ``width`` x ``height``."""
        device = self._execution_device
        dtype = self.transformer.dtype
        num_frames = (reference.latents.shape[2] - 1) * self.vae_scale_factor_temporal + 1
        guidance = captions.negative_prompt is not None
        image_tokens = self.encode_image(image, device).to(dtype)
        first = self.video_processor.preprocess(image, height=height, width=width).to(device, torch.float32)
        latents, condition = self.prepare_latents(
            first, 1, self.vae.config.z_dim, height, width, num_frames, torch.float32, device, generator
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        reference_timestep = torch.full((1,), REFERENCE_TIMESTEP, device=device)

        def velocity(timestep: torch.Tensor, prompt: torch.Tensor, reference_prompt: torch.Tensor) -> torch.Tensor:
            return self.transformer(
                hidden_states=torch.cat([latents, condition], dim=1).to(dtype),
                timestep=timestep,
                encoder_hidden_states=prompt,
                encoder_hidden_states_image=image_tokens,
                reference_hidden_states=reference.latents,
                reference_timestep=reference_timestep,
                reference_encoder_hidden_states=reference_prompt,
                reference_encoder_hidden_states_image=reference.image_tokens,
                return_dict=False,
            )[0]

        for index, t in enumerate(self.scheduler.timesteps):
            timestep = t.expand(1)
            with self.transformer.cache_context("cond"):
                prediction = velocity(timestep, captions.prompt, captions.reference)
            if guidance:
                with self.transformer.cache_context("uncond"):
                    unconditional = velocity(timestep, captions.negative_prompt, captions.negative_reference)
                prediction = unconditional + guidance_scale * (prediction - unconditional)
            latents = self.scheduler.step(prediction, t, latents, return_dict=False)[0]
            if on_step_end is not None:
                on_step_end(self, index, t, {"latents": latents})
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to float frames (F, H, W, 3) in [0, 1]."""
        vae_device = get_module_execution_device(self.vae)
        latents = latents.to(vae_device, self.vae.dtype)
        mean, inverse_std = self._latent_statistics(latents)
        latents = (latents / inverse_std.to(latents.dtype) + mean.to(latents.dtype)).to(self.vae.dtype)
        video = self.vae.decode(latents, return_dict=False)[0]
        return self.video_processor.postprocess_video(video, output_type="np")[0]
