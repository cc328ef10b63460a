"""Which torch device and dtype a worker's pipelines run on (``OPENREEL_DEVICE``)."""

from __future__ import annotations

import torch


def resolve_device(spec: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` as a torch device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {spec!r}; expected auto, cpu, cuda or cuda:N")
    return device


def dtype_for(device: torch.device) -> torch.dtype:
    # bf16 is what the large video models were trained and published in; CPUs run it slowly or not at all.
    return torch.bfloat16 if device.type == "cuda" else torch.float32
