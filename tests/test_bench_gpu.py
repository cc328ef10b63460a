"""The GPU benchmark's harness, run on the CPU with the tiny preset: every stage timed for both
paths, the FLOPs formula, and the two paths' frames within tolerance of each other."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from models.full_size import TRANSFORMER_CONFIG_5B, cogvideox_5b_modules
from openreel import cli
from pipelines.bench import add_arguments, render, run
from pipelines.bench.measure import TransformerFlops

STAGES = ["text_encoding", "denoising", "vae_decode", "rife", "mp4_encode"]


def test_tiny_cpu_report(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENREEL_MODEL_CACHE_DIR", str(models_dir))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    arguments = "--preset tiny --steps 2 --width 32 --height 32 --repeats 1 --warmups 0 --device cpu"
    report = run(parser.parse_args([*arguments.split(), "--json", str(tmp_path / "report.json")]))

    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (report["preset"], report["device"], report["dtype"], report["repeats"]) == ("tiny", "cpu", "float32", 1)
    assert report["memory_metric"] == "rss_sampled_peak_above_stage_start"
    assert report["speed"] == "eager, fused QKV, attention torch default" and report["lossless"]
    assert list(report["stages"]) == STAGES
    for entry in report["stages"].values():
        for path in ("stock", "openreel"):
            assert entry[path]["median_s"] > 0 and entry[path]["peak_bytes"] >= 0
        assert entry["ratio"] == pytest.approx(entry["openreel"]["median_s"] / entry["stock"]["median_s"])
    step = report["denoising_step"]
    assert step["stock_median_s"] > 0 and step["openreel_median_s"] > 0
    assert report["total"]["openreel_s"] == pytest.approx(
        sum(entry["openreel"]["median_s"] for entry in report["stages"].values())
    )

    # The tiny transformer: 2 blocks 32 wide, 226 text tokens + 13 latent frames of 2 x 2 patches.
    transformer = report["transformer"]
    width, layers, tokens = 32, 2, 226 + 13 * 2 * 2
    assert (transformer["width"], transformer["layers"], transformer["tokens"]) == (width, layers, tokens)
    assert transformer["per_token_linear_params"] == layers * 12 * width**2
    per_pass = 2 * layers * 12 * width**2 * tokens + layers * 4 * tokens**2 * width
    assert transformer["flops_per_step"] == 2 * per_pass  # CFG: two passes in one batch
    assert transformer["openreel_tflops"] == pytest.approx(per_pass * 2 / step["openreel_median_s"] / 1e12)

    # Both paths draw the same noise and run the same float32 weights; fused QKV only regroups
    # the matmuls, so at most a rounding step of one 8-bit level may differ.
    frames = report["frames"]
    assert frames["compared"] == 97  # 49 frames doubled by RIFE
    assert frames["decoded_max_abs_diff"] <= 1 and frames["video_max_abs_diff"] <= 1

    text = render(report)
    assert "per step" in text and "TFLOP/s" in text and "max |stock - openreel|" in text


def test_openreel_bench_is_the_same_command() -> None:
    command = "bench --preset full --steps 50 --step-cache-threshold 0.1"
    args = cli.build_parser().parse_args(command.split())
    assert (args.command, args.preset, args.steps, args.step_cache_threshold) == ("bench", "full", 50, 0.1)


def test_full_preset_is_cogvideox_5b_and_the_flops_match_the_published_count() -> None:
    """The full-size architecture, built without storage: its parameter counts, and its FLOPs at
    720x480, 49 frames with CFG against performance-anchors' 6.64e14 per step."""
    modules = cogvideox_5b_modules("meta", torch.bfloat16)
    networks = {name: module for name, module in modules.items() if isinstance(module, torch.nn.Module)}
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in networks.items()}
    assert counts["text_encoder"] == pytest.approx(4.76e9, rel=0.01)  # t5-v1_1-xxl's encoder
    assert counts["transformer"] == pytest.approx(5.57e9, rel=0.01)
    assert counts["vae"] == pytest.approx(2.16e8, rel=0.01)
    flops = TransformerFlops.for_call(modules["transformer"], 49, 480, 720, cfg=True)
    d = TRANSFORMER_CONFIG_5B["num_attention_heads"] * TRANSFORMER_CONFIG_5B["attention_head_dim"]
    assert (flops.tokens, flops.width, flops.params) == (17_776, 3072, 42 * 12 * d**2)
    assert flops.linear / 2 == pytest.approx(1.691e14, rel=1e-3)
    assert flops.attention / 2 == pytest.approx(1.631e14, rel=1e-3)
    assert flops.per_step == pytest.approx(6.64e14, rel=1e-3)
