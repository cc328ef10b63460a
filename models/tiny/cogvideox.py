"""Tiny, random-weight ``THUDM/CogVideoX-5b`` and ``THUDM/CogVideoX-5b-I2V``: same components,
classes and layout.

Everything that shapes the inference code path mirrors the real 5B repos: rotary (not
sinusoidal) positional embeddings, 16 latent channels, 226 text tokens, VAE compression 4x
in time and 8x in space with scaling factor 0.7, the repo's DDIM scheduler settings. Only
widths and depths shrink, so a 49-frame 720x480 request runs on a laptop CPU.

The I2V repo keeps the real one's constraint: learned positional embeddings that exist for one
frame size only (and twice the input channels, for the image latents). That native size is
64x48 here instead of 720x480, so tests that must run at it stay fast.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
)
from transformers import T5Config, T5EncoderModel

from models.tiny.tokenizers import t5_tokenizer

SEED = 0

MAX_TEXT_TOKENS = 226  # the real tokenizer pads every prompt to this, and the transformer expects it
TEXT_WIDTH = 32  # stands in for t5-v1_1-xxl's 4096
LATENT_CHANNELS = 16

# THUDM/CogVideoX-5b scheduler/scheduler_config.json.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    rescale_betas_zero_snr=True,
    snr_shift_scale=1.0,
)

# t5-v1_1-xxl's shape (gated GELU, untied head, 32 relative-position buckets) at tiny width.
TEXT_ENCODER_CONFIG = dict(
    vocab_size=1000,
    d_model=TEXT_WIDTH,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

# The real 5B: 48 heads x 64, 42 layers, time embedding 512, text width 4096. Head dim 16 is
# the smallest the 3D RoPE split (temporal / height / width) accepts.
TRANSFORMER_CONFIG = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    time_embed_dim=32,
    text_embed_dim=TEXT_WIDTH,
    num_layers=2,
    sample_width=90,  # 720 px / 8: the RoPE crop grid is computed against this base size
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=MAX_TEXT_TOKENS,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)

# THUDM/CogVideoX-5b-I2V's transformer differs from T2V's only here: the image latents are
# concatenated to the noise on channels, and positions are learned for one latent grid.
I2V_TRANSFORMER_CONFIG = dict(
    TRANSFORMER_CONFIG,
    in_channels=2 * LATENT_CHANNELS,
    use_learned_positional_embeddings=True,
    sample_width=8,  # 64x48 px, the tiny I2V's only size (the real one's is 90x60: 720x480)
    sample_height=6,
)

# The real VAE: block channels (128, 256, 256, 512), 3 layers per block, 32 norm groups. Four
# blocks keep the 8x spatial compression; the channel ratios are kept at 1/16 width.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    block_out_channels=(8, 16, 16, 32),
    latent_channels=LATENT_CHANNELS,
    layers_per_block=1,
    norm_num_groups=2,
    temporal_compression_ratio=4,
    sample_height=480,
    sample_width=720,
    scaling_factor=0.7,
    use_quant_conv=False,
    use_post_quant_conv=False,
)


def build_pipeline(
    pipeline_class: type[CogVideoXPipeline] | type[CogVideoXImageToVideoPipeline] = CogVideoXPipeline,
    transformer_config: dict | None = None,
) -> CogVideoXPipeline | CogVideoXImageToVideoPipeline:
    """A tiny pipeline in memory; each module is seeded on its own so changing one config
    leaves the weights of the others as they were (the two repos share text encoder and VAE,
    as the real ones do)."""
    torch.manual_seed(SEED)
    text_encoder = T5EncoderModel(T5Config(**TEXT_ENCODER_CONFIG)).eval()
    torch.manual_seed(SEED)
    transformer = CogVideoXTransformer3DModel(**(transformer_config or TRANSFORMER_CONFIG)).eval()
    torch.manual_seed(SEED)
    vae = AutoencoderKLCogVideoX(**VAE_CONFIG).eval()
    tokenizer = t5_tokenizer(model_max_length=MAX_TEXT_TOKENS)
    if len(tokenizer) > TEXT_ENCODER_CONFIG["vocab_size"]:
        raise AssertionError("tiny tokenizer ids must stay below the text encoder's vocab_size")
    return pipeline_class(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(**SCHEDULER_CONFIG),
    )


def build(directory: Path) -> None:
    """Write the repo layout (``model_index.json`` + one folder per component) to ``directory``."""
    build_pipeline().save_pretrained(directory)


def build_i2v(directory: Path) -> None:
    """The I2V repo, complete like the real one although workers load only its transformer."""
    build_pipeline(CogVideoXImageToVideoPipeline, I2V_TRANSFORMER_CONFIG).save_pretrained(directory)
