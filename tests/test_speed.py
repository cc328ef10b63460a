"""The speed options (pipelines/speed.py) on the tiny CogVideoX: the lossless ones keep the output
of the plain model, the fast modes run and say what they cost, the settings refuse what cannot
work together. Compile on CPU takes ~30 s, so its CPU variant is a slow test; on CUDA it is a GPU
test, with fp8."""

from __future__ import annotations

import importlib.util
from contextlib import nullcontext

import pytest
import torch
from diffusers import CogVideoXDPMScheduler
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0, FusedCogVideoXAttnProcessor2_0
from pydantic import ValidationError

from models.tiny.cogvideox import build_pipeline
from openreel.settings import Settings
from pipelines.speed import AUTO_ATTENTION, SpeedPlan, accelerate, repeated_blocks, separate_qkv

CUDA = torch.cuda.is_available()
FP8_READY = (
    CUDA and torch.cuda.get_device_capability() >= (8, 9) and importlib.util.find_spec("torchao") is not None
)
on_gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]


def tiny_pipeline(device: str = "cpu", dtype: torch.dtype = torch.float32):
    """A fresh tiny CogVideoX pipeline: the same seeded weights every time."""
    pipe = build_pipeline()
    pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    return pipe if (device, dtype) == ("cpu", torch.float32) else pipe.to(device, dtype)


def generate(pipe, plan: SpeedPlan | None = None, steps: int = 3) -> torch.Tensor:
    """Decoded frames in [0, 1], as the runners call the pipeline (dynamic CFG, CPU generator)."""
    with torch.inference_mode(), (plan.attention_context() if plan else nullcontext()):
        return pipe(
            prompt="a red fox in the snow",
            num_inference_steps=steps,
            guidance_scale=6.0,
            use_dynamic_cfg=True,
            generator=torch.Generator("cpu").manual_seed(7),
            height=48,
            width=64,
            num_frames=9,
            output_type="pt",
        ).frames.float()


@pytest.fixture(scope="module")
def plain() -> torch.Tensor:
    return generate(tiny_pipeline())


# --- settings and plans ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(fp8_compute=True, fp8_weights=True), "choose one"),
        (dict(device="cpu", fp8_compute=True), "CUDA kernels"),
        (dict(device="cpu", attention_backend="flash"), "CUDA kernels"),
        (dict(compile="on", memory_mode="sequential_offload"), "sequential offload"),
        (dict(step_cache_threshold=1.0), "less than 1"),
        (dict(step_cache_threshold=-0.1), "greater than or equal to 0"),
    ],
)
def test_settings_refuse_invalid_combinations(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)


def test_plan_follows_the_device() -> None:
    cpu = torch.device("cpu")
    plan = SpeedPlan.from_settings(Settings(), cpu)
    assert (plan.compile, plan.fuse_qkv, plan.attention, plan.lossless) == (False, True, (), True)
    assert plan.describe() == "eager, fused QKV, attention torch default"
    assert SpeedPlan.from_settings(Settings(compile="on"), cpu).compile
    fast = SpeedPlan.from_settings(Settings(step_cache_threshold=0.1, fuse_qkv=False), cpu)
    assert not fast.lossless and fast.describe().endswith("first block cache 0.1 (lossy)")
    # device=auto passes validation on any host; the worker refuses fp8 where it cannot run.
    if not FP8_READY:
        with pytest.raises(RuntimeError, match="fp8_compute needs"):
            SpeedPlan.from_settings(Settings(fp8_compute=True), torch.device("cuda" if CUDA else "cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_plan_compiles_and_prefers_cudnn_then_flash() -> None:
    device = torch.device("cuda")
    assert SpeedPlan.from_settings(Settings(), device).attention == AUTO_ATTENTION
    assert SpeedPlan.from_settings(Settings(), device).compile
    forced = SpeedPlan.from_settings(Settings(attention_backend="math"), device)
    assert forced.attention == (torch.nn.attention.SDPBackend.MATH,)


def test_repeated_blocks_are_the_transformer_blocks() -> None:
    transformer = build_pipeline().transformer
    assert repeated_blocks(transformer) == list(transformer.transformer_blocks)
    assert repeated_blocks(torch.nn.Linear(2, 2)) == []


# --- lossless options ------------------------------------------------------------------------
def test_fused_qkv_keeps_the_output(plain: torch.Tensor) -> None:
    pipe = tiny_pipeline()
    plan = SpeedPlan(compile=False, fuse_qkv=True)
    assert accelerate(pipe.transformer, plan) == ["fused QKV projections"]
    assert all(hasattr(block.attn1, "to_qkv") for block in pipe.transformer.transformer_blocks)
    assert (generate(pipe, plan) - plain).abs().max() <= 1e-5


def test_lora_requests_get_the_separate_projections() -> None:
    """LoRA layers wrap to_q/to_k/to_v, which the fused processor never calls."""
    pipe = tiny_pipeline()
    accelerate(pipe.transformer, SpeedPlan(compile=False, fuse_qkv=True))
    fused = generate(pipe)
    with torch.no_grad():
        for block in pipe.transformer.transformer_blocks:
            block.attn1.to_q.weight.mul_(3)  # what an adapter on to_q would change
    assert torch.equal(generate(pipe), fused)
    for _ in range(2):  # the second LoRA request too: switching back must not use up the switch
        with separate_qkv(pipe.transformer):
            assert all(isinstance(p, CogVideoXAttnProcessor2_0) for p in pipe.transformer.attn_processors.values())
            assert (generate(pipe) - fused).abs().max() > 1e-3
        assert all(isinstance(p, FusedCogVideoXAttnProcessor2_0) for p in pipe.transformer.attn_processors.values())
        assert torch.equal(generate(pipe), fused)


@pytest.mark.parametrize(
    ("device", "dtype", "tolerance"),
    [
        pytest.param("cpu", torch.float32, 1e-4, marks=pytest.mark.slow),
        pytest.param("cuda", torch.bfloat16, 4e-2, marks=on_gpu),
    ],
)
def test_regional_compile_keeps_the_output(device: str, dtype: torch.dtype, tolerance: float) -> None:
    pipe = tiny_pipeline(device, dtype)
    plan = SpeedPlan(compile=True, fuse_qkv=True, attention=AUTO_ATTENTION if device == "cuda" else ())
    eager = generate(pipe, plan, steps=2)
    assert accelerate(pipe.transformer, plan) == ["fused QKV projections", "compiled 2 CogVideoXBlock blocks"]
    assert (generate(pipe, plan, steps=2) - eager).abs().max() <= tolerance


# --- fast modes ------------------------------------------------------------------------------
def test_first_block_cache_runs_and_reports_its_difference(plain: torch.Tensor, capsys) -> None:
    differences = {}
    for threshold in (0.05, 0.9):
        pipe = tiny_pipeline()
        generate(pipe, steps=1)  # a model that already ran: the cache must still take hold
        accelerate(pipe.transformer, SpeedPlan(compile=False, fuse_qkv=False, step_cache_threshold=threshold))
        differences[threshold] = (generate(pipe) - plain).abs().max().item()
        with capsys.disabled():
            print(f"\nfirst block cache {threshold}: max frame difference {differences[threshold]:.4f} (of 1)")
    # A loose threshold skips steps, so the frames move; each step cached is a step not computed.
    assert differences[0.9] > 1e-3
    assert differences[0.05] <= differences[0.9]


@pytest.mark.gpu
@pytest.mark.skipif(not FP8_READY, reason="needs CUDA compute capability 8.9+ and torchao")
def test_fp8_compute_runs_and_reports_its_difference(capsys) -> None:
    eager = generate(tiny_pipeline("cuda", torch.bfloat16))
    pipe = tiny_pipeline("cuda", torch.bfloat16)
    plan = SpeedPlan(compile=False, fuse_qkv=True, fp8=True)
    assert "fp8" in accelerate(pipe.transformer, plan)[-1]
    difference = (generate(pipe, plan) - eager).abs().max().item()
    with capsys.disabled():
        print(f"\nfp8 compute: max frame difference {difference:.4f} (of 1)")
    assert difference < 0.5
