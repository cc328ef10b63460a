"""The Video-As-Prompt transformer, pipeline and safety checker on the tiny preset, without the
queue: strict checkpoint loading, the reference branch's effect, sizes, fp8 storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from models.presets import make_tiny
from models.tiny import safety_checker
from models.tiny.video_as_prompt import build_transformer
from models.video_as_prompt import load_transformer
from models.video_as_prompt.transformer import ReferenceExpertBlock
from pipelines.memory import module_bytes, store_fp8
from pipelines.video_as_prompt import REPO
from pipelines.video_as_prompt.pipeline import evenly_spaced, valid_frame_count
from pipelines.video_as_prompt.runner import load_pipeline
from pipelines.video_as_prompt.safety import SafetyChecker
from pipelines.video_as_prompt.schema import capped_size, output_size
from tests.generated_inputs import gradient_frames

WEIGHTS = "diffusion_pytorch_model.safetensors"


def transformer_inputs(seed: int = 0, reference_seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    reference = torch.Generator().manual_seed(reference_seed)
    return dict(
        hidden_states=torch.randn(1, 36, 3, 4, 6, generator=generator),
        timestep=torch.tensor([700.0]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=generator),
        encoder_hidden_states_image=torch.randn(1, 17, 8, generator=generator),
        reference_hidden_states=torch.randn(1, 36, 3, 4, 6, generator=reference),
        reference_timestep=torch.tensor([1.0]),
        reference_encoder_hidden_states=torch.randn(1, 512, 32, generator=reference),
        reference_encoder_hidden_states_image=torch.randn(1, 17, 8, generator=reference),
    )


@torch.no_grad()
def predict(model: torch.nn.Module, **overrides: object) -> torch.Tensor:
    return model(**{**transformer_inputs(), **overrides}).sample


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("transformer")
    build_transformer().save_pretrained(directory)
    return directory


def test_save_reload_run_round_trip_is_exact(saved: Path) -> None:
    model = build_transformer()
    reloaded = load_transformer(str(saved), torch.float32, subfolder=None)
    reloaded_state, state = reloaded.state_dict(), model.state_dict()
    assert reloaded_state.keys() == state.keys()
    assert all(torch.equal(reloaded_state[key], state[key]) for key in state)
    # Same weights; the reloaded modules' memory layout may pick other CPU kernels (last-bit noise).
    torch.testing.assert_close(predict(reloaded), predict(model), rtol=0, atol=1e-5)
    # The blocks the config lists carry the expert, the others are plain Wan blocks.
    assert [isinstance(block, ReferenceExpertBlock) for block in reloaded.blocks] == [True, False, True]
    assert reloaded.config.block_idx_with_mot_ref == [0, 2]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("drop", "missing_keys: blocks.2.ffn_mot_ref.net.2.bias"),
        ("add", "unexpected_keys: blocks.1.attn1_mot_ref.to_q.weight"),
    ],
)
def test_a_missing_or_extra_expert_key_is_refused(saved: Path, tmp_path: Path, change: str, problem: str) -> None:
    state = load_file(saved / WEIGHTS)
    if change == "drop":
        del state["blocks.2.ffn_mot_ref.net.2.bias"]
    else:  # an expert weight in a block the config says has none
        state["blocks.1.attn1_mot_ref.to_q.weight"] = state["blocks.0.attn1_mot_ref.to_q.weight"].clone()
    (tmp_path / "config.json").write_text((saved / "config.json").read_text())
    save_file(state, tmp_path / WEIGHTS)
    with pytest.raises(ValueError, match=problem):
        load_transformer(str(tmp_path), torch.float32, subfolder=None)
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
        build_transformer().load_state_dict(state, strict=True)


def test_config_decides_which_blocks_carry_the_expert() -> None:
    model = build_transformer(block_idx_with_mot_ref=[1])
    assert [isinstance(block, ReferenceExpertBlock) for block in model.blocks] == [False, True, False]
    assert not any(key.startswith("blocks.0.") and "mot_ref" in key for key in model.state_dict())
    with pytest.raises(ValueError, match="names blocks \\[5\\]"):
        build_transformer(block_idx_with_mot_ref=[5])


def test_the_reference_stream_changes_the_prediction_and_sits_before_the_target_in_time() -> None:
    model = build_transformer()
    base = predict(model)
    assert torch.equal(predict(model), base)
    other = transformer_inputs(reference_seed=2)["reference_hidden_states"]
    assert not torch.allclose(predict(model, reference_hidden_states=other), base)
    caption = transformer_inputs(reference_seed=3)["reference_encoder_hidden_states"]
    assert not torch.allclose(predict(model, reference_encoder_hidden_states=caption), base)

    # Temporal rotary angles: the target's frames are at 0, 1, 2; the reference's at -3, -2, -1.
    latents = torch.zeros(1, 36, 3, 2, 2)
    t_dim = model.rope.t_dim
    target_cos, target_sin = (part[0, ::1, 0, :t_dim].reshape(3, 1, 1, t_dim)[:, 0, 0] for part in model.rope(latents))
    ref_cos, ref_sin = (part[0, :, 0, :t_dim].reshape(3, 1, 1, t_dim)[:, 0, 0] for part in model.rope_mot_ref(latents))
    assert torch.allclose(ref_cos[2], target_cos[1]) and torch.allclose(ref_sin[2], -target_sin[1])  # -1 vs 1
    assert torch.allclose(ref_sin[0], -model.rope.freqs_sin[3, :t_dim])  # -3 vs 3


def test_fp8_storage_shrinks_the_blocks_and_keeps_the_prediction_close() -> None:
    model = build_transformer()
    base, before = predict(model), module_bytes(model.blocks)
    message = store_fp8(model, torch.float32)
    # float32 -> 1 byte for the blocks' linear layers; norms and the (here dominant) embedders stay.
    assert module_bytes(model.blocks) < 0.4 * before
    assert "float8_e4m3fn" in message
    assert model.blocks[0].attn1_mot_ref.to_q.weight.dtype == torch.float8_e4m3fn
    assert (predict(model) - base).abs().max() < 0.1 * base.abs().max()


@pytest.fixture(scope="module")
def pipe(models_dir: Path):  # noqa: ANN201 - the pipeline type imports diffusers
    return load_pipeline(str(make_tiny(REPO, models_dir)), torch.device("cpu"), torch.float32)


def generate(pipe, reference_seed: int, seed: int = 4) -> torch.Tensor:  # noqa: ANN001
    clip = gradient_frames(21, (48, 32), seed=reference_seed)
    frames = [Image.fromarray(frame) for frame in clip[evenly_spaced(len(clip), 9)]]
    image = Image.fromarray(gradient_frames(1, (48, 32), seed=7)[0])
    captions = pipe.encode_captions("a horse on a hill", "a shoe inflates and floats away", True, torch.float32)
    reference = pipe.prepare_reference(frames, 32, 48)
    return pipe.generate(
        image, reference, captions, height=32, width=48, num_inference_steps=2, guidance_scale=5.0,
        generator=torch.Generator().manual_seed(seed),
    )


def test_pipeline_same_seed_same_video_and_the_reference_video_matters(pipe) -> None:  # noqa: ANN001
    latents = generate(pipe, reference_seed=1)
    assert latents.shape == (1, 16, 3, 4, 6)  # 9 frames -> 3 latent frames of 32x48 / 8
    assert torch.equal(generate(pipe, reference_seed=1), latents)
    assert not torch.allclose(generate(pipe, reference_seed=2), latents)
    assert not torch.allclose(generate(pipe, reference_seed=1, seed=5), latents)
    frames = pipe.decode(latents)
    assert frames.shape == (9, 32, 48, 3) and 0 <= frames.min() and frames.max() <= 1


def test_frame_selection_and_counts() -> None:
    assert evenly_spaced(100, 5).tolist() == [0, 24, 49, 74, 99]
    assert evenly_spaced(3, 5).tolist() == [0, 0, 1, 1, 2]  # a short clip repeats frames
    assert [valid_frame_count(n, 4) for n in (49, 50, 52, 53, 5)] == [49, 49, 49, 53, 5]


def test_aspect_ratio_and_resolution_map_to_documented_sizes() -> None:
    expected = {
        ("16:9", "480p"): (832, 480),
        ("9:16", "480p"): (480, 832),
        ("16:9", "580p"): (1024, 576),
        ("9:16", "580p"): (576, 1024),
        ("16:9", "720p"): (1280, 720),
        ("9:16", "720p"): (720, 1280),
    }
    for (aspect_ratio, resolution), size in expected.items():
        assert output_size(aspect_ratio, resolution) == size
        assert all(side % 16 == 0 for side in size)
    assert capped_size((832, 480), 0) == (832, 480)
    assert capped_size((832, 480), 832 * 480) == (832, 480)
    assert capped_size((1280, 720), 640 * 360) == (640, 352)
    assert capped_size((720, 1280), 4096) == (48, 80)
    assert capped_size((832, 480), 4096) == (80, 48)


def test_safety_checker_flags_by_its_thresholds(tmp_path: Path) -> None:
    frames = gradient_frames(49, (48, 32))
    safety_checker.build(tmp_path / "calm")
    assert SafetyChecker(str(tmp_path / "calm"), torch.device("cpu")).flagged_frames(frames) == []
    safety_checker.build(tmp_path / "strict", threshold=-2.0)
    flagged = SafetyChecker(str(tmp_path / "strict"), torch.device("cpu")).flagged_frames(frames)
    assert flagged == [0, 6, 13, 20, 27, 34, 41, 48]  # 8 frames sampled over the whole video
