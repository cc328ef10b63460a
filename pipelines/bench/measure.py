"""Stage clocks, memory peaks and the transformer's FLOPs, for ``openreel bench``."""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak resident memory of this process above a baseline, sampled every ``interval_s``.

    CPU stand-in for CUDA's ``max_memory_allocated``: torch's CPU allocator keeps no peak, and the
    process high-water mark (``ru_maxrss``) cannot be reset between stages. A sample can miss a
    peak shorter than the interval, so figures are a lower bound.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self._baseline = self._peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES

    def reset(self) -> None:
        self._baseline = self._peak = self.current()

    def peak_above_baseline(self) -> int:
        return max(self._peak, self.current()) - self._baseline

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, self.current())


@dataclass
class StageClock:
    """Seconds and peak memory per stage of one run; stages may be entered more than once.

    On CUDA every boundary synchronises, so a stage's time is its GPU work, not the time to
    queue it; the figures are the peak bytes allocated by torch during the stage. On CPU the
    figures are ``RssSampler``'s.
    """

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)
    peak_bytes: dict[str, int] = field(default_factory=dict)
    step_seconds: list[float] = field(default_factory=list)
    _stage: str | None = None
    _started: float = 0.0
    _last_step: float = 0.0
    _rss: RssSampler | None = None

    def __post_init__(self) -> None:
        if self.device.type != "cuda":
            self._rss = RssSampler()

    @property
    def memory_metric(self) -> str:
        return "cuda_max_memory_allocated" if self._rss is None else "rss_sampled_peak_above_stage_start"

    def begin(self, stage: str) -> None:
        self.end()
        self._sync()
        if self._rss is None:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._rss.reset()
        self._stage, self._started = stage, time.perf_counter()
        self._last_step = self._started

    def step(self) -> None:
        """A denoising step ended (called from the step callback)."""
        self._sync()
        now = time.perf_counter()
        self.step_seconds.append(now - self._last_step)
        self._last_step = now

    def end(self) -> None:
        if self._stage is None:
            return
        self._sync()
        elapsed = time.perf_counter() - self._started
        peak = torch.cuda.max_memory_allocated(self.device) if self._rss is None else self._rss.peak_above_baseline()
        self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + elapsed
        self.peak_bytes[self._stage] = max(self.peak_bytes.get(self._stage, 0), peak)
        self._stage = None

    def close(self) -> None:
        self.end()
        if self._rss is not None:
            self._rss.close()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def medians(clocks: list[StageClock]) -> dict[str, dict[str, float]]:
    """Per stage: median seconds and the largest peak over the runs."""
    stages = dict.fromkeys(stage for clock in clocks for stage in clock.seconds)
    return {
        stage: {
            "median_s": statistics.median(clock.seconds.get(stage, 0.0) for clock in clocks),
            "peak_bytes": max(clock.peak_bytes.get(stage, 0) for clock in clocks),
        }
        for stage in stages
    }


def per_token_linear_params(transformer: torch.nn.Module) -> int:
    """Weights of the linear layers every token passes through in the transformer blocks:
    attention projections and feed-forward. The AdaLN projections (``norm*`` modules) act once
    per sample on the time embedding, not per token, so they are left out."""
    total = 0
    for block in transformer.transformer_blocks:
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear) and not name.startswith("norm"):
                total += module.weight.numel()
    return total


@dataclass(frozen=True)
class TransformerFlops:
    """FLOPs of one CogVideoX transformer call (one denoising step) over a batch.

    per call = batch * (2 * P * L + layers * 4 * L^2 * d)
      P: per-token linear weights of the blocks (``per_token_linear_params``; 12 * d^2 per block)
      L: tokens = text tokens + latent frames * (height / 8 / patch) * (width / 8 / patch)
      d: attention width (heads x head dim)
      2 * P * L: one multiply-add per weight and token; 4 * L^2 * d: Q K^T and the attention-
      weighted sum of V, each L^2 * d multiply-adds over the joint text + video sequence.
      batch: 2 with classifier-free guidance (both passes in one batch), else 1.
    Embeddings, norms, activations and the AdaLN projections are left out (under 1 % at 5B).
    """

    params: int
    tokens: int
    width: int
    layers: int
    batch: int

    @classmethod
    def for_call(
        cls, transformer: torch.nn.Module, frames: int, height: int, width: int, cfg: bool
    ) -> TransformerFlops:
        config = transformer.config
        latent_frames = (frames - 1) // config.temporal_compression_ratio + 1
        patches = (height // 8 // config.patch_size) * (width // 8 // config.patch_size)
        return cls(
            params=per_token_linear_params(transformer),
            tokens=config.max_text_seq_length + latent_frames * patches,
            width=config.num_attention_heads * config.attention_head_dim,
            layers=config.num_layers,
            batch=2 if cfg else 1,
        )

    @property
    def linear(self) -> int:
        return self.batch * 2 * self.params * self.tokens

    @property
    def attention(self) -> int:
        return self.batch * self.layers * 4 * self.tokens**2 * self.width

    @property
    def per_step(self) -> int:
        return self.linear + self.attention
