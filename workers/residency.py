"""Which pipelines a worker keeps on its device when their weights do not all fit there.

Each endpoint's runner registers the networks its runs use. A network shared by several
pipelines (CogVideoX's text encoder and VAE, its text-to-video transformer serving video-to-video
too) is one module object and is counted and moved once. Before a run, ``acquire`` brings the
pipeline's networks to the device, first moving the least recently used other pipelines' networks
to CPU memory until the budget holds them; on CUDA that memory is pinned, so copies go at full
PCIe speed both ways. Each move is logged with its size and duration.

Networks whose family offloads them itself (``PipelineMemory``'s model or sequential offload)
are left out (``Runner.networks()`` is empty): their hooks already keep them off the GPU between
uses. On a CPU device
moves cost nothing, but the accounting is the same, so the policy can be tested there.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pipelines.memory import GIB, module_bytes

log = logging.getLogger("openreel.residency")

# Kept free for activations under the default budget: the largest peak above the weights of
# any family (AnimateDiff's 128-frame estimate; CogVideoX needs 12 GiB, Video-As-Prompt 14).
ACTIVATION_RESERVE_BYTES = 16 * GIB
MIB = 1024**2


@dataclass(frozen=True)
class Move:
    pipeline: str
    direction: Literal["in", "out"]
    """``in``: to the device; ``out``: to CPU memory."""
    nbytes: int
    seconds: float

    def describe(self, device: torch.device) -> str:
        where = f"to {device}" if self.direction == "in" else "to CPU memory"
        return f"moved {self.pipeline} {where}: {self.nbytes / MIB:.1f} MiB in {self.seconds:.3f} s"


def default_budget(device: torch.device, budget_mib: float | None) -> int | None:
    """The configured budget in bytes; else the GPU's memory less the activation reserve (half
    the GPU at least); None (no limit) on a CPU device without one."""
    if budget_mib is not None:
        return int(budget_mib * MIB)
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    return max(total - ACTIVATION_RESERVE_BYTES, total // 2)


class Residency:
    def __init__(self, device: torch.device, budget_bytes: int | None) -> None:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # tensors name their index
        self.device = device
        self.budget_bytes = budget_bytes
        self._networks: dict[str, list[torch.nn.Module]] = {}
        self._families: dict[str, str] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        """Pipelines, least recently used first."""
        self._on_device: dict[int, torch.nn.Module] = {}
        self.moves = {"in": 0, "out": 0}

    # --- registration ----------------------------------------------------------------------
    def register(self, pipeline: str, family: str, networks: list[torch.nn.Module]) -> None:
        """Track ``pipeline``'s networks, wherever they are now; the newest counts as most recent."""
        unique = list({id(network): network for network in networks}.values())
        self._networks[pipeline], self._families[pipeline] = unique, family
        self._recent[pipeline] = None
        self._recent.move_to_end(pipeline)
        for network in unique:
            if _device_of(network) == self.device:
                self._on_device[id(network)] = network

    def park_all(self) -> list[Move]:
        """Everything to CPU memory: before loading another family, so it meets an empty device."""
        return [move for pipeline in list(self._recent) if (move := self._move_out(pipeline, keep=set()))]

    # --- serving ---------------------------------------------------------------------------
    def acquire(self, pipeline: str) -> list[Move]:
        """Bring ``pipeline`` to the device, evicting the least recently used others as needed."""
        networks = self._networks.get(pipeline)
        if networks is None:
            return []  # unknown here: a runtime outside a worker registers nothing
        wanted = {id(network) for network in networks}
        missing = [network for network in networks if id(network) not in self._on_device]
        needed = sum(module_bytes(network) for network in missing)
        moves: list[Move] = []
        if self.budget_bytes is not None:
            for other in list(self._recent):
                if self.resident_bytes() + needed <= self.budget_bytes:
                    break
                if other != pipeline and (move := self._move_out(other, keep=wanted)):
                    moves.append(move)
            if self.resident_bytes() + needed > self.budget_bytes:
                log.warning(
                    "%s needs %.1f MiB on %s with %.1f MiB there, over the %.1f MiB residency budget",
                    pipeline,
                    needed / MIB,
                    self.device,
                    self.resident_bytes() / MIB,
                    self.budget_bytes / MIB,
                )
        if missing:
            moves.append(self._transfer(pipeline, missing, "in"))
        self._recent.move_to_end(pipeline)
        return moves

    # --- what the worker publishes ---------------------------------------------------------
    def resident_bytes(self) -> int:
        return sum(module_bytes(network) for network in list(self._on_device.values()))

    def is_resident(self, pipeline: str) -> bool:
        """A pipeline with nothing to move (its family offloads by itself) always is."""
        return all(id(network) in self._on_device for network in self._networks[pipeline])

    def resident_families(self) -> set[str]:
        return {self._families[p] for p in list(self._networks) if self.is_resident(p)}

    def report(self) -> dict[str, Any]:
        """For the worker registry (``/health``, ``openreel status``): safe from the heartbeat thread."""
        return {
            "resident": sorted(p for p in list(self._networks) if self.is_resident(p)),
            "resident_bytes": self.resident_bytes(),
            "residency_budget_bytes": self.budget_bytes,
            "moves_in": self.moves["in"],
            "moves_out": self.moves["out"],
        }

    # --- moving ----------------------------------------------------------------------------
    def _move_out(self, pipeline: str, keep: set[int]) -> Move | None:
        leaving = [n for n in self._networks[pipeline] if id(n) in self._on_device and id(n) not in keep]
        return self._transfer(pipeline, leaving, "out") if leaving else None

    def _transfer(self, pipeline: str, networks: list[torch.nn.Module], direction: Literal["in", "out"]) -> Move:
        started = time.perf_counter()
        for network in networks:
            if direction == "in":
                _place(network, self.device, pin=False)
                self._on_device[id(network)] = network
            else:
                _place(network, torch.device("cpu"), pin=self.device.type == "cuda")
                del self._on_device[id(network)]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the copies are asynchronous; time them whole
        move = Move(pipeline, direction, sum(map(module_bytes, networks)), time.perf_counter() - started)
        self.moves[direction] += 1
        log.info("%s", move.describe(self.device))
        return move


def _device_of(network: torch.nn.Module) -> torch.device | None:
    for tensor in network.parameters():
        return tensor.device
    return None


def _place(network: torch.nn.Module, device: torch.device, *, pin: bool) -> None:
    """Move every parameter and buffer of ``network`` in place, so pipelines, LoRA adapters and
    anything else holding the module see it moved. ``pin``: into page-locked CPU memory."""
    for tensor in [*network.parameters(), *network.buffers()]:
        if tensor.device == device:
            continue
        if pin:
            target = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            target.copy_(tensor.data, non_blocking=True)
        else:
            target = tensor.data.to(device, non_blocking=True)
        tensor.data = target
