"""LoRA adapters on a diffusers pipeline's transformer, kept loaded between requests.

Adapters are never fused into the base weights: a disabled adapter leaves each layer computing
exactly its base output, so a request without LoRA is bit-identical whatever ran before it,
while unfusing would leave rounding residue in the weights. The last few adapters stay loaded
(least recently used goes first), so a LoRA used again is only switched on.

Only safetensors files are read: pickled checkpoints can run code when loaded.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pipelines.lora_sources import LoraFile
from workers.context import InputError

Loc = Sequence[str | int]
# diffusers' LoRA layout for a pipeline's transformer (what save_lora_weights writes).
LORA_KEY = re.compile(r"^transformer\.(?P<layer>.+)\.lora_(?P<part>[AB])\.weight$")


def read_lora(lora: LoraFile, loc: Loc) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors and diffusers' adapter metadata (rank, alpha) of a safetensors LoRA file."""
    try:
        with safe_open(str(lora.path), framework="pt") as file:
            header = file.metadata() or {}
        state_dict = load_file(str(lora.path))
        metadata = json.loads(header[LORA_ADAPTER_METADATA_KEY]) if LORA_ADAPTER_METADATA_KEY in header else None
    except (SafetensorError, OSError, ValueError):
        raise InputError(list(loc), "The file is not a LoRA in safetensors format") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise InputError(list(loc), "The LoRA's adapter metadata is not a JSON object")
    return state_dict, metadata


def check_fits(state_dict: dict[str, torch.Tensor], transformer: torch.nn.Module, model: str, loc: Loc) -> None:
    """Refuse a LoRA that would not change this transformer as trained.

    diffusers loads what it can and only warns about the rest, so a LoRA made for another model
    would otherwise run as a silent no-op or half-applied; this checks every tensor first.
    """
    if not state_dict:
        raise InputError(list(loc), "The LoRA file holds no tensors")
    layers = dict(transformer.named_modules())
    ranks: dict[str, dict[str, int]] = {}
    for key, tensor in state_dict.items():
        match = LORA_KEY.match(key)
        if match is None:
            raise InputError(
                list(loc),
                f"Not a LoRA for {model}: {key!r} is not a transformer LoRA key "
                "(expected transformer.<layer>.lora_A.weight / .lora_B.weight, as diffusers saves them)",
            )
        layer = layers.get(match["layer"])
        layer = getattr(layer, "base_layer", layer)  # a layer that already carries adapters wraps the original
        if not isinstance(layer, torch.nn.Linear):
            raise InputError(list(loc), f"Not a LoRA for {model}: {key!r} names no linear layer of its transformer")
        part = match["part"]
        expected_side = layer.in_features if part == "A" else layer.out_features
        actual_side = tensor.shape[1] if part == "A" else tensor.shape[0]
        if tensor.ndim != 2 or actual_side != expected_side:
            raise InputError(
                list(loc),
                f"Not a LoRA for {model}: {key!r} has shape {tuple(tensor.shape)}, "
                f"the layer is {layer.in_features} -> {layer.out_features}",
            )
        ranks.setdefault(match["layer"], {})[part] = tensor.shape[0] if part == "A" else tensor.shape[1]
    for layer_name, parts in ranks.items():
        if len(parts) != 2 or parts["A"] != parts["B"]:
            raise InputError(list(loc), f"Not a usable LoRA: the lora_A/lora_B pair of {layer_name!r} does not match")


class LoraAdapters:
    """The adapters loaded into one transformer, through a pipeline that owns it.

    Pipelines that share the transformer (CogVideoX text- and video-to-video) must share this
    object too: adapters live in the module, not in the pipeline.
    """

    def __init__(self, pipe: Any, model: str, max_loaded: int) -> None:
        self.pipe = pipe
        self.model = model
        self.max_loaded = max_loaded
        self.loaded: OrderedDict[str, str] = OrderedDict()  # content SHA-256 -> adapter name

    @contextmanager
    def applied(self, lora: LoraFile, scale: float, loc: Loc, log_line: Callable[[str], None]) -> Iterator[None]:
        name = self._load(lora, loc, log_line)
        self.pipe.enable_lora()
        self.pipe.set_adapters([name], [scale])
        try:
            yield
        finally:
            self.pipe.disable_lora()
            self._evict()

    def _load(self, lora: LoraFile, loc: Loc, log_line: Callable[[str], None]) -> str:
        field = ".".join(str(part) for part in loc)
        name = self.loaded.get(lora.sha256)
        if name is not None:
            self.loaded.move_to_end(lora.sha256)
            log_line(f"{field}: LoRA {lora.sha256[:12]} already loaded")
            return name
        state_dict, metadata = read_lora(lora, loc)
        check_fits(state_dict, self.pipe.transformer, self.model, loc)
        name = f"lora-{lora.sha256[:16]}"
        try:
            # The CogVideoX loader's own entry point: unlike load_lora_weights given tensors, it
            # takes the file's metadata, which carries the alpha the LoRA was trained with.
            self.pipe.load_lora_into_transformer(
                state_dict, transformer=self.pipe.transformer, adapter_name=name, metadata=metadata, _pipeline=self.pipe
            )
        except (ValueError, TypeError, RuntimeError, KeyError) as error:
            if name in getattr(self.pipe.transformer, "peft_config", {}):
                self.pipe.delete_adapters([name])
            raise InputError(list(loc), f"The LoRA could not be loaded into {self.model}: {error}") from None
        self.loaded[lora.sha256] = name
        log_line(f"{field}: LoRA {lora.sha256[:12]} loaded {lora.source} ({len(state_dict)} tensors)")
        return name

    def _evict(self) -> None:
        evicted = False
        while len(self.loaded) > self.max_loaded:
            _, name = self.loaded.popitem(last=False)
            self.pipe.delete_adapters([name])
            evicted = True
        if evicted and not self.loaded:
            # Also drop the now empty adapter wrappers around each layer.
            self.pipe.unload_lora_weights()
