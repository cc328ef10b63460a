"""Tiny, random-weight ``ByteDance/Video-As-Prompt-Wan2.1-14B``: the published repo's layout.

Same folders and classes as the real repo (UMT5 text encoder and tokenizer, CLIP vision image
encoder and processor, Wan VAE, UniPC flow scheduler, the Mixture-of-Transformers transformer)
and the same ``model_index.json`` names. What shapes the code path is kept: 36 input channels
(16 latent + 4 mask + 16 first-frame condition), image cross-attention with its own K/V
projections, 512 text tokens, 3 blocks of which two carry the reference expert and one does
not, the VAE's 4x temporal and 8x spatial compression. Only widths and depths shrink.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from models.tiny.tokenizers import t5_tokenizer
from models.video_as_prompt import WanTransformer3DMOTModel

SEED = 0
TEXT_TOKENS = 512
TEXT_WIDTH = 32  # stands in for umt5-xxl's 4096
CLIP_WIDTH = 8  # stands in for the ViT-H/14 image encoder's 1280

TEXT_ENCODER_CONFIG = dict(
    vocab_size=1000,
    d_model=TEXT_WIDTH,
    d_kv=8,
    d_ff=37,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

IMAGE_ENCODER_CONFIG = dict(
    hidden_size=CLIP_WIDTH,
    projection_dim=CLIP_WIDTH,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    intermediate_size=16,
    patch_size=8,
)

# Wan2.1-I2V-14B: 40 heads x 128, 40 layers, ffn 13824, image_dim 1280, added_kv_proj_dim 5120
# (= the inner width). Head dim 12 is the smallest the 3D rotary split accepts with even parts.
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=36,
    out_channels=16,
    text_dim=TEXT_WIDTH,
    freq_dim=256,
    ffn_dim=32,
    num_layers=3,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=CLIP_WIDTH,
    added_kv_proj_dim=24,
    rope_max_seq_len=1024,
    block_idx_with_mot_ref=[0, 2],
)

VAE_CONFIG = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])

# Wan2.1-I2V-14B-480P-Diffusers' scheduler (480p models use flow_shift 3.0).
SCHEDULER_CONFIG = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
)

# As the published model_index.json names them; the transformer is loaded explicitly.
MODEL_INDEX = {
    "_class_name": "WanImageToVideoMOTPipeline",
    "image_encoder": ["transformers", "CLIPVisionModel"],
    "image_processor": ["transformers", "CLIPImageProcessor"],
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "WanTransformer3DMOTModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
}


def build_transformer(**overrides: object) -> WanTransformer3DMOTModel:
    torch.manual_seed(SEED)
    return WanTransformer3DMOTModel(**{**TRANSFORMER_CONFIG, **overrides}).eval()


def build(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    UMT5EncoderModel(UMT5Config(**TEXT_ENCODER_CONFIG)).eval().save_pretrained(directory / "text_encoder")
    tokenizer = t5_tokenizer(model_max_length=TEXT_TOKENS)
    if len(tokenizer) > TEXT_ENCODER_CONFIG["vocab_size"]:
        raise AssertionError("tiny tokenizer ids must stay below the text encoder's vocab_size")
    tokenizer.save_pretrained(directory / "tokenizer")
    torch.manual_seed(SEED)
    CLIPVisionModel(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG)).eval().save_pretrained(directory / "image_encoder")
    CLIPImageProcessor(crop_size=32, size=32).save_pretrained(directory / "image_processor")
    torch.manual_seed(SEED)
    AutoencoderKLWan(**VAE_CONFIG).eval().save_pretrained(directory / "vae")
    UniPCMultistepScheduler(**SCHEDULER_CONFIG).save_pretrained(directory / "scheduler")
    build_transformer().save_pretrained(directory / "transformer")
    index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__}
    (directory / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
