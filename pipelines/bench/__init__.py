"""``openreel bench`` and ``scripts/bench_gpu.py``: stock diffusers against openreel's runner.

Torch-free on import (the CLI builds its parser from here); the harness loads when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH_ENDPOINTS = ("fal-ai/cogvideox-5b",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("tiny", "full"), default="tiny",
                        help="tiny: the tiny preset's weights; full: the full-size architecture with random "
                        "weights (no download). Default tiny.")
    parser.add_argument("--endpoint", choices=BENCH_ENDPOINTS, default=BENCH_ENDPOINTS[0])
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (1-50). Default 50.")
    parser.add_argument("--width", type=int, default=720, help="Default 720.")
    parser.add_argument("--height", type=int, default=480, help="Default 480.")
    parser.add_argument("--guidance-scale", type=float, default=7.0,
                        help="fal's default 7; 1 or less runs without classifier-free guidance.")
    parser.add_argument("--no-rife", dest="use_rife", action="store_false", help="skip RIFE (49 frames, not 97)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; medians reported. Default 3.")
    parser.add_argument("--warmups", type=int, default=1, help="untimed runs per path first. Default 1.")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (else OPENREEL_DEVICE)")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    # The speed options are the worker's settings (OPENREEL_COMPILE, OPENREEL_FUSE_QKV, ...);
    # these flags override them for the openreel path.
    parser.add_argument("--compile", choices=("auto", "on", "off"))
    parser.add_argument("--attention-backend", choices=("auto", "cudnn", "flash", "efficient", "math"))
    parser.add_argument("--fuse-qkv", choices=("on", "off"))
    parser.add_argument("--fp8-compute", action="store_const", const=True)
    parser.add_argument("--step-cache-threshold", type=float)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark as ``args`` say; returns the report (also printed, and written to ``--json``)."""
    from openreel.settings import load_settings
    from pipelines.bench.cogvideox import BenchRequest, benchmark

    settings = load_settings(
        models=args.preset,
        device=args.device,
        compile=args.compile,
        attention_backend=args.attention_backend,
        fuse_qkv=args.fuse_qkv,
        fp8_compute=args.fp8_compute,
        step_cache_threshold=args.step_cache_threshold,
    )
    request = BenchRequest(
        steps=args.steps,
        width=args.width,
        height=args.height,
        guidance_scale=args.guidance_scale,
        use_rife=args.use_rife,
    )
    report = benchmark(settings, request, repeats=args.repeats, warmups=args.warmups)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def render(report: dict[str, Any]) -> str:
    """The report as a table for a terminal."""
    request = report["request"]
    lines = [
        f"{report['endpoint']} on {report['device']} ({report['dtype']}, {report['preset']} preset): "
        f"{request['frames']} frames {request['width']}x{request['height']}, {request['steps']} steps, "
        f"CFG {request['guidance_scale']:g}, RIFE {'on' if request['use_rife'] else 'off'}; "
        f"median of {report['repeats']}",
        f"openreel: {report['speed']}",
        f"memory: {report['memory_metric']}",
        "",
        f"{'stage':<14}{'stock s':>10}{'openreel s':>12}{'ratio':>8}{'stock MiB':>12}{'openreel MiB':>14}",
    ]
    for stage, entry in report["stages"].items():
        ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}"
        lines.append(
            f"{stage:<14}{entry['stock']['median_s']:>10.3f}{entry['openreel']['median_s']:>12.3f}{ratio:>8}"
            f"{entry['stock']['peak_bytes'] / 2**20:>12.0f}{entry['openreel']['peak_bytes'] / 2**20:>14.0f}"
        )
    step, total, transformer, frames = (
        report["denoising_step"], report["total"], report["transformer"], report["frames"]
    )
    lines += [
        f"{'per step':<14}{step['stock_median_s']:>10.4f}{step['openreel_median_s']:>12.4f}{step['ratio']:>8.2f}",
        f"{'total':<14}{total['stock_s']:>10.3f}{total['openreel_s']:>12.3f}{total['ratio']:>8.2f}",
        "",
        f"transformer: {transformer['flops_per_step']:.3e} FLOP per step ({transformer['formula']}; "
        f"P={transformer['per_token_linear_params']}, L={transformer['tokens']}, d={transformer['width']}, "
        f"layers={transformer['layers']}, batch={transformer['batch']}): stock {transformer['stock_tflops']:.2f}, "
        f"openreel {transformer['openreel_tflops']:.2f} TFLOP/s",
        f"frames: max |stock - openreel| {frames['decoded_max_abs_diff']} of 255 over the decoded frames, "
        f"{frames['video_max_abs_diff']} over all {frames['compared']} (mean {frames['video_mean_abs_diff']:.4f})",
        f"cold start: assemble {report['cold_start']['assemble_s']:.2f} s, "
        f"warm-up {report['cold_start']['warm_up_s']:.2f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from pydantic import ValidationError

    parser = argparse.ArgumentParser(prog="bench_gpu.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        run(parser.parse_args(argv))
    except ValidationError as error:
        sys.exit(f"bench: {error}")
