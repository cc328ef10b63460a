"""Input files made inside the tests: clips, pictures and LoRAs, as bytes or data: URIs."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig, get_peft_model_state_dict
from PIL import Image
from transformers import CLIPTextModel

from models.tiny.animatediff import UNET_CONFIG, text_encoder_config
from models.tiny.cogvideox import TRANSFORMER_CONFIG
from models.tiny.tokenizers import clip_tokenizer
from workers.outputs import encode_mp4


def data_uri(content: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


def gradient_frames(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """uint8 (count, H, W, 3) frames with structure (a moving gradient plus noise), so crops,
    resampling and encoding show up in the pixels."""
    width, height = size
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    frames = [
        np.clip((x + y) / 2 + 40 * np.sin(index / 3) + rng.normal(0, 8, (height, width, 3)), 0, 255)
        for index in range(count)
    ]
    return np.stack(frames).astype(np.uint8)


def mp4_bytes(frames: np.ndarray, fps: int) -> bytes:
    """The frames as an H.264 MP4, encoded by the worker's own output writer."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "clip.mp4"
        encode_mp4(frames, fps, path)
        return path.read_bytes()


def png_bytes(size: tuple[int, int], seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient_frames(1, size, seed)[0]).save(buffer, "PNG")
    return buffer.getvalue()


def lora_bytes(seed: int = 0, strength: float = 20.0, alpha: int = 4, **transformer_overrides: object) -> bytes:
    """A real diffusers LoRA file (peft adapter saved with ``save_lora_weights``) for the tiny
    CogVideoX transformer, or for one with ``transformer_overrides`` (another model).

    Random non-zero A and B (``init_lora_weights=False``), B scaled by ``strength`` so its effect
    survives the tiny model's VAE decode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = CogVideoXTransformer3DModel(**{**TRANSFORMER_CONFIG, **transformer_overrides})
        targets = ["to_q", "to_k", "to_v", "to_out.0"]
        config = LoraConfig(r=4, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
        transformer.add_adapter(config)
    layers = {
        key: value * strength if "lora_B" in key else value
        for key, value in get_peft_model_state_dict(transformer).items()
    }
    with tempfile.TemporaryDirectory() as directory:
        CogVideoXPipeline.save_lora_weights(
            directory, transformer_lora_layers=layers, transformer_lora_adapter_metadata=config.to_dict()
        )
        return (Path(directory) / "pytorch_lora_weights.safetensors").read_bytes()


def sd_lora_bytes(seed: int = 0, strength: float = 20.0, text_encoder: bool = True) -> bytes:
    """A diffusers LoRA file for the tiny AnimateDiff base (its SD1.5 UNet's attention, and with
    ``text_encoder`` its CLIP's), built and scaled like ``lora_bytes``."""
    def adapted(model: torch.nn.Module, targets: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
        config = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
        model.add_adapter(config)
        layers = get_peft_model_state_dict(model)
        # Saved as trainers save it: loaders build layers from this, with a zero B where the file has none.
        metadata = {**config.to_dict(), "init_lora_weights": True}
        return {key: value * strength if "lora_B" in key else value for key, value in layers.items()}, metadata

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet_layers, unet_config = adapted(UNet2DConditionModel(**UNET_CONFIG), ["to_q", "to_k", "to_v", "to_out.0"])
        text_layers, text_config = adapted(
            CLIPTextModel(text_encoder_config(clip_tokenizer())), ["q_proj", "k_proj", "v_proj", "out_proj"]
        )
    texts = dict(text_encoder_lora_layers=text_layers, text_encoder_lora_adapter_metadata=text_config)
    with tempfile.TemporaryDirectory() as directory:
        StableDiffusionPipeline.save_lora_weights(
            directory,
            unet_lora_layers=unet_layers,
            unet_lora_adapter_metadata=unet_config,
            **(texts if text_encoder else {}),
        )
        return (Path(directory) / "pytorch_lora_weights.safetensors").read_bytes()
