"""The RIFE weight presets: ``full`` is the published ``flownet.pkl``, ``tiny`` a seeded random
IFNet written in the same file layout, so both go through one loading path."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from models.presets import Preset, make_tiny
from models.rife.ifnet import IFNet
from models.rife.interpolate import DEFAULT_BATCH_SIZE, RifeInterpolator

# Where the CogVideo demo gets its RIFE weights (one file, an HDv3 IFNet state dict).
REPO_ID = "AlexWortega/RIFE"
WEIGHTS_FILE = "flownet.pkl"
# The published file was saved from a DistributedDataParallel wrapper, which prefixes every key.
DDP_PREFIX = "module."
SEED = 0


def build_tiny(directory: Path) -> None:
    """The tiny preset's repo: random weights of the real architecture, saved as the public file is
    (``module.``-prefixed keys), so the tiny preset exercises the full preset's loader."""
    directory.mkdir(parents=True, exist_ok=True)
    # A private RNG state: building weights must not reseed the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = IFNet()
    torch.save({DDP_PREFIX + key: value for key, value in model.state_dict().items()}, directory / WEIGHTS_FILE)


def locate_weights(
    preset: Preset,
    models_dir: Path,
    *,
    weights_path: Path | None = None,
    repo_id: str = REPO_ID,
    allow_download: bool = False,
) -> Path:
    """The ``flownet.pkl`` to load.

    ``full``: ``weights_path`` (the file, or a directory holding it) when given, else the file of
    ``repo_id`` in the Hugging Face cache, downloaded only if ``allow_download``. ``tiny``: the
    generated file under ``models_dir``, built on first use.
    """
    if preset == "tiny":
        return make_tiny(REPO_ID, Path(models_dir)) / WEIGHTS_FILE
    if preset != "full":
        raise ValueError(f"unknown model preset {preset!r}; expected 'tiny' or 'full'")
    if weights_path is not None:
        path = Path(weights_path)
        return path / WEIGHTS_FILE if path.is_dir() else path
    try:
        return Path(hf_hub_download(repo_id, WEIGHTS_FILE, local_files_only=not allow_download))
    except LocalEntryNotFoundError as error:
        why = "could not be downloaded" if allow_download else "downloads are not allowed here"
        raise FileNotFoundError(
            f"RIFE weights {repo_id}/{WEIGHTS_FILE} are not in the Hugging Face cache and {why}: "
            "run `openreel fetch-weights`, or set OPENREEL_RIFE_WEIGHTS to a local copy"
        ) from error


def load_ifnet(path: Path) -> IFNet:
    """An IFNet with the weights of ``path``, a (possibly ``module.``-prefixed) state dict file."""
    # A .pkl is a pickle, and unpickling can run arbitrary code. A state dict is only tensors in
    # a dict, which the weights-only unpickler rebuilds without executing anything; a file that
    # needs more than that is refused instead of trusted.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a RIFE state dict")
    # Built without storage and then given the file's tensors: no random initialisation to throw
    # away, and the global RNG is left as the caller had it.
    with torch.device("meta"):
        model = IFNet()
    # strict: a renamed, missing or extra tensor means this is not the HDv3 checkpoint.
    state = {key.removeprefix(DDP_PREFIX): value for key, value in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_rife(
    preset: Preset,
    models_dir: Path,
    device: torch.device | str,
    *,
    weights_path: Path | None = None,
    repo_id: str = REPO_ID,
    allow_download: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RifeInterpolator:
    """A ready interpolator for ``preset`` on ``device`` (half precision on CUDA)."""
    path = locate_weights(
        preset, models_dir, weights_path=weights_path, repo_id=repo_id, allow_download=allow_download
    )
    device = torch.device(device)
    # fp16 halves the memory traffic of a network that is all convolutions; on CPU it is slow.
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    return RifeInterpolator(load_ifnet(path), device, dtype, batch_size=batch_size)
