"""The full-size CogVideoX-5B architecture with random weights, for timing without a download.

A matmul takes as long whatever numbers it multiplies, so random weights time exactly like the
published ones; only the outputs are noise. The configs are those of the ``THUDM/CogVideoX-5b``
repo (transformer, VAE, t5-v1_1-xxl text encoder, scheduler); the tiny preset
(``models.tiny.cogvideox``) keeps their layout at small widths. The tokenizer is the tiny one:
tokenizing a prompt costs microseconds in either.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
from transformers import T5Config, T5EncoderModel

from models.tiny.cogvideox import (
    MAX_TEXT_TOKENS,
    SCHEDULER_CONFIG,
    TEXT_ENCODER_CONFIG,
    TRANSFORMER_CONFIG,
    VAE_CONFIG,
)
from models.tiny.tokenizers import t5_tokenizer

# google/t5-v1_1-xxl's encoder, the repo's text_encoder/config.json.
TEXT_ENCODER_CONFIG_5B = dict(
    TEXT_ENCODER_CONFIG,
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
)

# transformer/config.json: the tiny layout at 48 heads x 64 = 3072 wide, 42 blocks.
TRANSFORMER_CONFIG_5B = dict(
    TRANSFORMER_CONFIG,
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=42,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
)

# vae/config.json: the tiny layout at full width.
VAE_CONFIG_5B = dict(
    VAE_CONFIG,
    block_out_channels=(128, 256, 256, 512),
    latent_channels=16,
    layers_per_block=3,
    norm_num_groups=32,
)


def cogvideox_5b_modules(device: torch.device | str, dtype: torch.dtype) -> dict[str, object]:
    """The pipeline's components by argument name, built on ``device`` (initialising 10 B
    parameters on a GPU takes seconds, on a CPU minutes) and cast to ``dtype`` one model at a
    time, so the float32 copy of only one model exists at once."""
    torch.manual_seed(0)
    with torch.device(device):
        text_encoder = T5EncoderModel(T5Config(**TEXT_ENCODER_CONFIG_5B)).to(dtype).eval()
        transformer = CogVideoXTransformer3DModel(**TRANSFORMER_CONFIG_5B).to(dtype).eval()
        vae = AutoencoderKLCogVideoX(**VAE_CONFIG_5B).to(dtype).eval()
    return dict(
        tokenizer=t5_tokenizer(model_max_length=MAX_TEXT_TOKENS),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(**SCHEDULER_CONFIG),
    )
