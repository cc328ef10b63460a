"""``enable_safety_checker``: an image safety classifier run on frames sampled from the output.

diffusers' ``StableDiffusionSafetyChecker`` (CLIP ViT-L/14 image embeddings compared with
concept embeddings and thresholds) judges single images, so a video is judged by a few of its
frames spread over its length; one flagged frame flags the video.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPImageProcessor

from pipelines.video_as_prompt.pipeline import evenly_spaced

SAMPLED_FRAMES = 8

# diffusers logs a warning per flagged batch; the request's own error says it once, to the user.
logging.getLogger("diffusers.pipelines.stable_diffusion.safety_checker").setLevel(logging.ERROR)


class SafetyChecker:
    def __init__(self, location: str, device: torch.device) -> None:
        self.device = device
        self.model = StableDiffusionSafetyChecker.from_pretrained(location).to(device).eval()
        self.processor = CLIPImageProcessor.from_pretrained(location)

    @torch.no_grad()
    def flagged_frames(self, frames: np.ndarray) -> list[int]:
        """Indices of the sampled uint8 frames (F, H, W, 3) the classifier flags."""
        indices = np.unique(evenly_spaced(len(frames), min(SAMPLED_FRAMES, len(frames))))
        sample = frames[indices]
        pixels = self.processor(images=list(sample), return_tensors="pt").pixel_values
        _, flags = self.model(clip_input=pixels.to(self.device, self.model.dtype), images=sample.copy())
        return [int(index) for index, flag in zip(indices, flags) if flag]
