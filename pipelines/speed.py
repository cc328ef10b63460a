"""How a worker's denoisers run fast: one place for every pipeline's speed options.

``SpeedPlan.from_settings`` turns the settings into what a device can do; ``accelerate`` applies
it to one denoiser once, after loading and placing it; ``plan.attention()`` wraps each
denoising call. The lossless options (fused QKV, regional compile, the attention kernel) keep
outputs within float noise of the plain model; the fast modes (fp8 matmuls, First Block Cache)
trade quality for time and are off unless asked for.

Things deliberately not here, because diffusers already does them or they cost nothing:
classifier-free guidance runs as one batch of two (the CogVideoX pipelines concatenate the
negative and positive embeddings), and the step callback (``workers.context.Progress``) reads
no tensor, so it adds no host sync. The one sync per step left is diffusers' dynamic-CFG scale
(``t.item()`` on the timestep), which waits only for work already queued.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from openreel.settings import Settings

# Fastest first for head dim 64 on Hopper; sdpa_kernel skips a backend that cannot run a call.
AUTO_ATTENTION = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)
NAMED_ATTENTION = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper have float8 tensor cores


@dataclass(frozen=True)
class SpeedPlan:
    compile: bool
    fuse_qkv: bool
    attention: tuple[SDPBackend, ...] = ()
    """Kernels allowed for scaled-dot-product attention, in priority order; empty: torch's choice."""
    fp8: bool = False
    step_cache_threshold: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, device: torch.device) -> SpeedPlan:
        cuda = device.type == "cuda"
        if settings.fp8_compute:
            _check_fp8(device)
        if not cuda:
            attention: tuple[SDPBackend, ...] = ()
        elif settings.attention_backend == "auto":
            attention = AUTO_ATTENTION
        else:
            attention = (NAMED_ATTENTION[settings.attention_backend],)
        return cls(
            compile=settings.compile == "on" or (settings.compile == "auto" and cuda),
            fuse_qkv=settings.fuse_qkv,
            attention=attention,
            fp8=settings.fp8_compute,
            step_cache_threshold=settings.step_cache_threshold,
        )

    @property
    def lossless(self) -> bool:
        return not self.fp8 and self.step_cache_threshold == 0

    def describe(self) -> str:
        """One line for the worker's and each request's logs."""
        parts = [
            "regional compile" if self.compile else "eager",
            "fused QKV" if self.fuse_qkv else "separate QKV",
            "attention " + ("/".join(b.name.lower() for b in self.attention) if self.attention else "torch default"),
        ]
        if self.fp8:
            parts.append("fp8 matmuls (lossy)")
        if self.step_cache_threshold:
            parts.append(f"first block cache {self.step_cache_threshold:g} (lossy)")
        return ", ".join(parts)

    def attention_context(self) -> AbstractContextManager[None]:
        """Around each denoising call: restricts attention to the plan's kernels."""
        if not self.attention:
            return nullcontext()
        return sdpa_kernel(list(self.attention), set_priority=True)


def accelerate(denoiser: torch.nn.Module, plan: SpeedPlan) -> list[str]:
    """Apply ``plan`` to ``denoiser`` in place, once, after it is on its device. Returns what was
    done, for the worker's log.

    Order matters: QKV fusion replaces projection layers, so it precedes fp8 (which converts
    linear layers); the cache installs hooks on the blocks, which compile must see to trace them.
    """
    done: list[str] = []
    if plan.fuse_qkv and hasattr(denoiser, "fuse_qkv_projections"):
        denoiser.fuse_qkv_projections()
        done.append("fused QKV projections")
    if plan.fp8:
        done.append(_quantize_fp8(denoiser))
    if plan.step_cache_threshold:
        from diffusers.hooks import FirstBlockCacheConfig

        # enable_cache (not apply_first_block_cache) also refreshes the model's hook registry,
        # which is stale when the model ran before.
        denoiser.enable_cache(FirstBlockCacheConfig(threshold=plan.step_cache_threshold))
        done.append(f"first block cache, threshold {plan.step_cache_threshold:g}")
    if plan.compile:
        blocks = repeated_blocks(denoiser)
        for block in blocks:
            block.compile()
        done.append(f"compiled {len(blocks)} {type(blocks[0]).__name__} blocks" if blocks else "nothing to compile")
    return done


@contextmanager
def separate_qkv(denoiser: torch.nn.Module) -> Iterator[None]:
    """Run ``denoiser`` with its unfused attention for the duration.

    LoRA adapters wrap the separate query, key and value layers, which the fused processor never
    calls, so a request with a LoRA must use them. Fusion keeps those layers (the fused copy costs
    a third of the attention weights again), so switching is only a change of processors.
    """
    unfused = getattr(denoiser, "original_attn_processors", None)
    if not unfused:
        yield
        return
    fused = denoiser.attn_processors
    # set_attn_processor empties the dict it is given: the model's own copy must survive for the
    # next LoRA request.
    denoiser.set_attn_processor(dict(unfused))
    try:
        yield
    finally:
        denoiser.set_attn_processor(fused)


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks a transformer repeats (the modules of its longest uniform ``ModuleList``):
    compiling each reuses one graph for all of them, so compile time is that of one block."""
    best: list[torch.nn.Module] = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            if len({type(child) for child in module}) == 1:
                best = list(module)
    return best if len(best) > 1 else []


def _check_fp8(device: torch.device) -> None:
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < FP8_MIN_CAPABILITY:
        raise RuntimeError("fp8_compute needs a CUDA GPU of compute capability 8.9 or later (Ada, Hopper)")
    if importlib.util.find_spec("torchao") is None:
        raise RuntimeError("fp8_compute needs torchao: pip install 'openreel[fp8]'")


def _quantize_fp8(denoiser: torch.nn.Module) -> str:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    # Only the per-token linear layers of the blocks: embeddings, the AdaLN projections and the
    # output head are small and the most sensitive to rounding.
    blocks = {id(m) for block in repeated_blocks(denoiser) for m in block.modules()}

    def in_blocks(module: torch.nn.Module, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and id(module) in blocks and "norm" not in name

    quantize_(denoiser, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=in_blocks)
    return "fp8 (rowwise dynamic) linear layers in the blocks"
