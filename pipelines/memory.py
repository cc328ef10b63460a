"""Where a worker keeps pipeline weights: all on the GPU, or offloaded to CPU memory.

``OPENREEL_MEMORY_MODE`` picks one; ``auto`` compares the GPU's memory with the weights
actually loaded plus the family's activation headroom. diffusers' offload APIs raise without
an accelerator, so on a CPU device everything simply stays where it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

GIB = 1024**3
Mode = Literal["gpu", "model_offload", "sequential_offload"]


@dataclass(frozen=True)
class MemoryPlan:
    mode: Mode
    vae_tiling: bool
    reason: str


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def plan_memory(
    mode: str,
    vae_tiling: str,
    device: torch.device,
    total_bytes: int | None,
    module_sizes: Iterable[int],
    headroom_bytes: int,
) -> MemoryPlan:
    """The mode for ``mode`` (a setting value) on ``device`` with ``total_bytes`` of memory.

    ``auto``: everything on the GPU when the weights and the headroom fit, else model offload
    when the largest model and the headroom fit, else sequential offload. VAE tiling and
    slicing (``vae_tiling=auto``) are on for CUDA wherever memory may be short: the decode of 49
    frames is the memory peak, and the headroom is that peak untiled, so a plan that keeps
    everything on the GPU decodes whole, which is faster.
    """
    sizes = list(module_sizes)
    if device.type != "cuda":
        reason = f"{device.type} device: weights stay in its memory"
        if mode in ("model_offload", "sequential_offload"):
            reason += f" (memory_mode={mode} needs a CUDA device and is ignored)"
        return MemoryPlan("gpu", vae_tiling == "on", reason)
    tiling = vae_tiling != "off"
    if mode != "auto":
        return MemoryPlan(mode, tiling, f"memory_mode={mode} as configured")  # type: ignore[arg-type]
    assert total_bytes is not None
    weights, largest = sum(sizes), max(sizes, default=0)
    figures = (
        f"{total_bytes / GIB:.1f} GiB GPU, {weights / GIB:.1f} GiB of weights (largest model "
        f"{largest / GIB:.1f} GiB), {headroom_bytes / GIB:.0f} GiB headroom"
    )
    if weights + headroom_bytes <= total_bytes:
        return MemoryPlan("gpu", vae_tiling == "on", f"auto: all on the GPU ({figures})")
    if largest + headroom_bytes <= total_bytes:
        return MemoryPlan("model_offload", tiling, f"auto: model CPU offload ({figures})")
    return MemoryPlan("sequential_offload", tiling, f"auto: sequential CPU offload, slow ({figures})")


class PipelineMemory:
    """Applies a plan to a family's modules, and before each run to the pipeline about to run."""

    def __init__(self, plan: MemoryPlan, device: torch.device) -> None:
        self.plan = plan
        self.device = device
        self._sequential_transformer: object | None = None

    @classmethod
    def for_modules(
        cls, modules: Iterable[torch.nn.Module], device: torch.device, mode: str, vae_tiling: str, headroom_bytes: int
    ) -> PipelineMemory:
        total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
        plan = plan_memory(mode, vae_tiling, device, total, map(module_bytes, modules), headroom_bytes)
        log.info("memory: %s%s", plan.reason, "; VAE tiling and slicing on" if plan.vae_tiling else "")
        return cls(plan, device)

    def place(self, modules: Iterable[torch.nn.Module], vae: Any) -> None:
        """Once, after loading (on the CPU): move everything to the device unless offloading."""
        if self.plan.mode == "gpu":
            for module in modules:
                module.to(self.device)
        if self.plan.vae_tiling:
            vae.enable_tiling()
            vae.enable_slicing()

    def movable(self, modules: Iterable[torch.nn.Module]) -> list[torch.nn.Module]:
        """What a worker's residency manager may move between the device and CPU memory: the
        modules when they live on the device, none when offload hooks already move them."""
        return list(modules) if self.plan.mode == "gpu" else []

    def prepare(self, pipe: Any) -> None:
        """Install the offload hooks of the pipeline about to run.

        Model offload chains one hook per model of a pipeline, and pipelines here share models,
        so the chain is reinstalled before every run (diffusers does the same after every call;
        the models are in CPU memory then, so it moves next to nothing). Sequential offload
        hooks belong to each module alone: only a different transformer needs them.
        """
        if self.plan.mode == "model_offload":
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.plan.mode == "sequential_offload":
            denoiser = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
            if denoiser is not self._sequential_transformer:
                pipe.enable_sequential_cpu_offload(device=self.device)
                self._sequential_transformer = denoiser


def store_fp8(module: Any, compute_dtype: torch.dtype) -> str:
    """Keep ``module``'s weights in float8_e4m3fn, upcast layer by layer to ``compute_dtype``
    when used (diffusers' layerwise casting; norms, embeddings and patch projections stay as
    they are). Halves a bf16 transformer's memory for a small cost in speed and precision.
    Returns what changed, for the worker's log."""
    before = module_bytes(module)
    module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    after = module_bytes(module)
    return (
        f"{type(module).__name__} weights stored in float8_e4m3fn, computed in {str(compute_dtype).removeprefix('torch.')}: "
        f"{before / GIB:.2f} -> {after / GIB:.2f} GiB"
    )
