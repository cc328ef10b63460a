"""Tiny, random-weight stand-ins for AnimateDiff turbo's two repos: a Stable Diffusion 1.5
checkpoint (``emilianJR/epiCRealism``) and ``wangfuyun/AnimateLCM`` (motion adapter + LCM LoRA).

What shapes the inference path mirrors the real ones: the SD1.5 repo layout (PNDM scheduler
config, CLIP tokenizer with 77 positions, a VAE that downsamples 8x with SD's scaling factor, a
UNet with cross-attention down/up blocks), a motion adapter whose channels match that UNet, and
an LCM LoRA file in diffusers' layout at the repo root. Widths and depths shrink, and the motion
adapter's positional table covers 24 frames instead of 32, so a 40-frame clip needs FreeNoise's
sliding windows here just as a long clip does on the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig, get_peft_model_state_dict
from transformers import CLIPTextConfig, CLIPTextModel

from models.tiny.tokenizers import clip_tokenizer
from pipelines.animatediff import LCM_LORA_FILE

SEED = 0
TEXT_WIDTH = 32  # stands in for CLIP ViT-L/14's 768
BLOCK_CHANNELS = (8, 16)  # SD1.5: (320, 640, 1280, 1280); the motion adapter must match
MOTION_MAX_FRAMES = 24

# The scheduler config SD1.5 checkpoints ship (runwayml/stable-diffusion-v1-5 and its finetunes).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    set_alpha_to_one=False,
    steps_offset=1,
)

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=BLOCK_CHANNELS,
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_WIDTH,
    attention_head_dim=4,
    norm_num_groups=2,
)

# Four blocks keep SD's 8x downsampling, so sizes and latent shapes behave as on the real VAE.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=2,
    scaling_factor=0.18215,
)

MOTION_ADAPTER_CONFIG = dict(
    block_out_channels=BLOCK_CHANNELS,
    motion_layers_per_block=2,
    motion_norm_num_groups=2,
    motion_num_attention_heads=2,
    motion_max_seq_length=MOTION_MAX_FRAMES,
)

LCM_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def text_encoder_config(tokenizer: object) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=1000,
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        projection_dim=TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_base_pipeline() -> StableDiffusionPipeline:
    """The SD1.5 repo in memory; each module seeded on its own."""
    tokenizer = clip_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(text_encoder_config(tokenizer)).eval()
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    torch.manual_seed(SEED)
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_base(directory: Path) -> None:
    build_base_pipeline().save_pretrained(directory)


def build_animatelcm(directory: Path) -> None:
    """The motion adapter in diffusers' layout at the root, and the LCM LoRA file beside it."""
    torch.manual_seed(SEED)
    MotionAdapter(**MOTION_ADAPTER_CONFIG).save_pretrained(directory)
    torch.manual_seed(SEED + 1)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=LCM_LORA_TARGETS, init_lora_weights=False)
    unet.add_adapter(config)
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=LCM_LORA_FILE
    )
