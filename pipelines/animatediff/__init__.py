"""AnimateDiff video-to-video "turbo": an SD1.5 checkpoint animated by AnimateLCM (torch-free; the
runner imports torch)."""

from openreel.settings import Settings

# The Stable Diffusion 1.5 finetune of the full preset; OPENREEL_ANIMATEDIFF_BASE_MODEL swaps it.
DEFAULT_BASE_REPO = Settings.model_fields["animatediff_base_model"].default
# What the pipeline loads of an SD1.5 repo in diffusers layout (no safety checker, no fp16 copies).
BASE_FILES = (
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)

# AnimateLCM: a motion adapter (diffusers layout at the repo root) distilled for few-step LCM
# sampling, and the LCM LoRA for the SD1.5 UNet trained with it.
ANIMATELCM_REPO = "wangfuyun/AnimateLCM"
LCM_LORA_FILE = "AnimateLCM_sd15_t2v_lora.safetensors"
ANIMATELCM_FILES = ("config.json", "diffusion_pytorch_model.safetensors", LCM_LORA_FILE)
