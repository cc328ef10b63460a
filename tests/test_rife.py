"""RIFE interpolation on CPU with random weights: the weight layout of the public checkpoint, the
loaders of both presets, and frame doubling."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from models.rife import IFNet, RifeInterpolator, doubled_length, load_rife
from models.rife import weights
from models.rife.weights import DDP_PREFIX, REPO_ID, WEIGHTS_FILE, locate_weights

WIDTH = 90  # every IFBlock of the HDv3 checkpoint


def conv_unit(name: str, in_channels: int, out_channels: int) -> dict[str, tuple[int, ...]]:
    """A 3x3 Conv2d with bias followed by a per-channel PReLU, as a Sequential."""
    return {
        f"{name}.0.weight": (out_channels, in_channels, 3, 3),
        f"{name}.0.bias": (out_channels,),
        f"{name}.1.weight": (out_channels,),
    }


def upsampling_head(name: str, out_channels: int) -> dict[str, tuple[int, ...]]:
    """ConvTranspose (c -> c/2) + PReLU + ConvTranspose (c/2 -> out), 4x4 kernels; transposed
    convolution weights are stored (in, out, k, k)."""
    half = WIDTH // 2
    return {
        f"{name}.0.weight": (WIDTH, half, 4, 4),
        f"{name}.0.bias": (half,),
        f"{name}.1.weight": (half,),
        f"{name}.2.weight": (half, out_channels, 4, 4),
        f"{name}.2.bias": (out_channels,),
    }


def ifblock(name: str, in_channels: int) -> dict[str, tuple[int, ...]]:
    layout = {
        **conv_unit(f"{name}.conv0.0", in_channels, WIDTH // 2),
        **conv_unit(f"{name}.conv0.1", WIDTH // 2, WIDTH),
    }
    for residual in range(4):
        for unit in range(2):
            layout.update(conv_unit(f"{name}.convblock{residual}.{unit}", WIDTH, WIDTH))
    layout.update(upsampling_head(f"{name}.conv1", 4))  # two 2-D flows
    layout.update(upsampling_head(f"{name}.conv2", 1))  # the fusion mask
    return layout


# The published flownet.pkl without its "module." prefix: three student blocks seeing two RGB
# frames, the mask and the 4-channel flow (11), and the teacher seeing the middle frame too (14).
EXPECTED_LAYOUT = {
    **ifblock("block0", 11),
    **ifblock("block1", 11),
    **ifblock("block2", 11),
    **ifblock("block_tea", 14),
}


def random_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model() -> IFNet:
    torch.manual_seed(0)
    return IFNet()


@pytest.fixture(scope="module")
def interpolator(model: IFNet) -> RifeInterpolator:
    return RifeInterpolator(model, "cpu", torch.float32, batch_size=64)


def test_state_dict_matches_the_published_layout(model: IFNet) -> None:
    layout = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assert layout == EXPECTED_LAYOUT
    assert len(layout) == 160
    assert sum(tensor.numel() for tensor in model.state_dict().values()) == 3_038_015
    # Shapes quoted from the checkpoint itself.
    assert layout["block0.conv0.0.0.weight"] == (45, 11, 3, 3)
    assert layout["block0.conv0.1.0.weight"] == (90, 45, 3, 3)
    assert layout["block0.conv1.0.weight"] == (90, 45, 4, 4)
    assert layout["block0.conv1.2.weight"] == (45, 4, 4, 4)
    assert layout["block0.conv2.2.weight"] == (45, 1, 4, 4)


def save_published_style(model: IFNet, path: Path) -> None:
    torch.save({DDP_PREFIX + key: value for key, value in model.state_dict().items()}, path)


def test_full_preset_loads_a_prefixed_state_dict_strictly(model: IFNet, tmp_path: Path) -> None:
    save_published_style(model, tmp_path / WEIGHTS_FILE)
    expected = model.state_dict()
    # The file itself, or the directory a snapshot of the repo was downloaded into.
    for weights_path in (tmp_path / WEIGHTS_FILE, tmp_path):
        loaded = load_rife("full", tmp_path / "models", "cpu", weights_path=weights_path).model.state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def test_a_file_with_another_layout_is_refused(model: IFNet, tmp_path: Path) -> None:
    state = {DDP_PREFIX + key: value for key, value in model.state_dict().items()}
    state["module.block0.conv0.0.0.weight_renamed"] = state.pop("module.block0.conv0.0.0.weight")
    torch.save(state, tmp_path / WEIGHTS_FILE)
    with pytest.raises(RuntimeError, match="block0.conv0.0.0.weight"):
        load_rife("full", tmp_path, "cpu", weights_path=tmp_path / WEIGHTS_FILE)


def test_full_preset_never_downloads_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache and downloads are not allowed"):
        locate_weights("full", tmp_path, repo_id="openreel-tests/never-cached")

    calls = []
    monkeypatch.setattr(weights, "hf_hub_download", lambda *args, **kwargs: calls.append((args, kwargs)) or "f")
    locate_weights("full", tmp_path)
    locate_weights("full", tmp_path, allow_download=True)
    assert calls == [
        ((REPO_ID, WEIGHTS_FILE), {"local_files_only": True}),
        ((REPO_ID, WEIGHTS_FILE), {"local_files_only": False}),
    ]


def test_tiny_preset_is_the_real_architecture_in_the_published_file_layout(models_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    interpolator = load_rife("tiny", models_dir, "cpu")
    assert torch.rand(1) == before, "building the tiny weights must leave the global RNG alone"

    path = locate_weights("tiny", models_dir)
    assert path == models_dir / "tiny" / REPO_ID / WEIGHTS_FILE
    stored = torch.load(path, weights_only=True)
    assert all(key.startswith(DDP_PREFIX) for key in stored)
    weights.build_tiny(tmp_path)
    rebuilt = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert all(torch.equal(rebuilt[key], stored[key]) for key in stored), "tiny weights are seeded"
    assert {key: tuple(tensor.shape) for key, tensor in interpolator.model.state_dict().items()} == EXPECTED_LAYOUT
    assert interpolator.dtype == torch.float32


def test_doubled_length() -> None:
    assert doubled_length(49) == 97
    assert [doubled_length(count) for count in (0, 1, 2, 3)] == [0, 1, 3, 5]


def test_49_frames_become_97_with_the_originals_at_even_indices(interpolator: RifeInterpolator) -> None:
    frames = random_frames(49, 48, 64)
    doubled = interpolator.double(frames)
    assert doubled.shape == (97, 48, 64, 3) and doubled.dtype == np.uint8
    assert np.array_equal(doubled[0::2], frames)


@pytest.mark.parametrize(("height", "width"), [(48, 72), (30, 50)])
def test_sizes_that_need_padding_come_back_at_their_size(
    interpolator: RifeInterpolator, height: int, width: int
) -> None:
    frames = random_frames(4, height, width)
    doubled = interpolator.double(frames)
    assert doubled.shape == (7, height, width, 3)
    assert np.array_equal(doubled[0::2], frames)


def test_deterministic_and_independent_of_batch_size(model: IFNet) -> None:
    frames = random_frames(4, 32, 32)
    reference = RifeInterpolator(model, "cpu", torch.float32, batch_size=1).double(frames)
    for batch_size in (2, 64):  # a short last batch, and everything in one
        assert np.array_equal(RifeInterpolator(model, "cpu", torch.float32, batch_size).double(frames), reference)
    assert np.array_equal(RifeInterpolator(model, "cpu", torch.float32, batch_size=1).double(frames), reference)


def test_midpoint_does_not_depend_on_the_order_of_the_frames(model: IFNet) -> None:
    # Each block runs on both orders and averages them; a mix-up of the two flows breaks this.
    first, second = torch.rand(2, 1, 3, 32, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(model(first, second), model(second, first), atol=1e-5)


def test_between_two_identical_flat_frames_is_that_frame(interpolator: RifeInterpolator) -> None:
    # Whatever flow random weights predict, warping a flat image leaves it flat, and blending two
    # equal images gives the same image: this checks warping and blending, not the weights.
    frames = np.full((2, 30, 50, 3), (200, 40, 90), dtype=np.uint8)
    assert np.array_equal(interpolator.double(frames)[1], frames[0])


def test_a_single_frame_is_returned_as_it_is(interpolator: RifeInterpolator) -> None:
    frames = random_frames(1, 30, 50)
    assert np.array_equal(interpolator.double(frames), frames)


def test_rejects_frames_that_are_not_uint8_rgb(interpolator: RifeInterpolator) -> None:
    with pytest.raises(ValueError, match="uint8"):
        interpolator.double(np.zeros((3, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        interpolator.double(np.zeros((3, 32, 32), dtype=np.uint8))


def smooth_frames(count: int, height: int, width: int) -> np.ndarray:
    """Moving gradients: a slightly different sampling position changes a pixel only a little,
    so precisions can be compared even under the large flows that random weights predict."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [lambda k: 3 * x + 5 * k, lambda k: 4 * y, lambda k: x + y + 9 * k]
    return np.stack([np.stack([c(k) % 256 for c in channels], -1) for k in range(count)]).astype(np.uint8)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",  # slow there, but it runs the half-precision code path without a GPU
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
        ),
    ],
)
def test_half_precision_stays_close_to_float32(model: IFNet, device: str) -> None:
    frames = smooth_frames(3, 32, 32)
    full = RifeInterpolator(copy.deepcopy(model), "cpu", torch.float32).double(frames)
    half = RifeInterpolator(copy.deepcopy(model), device, torch.float16).double(frames)
    difference = np.abs(half.astype(int) - full.astype(int))
    assert difference.mean() < 1
