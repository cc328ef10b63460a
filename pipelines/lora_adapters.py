"""LoRA adapters on a diffusers pipeline's networks, kept loaded between requests.

Which networks take LoRAs is the pipeline's own ``_lora_loadable_modules``: the transformer of
CogVideoX, the UNet and text encoder of Stable Diffusion (AnimateDiff). SD LoRAs mostly come in
the kohya / A1111 layout (``lora_unet_...``), which diffusers' SD loader converts first.

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
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
from diffusers.utils import convert_unet_state_dict_to_peft
from diffusers.utils.state_dict_utils import DIFFUSERS_OLD_TO_PEFT, convert_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pipelines.lora_sources import LoraFile
from workers.context import InputError

Loc = Sequence[str | int]
# diffusers' LoRA layouts: ``<network>.<layer>.lora_A/lora_B.weight`` as save_lora_weights writes
# them, and ``.lora.down/up`` or ``.lora_linear_layer.down/up`` as its kohya conversion does.
LORA_KEY = re.compile(
    r"^(?P<network>[a-z_]+)\.(?P<layer>.+?)\.(?:lora_(?P<part>[AB])|lora(?:_linear_layer)?\.(?P<direction>down|up))"
    r"\.weight$"
)


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


def lora_networks(pipe: Any) -> dict[str, torch.nn.Module]:
    """The networks of ``pipe`` a LoRA may patch, by the key prefix that addresses them."""
    names = pipe._lora_loadable_modules
    return {name: getattr(pipe, name) for name in names if getattr(pipe, name, None) is not None}


def _sides(layer: torch.nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a layer LoRA can adapt: linear, or 2-D convolution (kohya's LoCon)."""
    if isinstance(layer, torch.nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, torch.nn.Conv2d):
        return layer.in_channels, layer.out_channels
    return None


def check_fits(state_dict: dict[str, torch.Tensor], networks: dict[str, torch.nn.Module], model: str, loc: Loc) -> None:
    """Refuse a LoRA that would not change these networks as trained.

    diffusers loads what it can and only warns about the rest, so a LoRA made for another model
    would otherwise run as a silent no-op or half-applied; this checks every tensor first.
    """
    if not state_dict:
        raise InputError(list(loc), "The LoRA file holds no tensors")
    layers = {name: dict(network.named_modules()) for name, network in networks.items()}
    ranks: dict[str, dict[str, int]] = {}
    for key, tensor in state_dict.items():
        match = LORA_KEY.match(key)
        if match is None or match["network"] not in layers:
            names = "/".join(networks)
            raise InputError(
                list(loc),
                f"Not a LoRA for {model}: {key!r} is not a {names} LoRA key "
                f"(expected {names}.<layer>.lora_A.weight / .lora_B.weight, as diffusers saves them)",
            )
        network = match["network"]
        layer = layers[network].get(match["layer"])
        layer = getattr(layer, "base_layer", layer)  # a layer that already carries adapters wraps the original
        sides = _sides(layer)
        if sides is None:
            raise InputError(
                list(loc), f"Not a LoRA for {model}: {key!r} names no linear layer or convolution of its {network}"
            )
        part = match["part"] or ("A" if match["direction"] == "down" else "B")
        expected_side = sides[0] if part == "A" else sides[1]
        actual_side = tensor.shape[1] if part == "A" else tensor.shape[0]
        if tensor.ndim != (2 if isinstance(layer, torch.nn.Linear) else 4) or actual_side != expected_side:
            raise InputError(
                list(loc),
                f"Not a LoRA for {model}: {key!r} has shape {tuple(tensor.shape)}, the layer is {sides[0]} -> {sides[1]}",
            )
        ranks.setdefault(f"{network}.{match['layer']}", {})[part] = tensor.shape[0] if part == "A" else tensor.shape[1]
    for layer_name, parts in ranks.items():
        if len(parts) != 2 or parts["A"] != parts["B"]:
            raise InputError(list(loc), f"Not a usable LoRA: the lora_A/lora_B pair of {layer_name!r} does not match")


@dataclass(frozen=True)
class RequestedLora:
    lora: LoraFile
    scale: float
    loc: Loc
    """Where the request named it (``["loras", i, "path"]``), for its 422s and log lines."""


class LoraAdapters:
    """The adapters loaded into one pipeline's networks, through a pipeline that owns them.

    Pipelines that share those networks (CogVideoX text- and video-to-video) must share this
    object too: adapters live in the modules, not in the pipeline.
    """

    def __init__(self, pipe: Any, model: str, max_loaded: int) -> None:
        self.pipe = pipe
        self.model = model
        self.max_loaded = max_loaded
        self.networks = lora_networks(pipe)
        self.loaded: OrderedDict[str, str] = OrderedDict()  # content SHA-256 -> adapter name

    @contextmanager
    def applied(self, requested: Sequence[RequestedLora], log_line: Callable[[str], None]) -> Iterator[None]:
        """Every requested LoRA switched on at its scale for the ``with`` body, and all off after."""
        scales: dict[str, float] = {}
        try:
            for item in requested:
                name = self._load(item.lora, item.loc, log_line)
                scales[name] = scales.get(name, 0.0) + item.scale  # the same file twice adds up
            if scales:
                self.pipe.enable_lora()
                self.pipe.set_adapters(list(scales), list(scales.values()))
            yield
        finally:
            if scales:
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
        state_dict, alphas = self._diffusers_layout(state_dict, loc)
        check_fits(state_dict, self.networks, self.model, loc)
        name = f"lora-{lora.sha256[:16]}"
        try:
            self._load_into_networks(state_dict, alphas, None if alphas else metadata, name)
        except (ValueError, TypeError, RuntimeError, KeyError) as error:
            if any(name in getattr(network, "peft_config", {}) for network in self.networks.values()):
                self.pipe.delete_adapters([name])
            raise InputError(list(loc), f"The LoRA could not be loaded into {self.model}: {error}") from None
        self.loaded[lora.sha256] = name
        log_line(f"{field}: LoRA {lora.sha256[:12]} loaded {lora.source} ({len(state_dict)} tensors)")
        return name

    def _diffusers_layout(
        self, state_dict: dict[str, torch.Tensor], loc: Loc
    ) -> tuple[dict[str, torch.Tensor], dict[str, float] | None]:
        """SD LoRAs in the kohya / A1111 layout, converted by diffusers' SD loader, with the alphas
        their ``.alpha`` tensors carry; other families' files are taken as diffusers saves them."""
        if not isinstance(self.pipe, StableDiffusionLoraLoaderMixin):
            return state_dict, None
        try:
            state_dict, alphas = self.pipe.lora_state_dict(state_dict)
        except (ValueError, KeyError, IndexError) as error:
            raise InputError(list(loc), f"Not a LoRA for {self.model}: {error}") from None
        # The conversion names layers the old attention-processor way (attn1.processor.to_q_lora,
        # self_attn.to_q_lora); peft's names are the layers' own, which the fit check and the
        # loaders both read.
        unet = {key.removeprefix("unet."): value for key, value in state_dict.items() if key.startswith("unet.")}
        others = {key: value for key, value in state_dict.items() if not key.startswith("unet.")}
        peft_unet = {f"unet.{key}": value for key, value in convert_unet_state_dict_to_peft(unet).items()}
        others = convert_state_dict(others, DIFFUSERS_OLD_TO_PEFT)
        if not hasattr(self.pipe.text_encoder, "text_model"):
            # kohya names CLIP's layers under text_model, which transformers 5 no longer nests them in.
            others = {key.replace("text_encoder.text_model.", "text_encoder.", 1): value for key, value in others.items()}
        return {**peft_unet, **others}, alphas

    def _load_into_networks(
        self,
        state_dict: dict[str, torch.Tensor],
        alphas: dict[str, float] | None,
        metadata: dict[str, Any] | None,
        name: str,
    ) -> None:
        """Each network's keys through the family's own loader (``load_lora_into_<network>``): unlike
        load_lora_weights given tensors, those take the file's metadata, which carries the alpha
        the LoRA was trained with."""
        for network, module in self.networks.items():
            if not any(key.startswith(f"{network}.") for key in state_dict):
                continue
            arguments: dict[str, Any] = {network: module, "adapter_name": name, "metadata": metadata}
            if isinstance(self.pipe, StableDiffusionLoraLoaderMixin):
                arguments["network_alphas"] = alphas
            getattr(self.pipe, f"load_lora_into_{network}")(state_dict, _pipeline=self.pipe, **arguments)

    def _evict(self) -> None:
        evicted = False
        while len(self.loaded) > self.max_loaded:
            _, name = self.loaded.popitem(last=False)
            self.pipe.delete_adapters([name])
            evicted = True
        if evicted and not self.loaded:
            # Also drop the now empty adapter wrappers around each layer.
            self.pipe.unload_lora_weights()
