"""Tiny, random-weight ``CompVis/stable-diffusion-safety-checker``: same classes and files.

A random CLIP cannot tell anything apart, so the stand-in's thresholds decide: with the
default (1.0, a cosine similarity never exceeds it) nothing is flagged; a threshold below -1
flags every image, which is how tests make the checker fire on purpose.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

SEED = 0
NEVER_FLAGS = 1.0

CLIP_CONFIG = dict(
    text_config=dict(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ),
    vision_config=dict(
        hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    ),
    projection_dim=8,
)


def build(directory: Path, threshold: float = NEVER_FLAGS) -> None:
    """Checker and processor in one folder, as the real repo keeps them."""
    torch.manual_seed(SEED)
    checker = StableDiffusionSafetyChecker(CLIPConfig(**CLIP_CONFIG)).eval()
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    checker.save_pretrained(directory)
    CLIPImageProcessor(crop_size=32, size=32).save_pretrained(directory)
