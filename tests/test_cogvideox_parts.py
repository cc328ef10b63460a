"""The pieces behind the CogVideoX endpoints, without the queue: the schemas against fal's pages,
input fitting, memory modes, the shared weights and ``openreel fetch-weights``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel
from pydantic import ValidationError

from models import fetch
from models.rife.weights import REPO_ID as RIFE_REPO_ID
from models.rife.weights import WEIGHTS_FILE as RIFE_WEIGHTS_FILE
from openreel import cli
from openreel.settings import Settings
from pipelines.cogvideox import I2V_REPO, RIFE_FILE, RIFE_REPO, T2V_REPO
from pipelines.cogvideox.runner import I2V_ENDPOINT, T2V_ENDPOINT, V2V_ENDPOINT, load_family
from pipelines.cogvideox.schema import ImageToVideoInput, TextToVideoInput, VideoToVideoInput
from pipelines.frames import center_crop_box, fit_frames, fit_length, resample_fps, resize_frames
from pipelines.memory import GIB, plan_memory
from pipelines.registry import ENDPOINTS

SHARED = ["prompt", "video_size", "negative_prompt", "num_inference_steps", "seed", "guidance_scale", "use_rife",
          "export_fps"]


# --- schemas -------------------------------------------------------------------------------
def test_fields_and_defaults_are_those_of_fal() -> None:
    assert list(TextToVideoInput.model_fields) == SHARED  # fal's text-to-video page has no loras
    assert set(ImageToVideoInput.model_fields) == {*SHARED, "loras", "image_url"}
    assert set(VideoToVideoInput.model_fields) == {*SHARED, "loras", "video_url", "strength"}
    v2v = VideoToVideoInput(prompt="p", video_url="https://x/v.mp4", loras=[{"path": "a/b"}])
    assert (v2v.video_size.width, v2v.video_size.height) == (720, 480)
    assert (v2v.negative_prompt, v2v.num_inference_steps, v2v.guidance_scale) == ("", 50, 7.0)
    assert (v2v.use_rife, v2v.export_fps, v2v.strength, v2v.seed) == (True, 16, 0.8, None)
    assert v2v.loras[0].scale == 1.0
    assert ImageToVideoInput(prompt="p", image_url="https://x/i.png").loras == []
    for name in ("image_url", "prompt"):
        assert ImageToVideoInput.model_fields[name].is_required()


def test_size_bounds_come_from_the_validating_process_settings() -> None:
    payload = {"prompt": "p", "video_size": {"width": 1024, "height": 576}}
    TextToVideoInput.model_validate(payload)  # defaults: up to 1360
    with pytest.raises(ValidationError, match="between 64 and 512, got 1024"):
        TextToVideoInput.model_validate(payload, context={"settings": Settings(video_min_side=64, video_max_side=512)})
    with pytest.raises(ValidationError, match="height must be a multiple of 16"):
        TextToVideoInput.model_validate({"prompt": "p", "video_size": {"width": 64, "height": 40}})
    assert TextToVideoInput.model_validate({"prompt": "p", "video_size": "portrait_16_9"}).video_size == "portrait_16_9"


def test_lora_scale_must_be_finite() -> None:
    with pytest.raises(ValidationError, match="finite number"):
        ImageToVideoInput(prompt="p", image_url="u", loras=[{"path": "a/b", "scale": float("inf")}])


# --- fitting inputs ------------------------------------------------------------------------
def test_resampling_keeps_duration_and_picks_the_frame_on_screen() -> None:
    frames = np.arange(60)[:, None, None, None].astype(np.uint8) * np.ones((1, 2, 2, 3), np.uint8)
    at_8 = resample_fps(frames, 24, 8)  # 2.5 s
    assert at_8[:, 0, 0, 0].tolist() == list(range(0, 60, 3))
    slow = resample_fps(frames[:4], 4, 8)  # 1 s at 4 fps: each frame shown twice
    assert slow[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resample_fps(frames[:1], 30, 8).shape[0] == 1


def test_length_is_trimmed_or_held_and_frames_are_cropped_to_the_center() -> None:
    frames = np.arange(10)[:, None, None, None].astype(np.uint8) * np.ones((1, 4, 8, 3), np.uint8)
    assert fit_length(frames, 4)[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert fit_length(frames, 13)[:, 0, 0, 0].tolist() == [*range(10), 9, 9, 9]
    assert center_crop_box(800, 400, 1.0) == (200.0, 0.0, 600.0, 400.0)
    assert center_crop_box(400, 800, 2.0) == (0.0, 300.0, 400.0, 500.0)
    striped = np.zeros((1, 40, 120, 3), np.uint8)
    striped[:, :, 40:80] = 255  # white middle third: all a square center crop keeps
    assert fit_frames(striped, (20, 20)).min() > 200
    assert fit_frames(striped, (120, 40)) is striped
    assert resize_frames(striped, (120, 40)) is striped
    assert resize_frames(striped, (60, 60)).shape == (1, 60, 60, 3)


# --- memory modes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("total_gib", "expected"),
    [(80, "gpu"), (48, "gpu"), (40, "model_offload"), (24, "model_offload"), (16, "sequential_offload")],
)
def test_auto_memory_mode_follows_gpu_memory(total_gib: int, expected: str) -> None:
    # CogVideoX-5B with the I2V transformer in bf16: T5 ~9.5, two transformers ~11 GiB each.
    sizes = [int(9.5 * GIB), 11 * GIB, 11 * GIB, int(0.4 * GIB)]
    plan = plan_memory("auto", "auto", torch.device("cuda"), total_gib * GIB, sizes, 12 * GIB)
    # The headroom is the untiled decode's peak: only a plan short of memory tiles.
    assert plan.mode == expected and plan.vae_tiling == (expected != "gpu")
    assert f"{total_gib:.1f} GiB GPU" in plan.reason


def test_cpu_never_offloads_and_tiles_only_when_asked() -> None:
    for mode in ("auto", "gpu", "model_offload", "sequential_offload"):
        plan = plan_memory(mode, "auto", torch.device("cpu"), None, [GIB], 12 * GIB)
        assert plan.mode == "gpu" and not plan.vae_tiling
    assert "needs a CUDA device" in plan.reason
    assert plan_memory("auto", "on", torch.device("cpu"), None, [GIB], 0).vae_tiling
    assert plan_memory("model_offload", "off", torch.device("cuda"), 8 * GIB, [GIB], 0) == plan_memory(
        "model_offload", "off", torch.device("cuda"), 80 * GIB, [GIB], 0
    )


# --- shared weights -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def family(models_dir: Path, monkeypatch_module: pytest.MonkeyPatch) -> dict:
    """All three runners on CPU with an offload mode and VAE tiling asked for: the CPU path must
    not call diffusers' offload APIs (they raise without an accelerator)."""
    calls: list[tuple] = []
    for cls in (CogVideoXPipeline, CogVideoXTransformer3DModel):
        real = cls.from_pretrained.__func__

        def spy(cls, *args, _real=real, **kwargs):
            calls.append((cls.__name__, args, kwargs))
            return _real(cls, *args, **kwargs)

        monkeypatch_module.setattr(cls, "from_pretrained", classmethod(spy))
    settings = Settings(models="tiny", model_cache_dir=models_dir, device="cpu", memory_mode="sequential_offload",
                        vae_tiling="on")
    return {"runners": load_family(settings=settings), "calls": calls}


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def test_one_copy_of_shared_weights_and_only_the_i2v_transformer_added(family: dict, models_dir: Path) -> None:
    t2v, i2v, v2v = (family["runners"][e].pipe for e in (T2V_ENDPOINT, I2V_ENDPOINT, V2V_ENDPOINT))
    for name in ("text_encoder", "tokenizer", "vae"):
        assert getattr(t2v, name) is getattr(i2v, name) is getattr(v2v, name), name
    assert v2v.transformer is t2v.transformer and i2v.transformer is not t2v.transformer
    assert i2v.scheduler.config == t2v.scheduler.config and i2v.scheduler is not t2v.scheduler
    pipelines = [args for name, args, _ in family["calls"] if name == "CogVideoXPipeline"]
    own_loads = [args for _, args, kwargs in family["calls"] if kwargs.get("subfolder") == "transformer"]
    assert len(pipelines) == 1 and str(pipelines[0][0]).endswith(T2V_REPO)
    assert len(own_loads) == 1 and str(own_loads[0][0]).endswith(I2V_REPO)
    assert t2v.vae.use_tiling and t2v.vae.use_slicing
    for runner in family["runners"].values():
        runner.warm_up()


def test_tiny_i2v_keeps_the_real_one_fixed_size(family: dict) -> None:
    i2v, t2v = family["runners"][I2V_ENDPOINT], family["runners"][T2V_ENDPOINT]
    config = i2v.pipe.transformer.config
    assert config.use_learned_positional_embeddings and config.use_rotary_positional_embeddings
    assert config.in_channels == 2 * t2v.pipe.transformer.config.in_channels
    assert i2v.native_size == (64, 48)
    other_size = {**i2v.warm_up_arguments(9, (96, 64)), "height": 64, "width": 96}
    with pytest.raises(ValueError, match="different resolution"), torch.inference_mode():
        i2v.pipe(**other_size, prompt="p", num_inference_steps=1, output_type="latent")


def test_t2v_only_worker_does_not_load_the_i2v_transformer(models_dir: Path) -> None:
    settings = Settings(models="tiny", model_cache_dir=models_dir, device="cpu")
    runners = load_family(settings=settings, endpoints=[V2V_ENDPOINT])
    assert list(runners) == [V2V_ENDPOINT]
    assert runners[V2V_ENDPOINT].components.i2v_transformer is None


# --- fetch-weights --------------------------------------------------------------------------
def test_fetch_weights_downloads_what_the_endpoints_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, list[str] | None]] = []

    def download(repo: str, allow_patterns: list[str] | None = None) -> str:
        calls.append((repo, allow_patterns))
        return f"/cache/{repo}"

    monkeypatch.setattr(fetch, "snapshot_download", download)
    cli.main(["fetch-weights", "--endpoints", I2V_ENDPOINT])
    assert calls == [(T2V_REPO, None), (RIFE_REPO, [RIFE_FILE]), (I2V_REPO, ["transformer/*"])]
    assert f"fetching {I2V_REPO} (transformer/*)" in capsys.readouterr().out
    calls.clear()
    cogvideox = [endpoint for endpoint in ENDPOINTS.values() if endpoint.family == "cogvideox"]
    assert fetch.fetch_weights(cogvideox, report=lambda line: None) == [
        Path(f"/cache/{repo}") for repo in (T2V_REPO, RIFE_REPO, I2V_REPO)
    ]
    assert (RIFE_REPO, RIFE_FILE) == (RIFE_REPO_ID, RIFE_WEIGHTS_FILE)
