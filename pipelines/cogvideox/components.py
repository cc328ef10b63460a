"""The CogVideoX-5B weights a worker loads once and every CogVideoX runner shares.

Text encoder, tokenizer, VAE and scheduler config come from the text-to-video repo; the
image-to-video repo adds only its own transformer (its other modules are the same weights), and
video-to-video reuses the text-to-video transformer. LoRA adapters live in a transformer, so
each transformer has one ``LoraAdapters`` that every pipeline around it uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

from models.presets import resolve
from models.rife import RifeInterpolator, load_rife
from openreel.settings import Settings
from pipelines.cogvideox import I2V_REPO, T2V_REPO
from pipelines.devices import dtype_for, resolve_device
from pipelines.lora_adapters import LoraAdapters
from pipelines.lora_sources import LoraSources
from pipelines.memory import GIB, PipelineMemory
from pipelines.speed import SpeedPlan, accelerate

log = logging.getLogger(__name__)

# Peak inference memory above the weights for CogVideoX-5B at 720x480, 49 frames, VAE untiled:
# 31.75 - 19.76 GiB in the diffusers-torchao bf16 benchmark, rounded up.
ACTIVATION_HEADROOM_BYTES = 12 * GIB


@dataclass
class CogVideoXComponents:
    modules: dict[str, Any]
    """The text-to-video repo's components, by pipeline argument name."""
    location: str
    device: torch.device
    dtype: torch.dtype
    memory: PipelineMemory
    speed: SpeedPlan
    rife: RifeInterpolator
    lora_sources: LoraSources
    lora_max_loaded: int
    i2v_transformer: CogVideoXTransformer3DModel | None = None
    adapters: dict[int, LoraAdapters] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings, *, with_i2v: bool) -> CogVideoXComponents:
        device = resolve_device(settings.device)
        dtype = dtype_for(device)
        # One loading path for both presets: "tiny" only changes where the repo lives.
        location = resolve(T2V_REPO, settings.models, settings.models_dir)
        modules = dict(CogVideoXPipeline.from_pretrained(location, dtype=dtype).components)
        log.info("loaded %s from %s (%s)", T2V_REPO, location, dtype)
        i2v_transformer = None
        if with_i2v:
            i2v_location = resolve(I2V_REPO, settings.models, settings.models_dir)
            i2v_transformer = CogVideoXTransformer3DModel.from_pretrained(
                i2v_location, subfolder="transformer", dtype=dtype
            )
            log.info("loaded the %s transformer from %s", I2V_REPO, i2v_location)
        rife = load_rife(settings.models, settings.models_dir, device, weights_path=settings.rife_weights)
        return cls.assemble(settings, modules, location, device, dtype, rife, i2v_transformer)

    @classmethod
    def assemble(
        cls,
        settings: Settings,
        modules: dict[str, Any],
        location: str,
        device: torch.device,
        dtype: torch.dtype,
        rife: RifeInterpolator,
        i2v_transformer: CogVideoXTransformer3DModel | None = None,
    ) -> CogVideoXComponents:
        """Place loaded modules as the memory plan says and make them fast as the speed plan says
        (in place: the benchmark hands in modules it has just timed unchanged)."""
        networks = [m for m in (*modules.values(), i2v_transformer) if isinstance(m, torch.nn.Module)]
        memory = PipelineMemory.for_modules(
            networks, device, settings.memory_mode, settings.vae_tiling, ACTIVATION_HEADROOM_BYTES
        )
        memory.place(networks, modules["vae"])
        speed = SpeedPlan.from_settings(settings, device)
        for transformer in (modules["transformer"], i2v_transformer):
            if transformer is not None:
                log.info("speed: %s: %s", speed.describe(), "; ".join(accelerate(transformer, speed)) or "as loaded")
        return cls(
            modules=modules,
            location=location,
            device=device,
            dtype=dtype,
            memory=memory,
            speed=speed,
            rife=rife,
            lora_sources=LoraSources(settings.lora_dirs, settings.lora_hub_download),
            lora_max_loaded=settings.lora_max_loaded,
            i2v_transformer=i2v_transformer,
        )

    def scheduler(self) -> CogVideoXDPMScheduler:
        """A fresh scheduler per pipeline: schedulers keep per-run state (timesteps).

        The THUDM demo swaps the repo's DDIM for DPM with trailing spacing; fal's defaults match
        that demo.
        """
        return CogVideoXDPMScheduler.from_config(self.modules["scheduler"].config, timestep_spacing="trailing")

    def pipeline(self, pipeline_class: type, transformer: CogVideoXTransformer3DModel | None = None) -> Any:
        """A pipeline of ``pipeline_class`` over the shared modules (and ``transformer``)."""
        if transformer is None:
            transformer = self.modules["transformer"]
        own = {"scheduler": self.scheduler(), "transformer": transformer}
        pipe = pipeline_class(**{**self.modules, **own})
        # Progress goes to the request's logs through the step callback, not to stderr.
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def adapters_for(self, pipe: Any, model: str) -> LoraAdapters:
        """The one adapter set of ``pipe``'s transformer, made with the first pipeline around it."""
        key = id(pipe.transformer)
        if key not in self.adapters:
            self.adapters[key] = LoraAdapters(pipe, model, self.lora_max_loaded)
        return self.adapters[key]

    def release_cached_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
