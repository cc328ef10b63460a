"""CogVideoX text-to-video: stock diffusers against openreel's runner, same process, same weights,
inputs and seed.

The stock path is what a diffusers user writes (the pipeline over the repo's modules, the THUDM
demo's DPM scheduler, no speed options), with the stages called one by one so each can be
timed; RIFE (which diffusers lacks) is openreel's network run the plain way, in float32 one pair
at a time, and the MP4 is diffusers' ``export_to_video``. The openreel path is ``TextToVideo.run``
over the same modules after ``CogVideoXComponents.assemble`` made them fast in place, so the
stock runs go first. Its MP4 stage is the worker's encoder without the upload (no storage here).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline
from diffusers.utils import export_to_video

from models.presets import resolve
from models.rife.interpolate import RifeInterpolator
from models.rife.weights import REPO_ID as RIFE_REPO_ID
from models.rife.weights import load_ifnet, load_rife, locate_weights
from openreel.settings import Settings
from pipelines.bench.measure import StageClock, TransformerFlops, medians
from pipelines.cogvideox import T2V_REPO
from pipelines.cogvideox.components import CogVideoXComponents
from pipelines.cogvideox.runner import NUM_FRAMES, TextToVideo
from pipelines.cogvideox.schema import TextToVideoInput
from pipelines.devices import dtype_for, resolve_device
from pipelines.fal_types import File
from pipelines.frames import to_uint8
from workers.context import JobContext, Progress
from workers.outputs import encode_mp4

log = logging.getLogger(__name__)

# The runner's progress stages, by the names the report uses.
STAGES = {
    "encoding prompt": "text_encoding",
    "denoising": "denoising",
    "decoding": "vae_decode",
    "interpolating": "rife",
    "encoding video": "mp4_encode",
}


@dataclass(frozen=True)
class BenchRequest:
    steps: int
    width: int
    height: int
    guidance_scale: float
    use_rife: bool
    seed: int = 42
    prompt: str = "A panda plays a small guitar in a bamboo forest, sunlight through the leaves."

    @property
    def export_fps(self) -> int:
        return 16 if self.use_rife else 8


def load_modules(settings: Settings, device: torch.device, dtype: torch.dtype) -> tuple[dict[str, Any], str]:
    """The T2V repo's components on ``device``: the tiny preset's files, or for ``full`` the
    real architecture with random weights (no download)."""
    if settings.models == "full":
        from models.full_size import cogvideox_5b_modules

        return cogvideox_5b_modules(device, dtype), "random weights, THUDM/CogVideoX-5b configs"
    location = resolve(T2V_REPO, "tiny", settings.models_dir)
    modules = dict(CogVideoXPipeline.from_pretrained(location, dtype=dtype).components)
    for module in modules.values():
        if isinstance(module, torch.nn.Module):
            module.to(device)
    return modules, location


def rife_weights(settings: Settings) -> Path:
    # The tiny preset's RIFE is the real IFNet with random weights: right for both presets.
    return locate_weights("tiny", settings.models_dir, repo_id=RIFE_REPO_ID)


def step_timer(clock: StageClock) -> Any:
    def on_step_end(pipe: object, step: int, timestep: object, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        clock.step()
        return callback_kwargs

    return on_step_end


def run_stock(pipe: Any, rife: RifeInterpolator, request: BenchRequest, clock: StageClock, out: Path) -> np.ndarray:
    use_cfg = request.guidance_scale > 1.0
    max_tokens = pipe.transformer.config.max_text_seq_length
    with torch.inference_mode():
        clock.begin("text_encoding")
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=request.prompt,
            negative_prompt="",
            do_classifier_free_guidance=use_cfg,
            max_sequence_length=max_tokens,
            device=pipe.transformer.device,
            dtype=pipe.transformer.dtype,
        )
        clock.begin("denoising")
        latents = pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            use_dynamic_cfg=True,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            height=request.height,
            width=request.width,
            num_frames=NUM_FRAMES,
            output_type="latent",
            callback_on_step_end=step_timer(clock),
            max_sequence_length=max_tokens,
        ).frames
        clock.begin("vae_decode")
        video = pipe.video_processor.postprocess_video(video=pipe.decode_latents(latents), output_type="np")
        frames = to_uint8(video[0])
        if request.use_rife:
            clock.begin("rife")
            frames = rife.double(frames)
    clock.end()
    as_floats = list(frames.astype(np.float32) / 255)  # export_to_video's input; not part of the stage
    clock.begin("mp4_encode")
    export_to_video(as_floats, str(out / "stock.mp4"), fps=request.export_fps)
    clock.end()
    return frames


def run_openreel(runner: TextToVideo, request: TextToVideoInput, clock: StageClock, out: Path) -> np.ndarray:
    written: list[np.ndarray] = []

    def on_log(line: str) -> None:
        if line in STAGES:
            clock.begin(STAGES[line])
        elif line.startswith("step "):
            clock.step()

    def write_video(frames: np.ndarray, fps: int, file_name: str = "output.mp4") -> File:
        path = out / "openreel.mp4"
        encode_mp4(frames, fps, path)
        written.append(frames)
        return File(url=path.as_uri(), content_type="video/mp4", file_name=file_name, file_size=path.stat().st_size)

    ctx = JobContext("bench", Progress(log=on_log, cancelled=lambda: False), write_video)
    runner.run(request, ctx)
    clock.end()
    return written[0]


def benchmark(settings: Settings, request: BenchRequest, repeats: int, warmups: int) -> dict[str, Any]:
    device = resolve_device(settings.device)
    dtype = dtype_for(device)
    modules, location = load_modules(settings, device, dtype)
    stock_pipe = CogVideoXPipeline(
        **{
            **modules,
            "scheduler": CogVideoXDPMScheduler.from_config(modules["scheduler"].config, timestep_spacing="trailing"),
        }
    )
    stock_pipe.set_progress_bar_config(disable=True)
    flops = TransformerFlops.for_call(
        modules["transformer"], NUM_FRAMES, request.height, request.width, request.guidance_scale > 1.0
    )
    stock_rife = RifeInterpolator(load_ifnet(rife_weights(settings)), device, torch.float32, batch_size=1)

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        stock_clocks, stock_frames = _repeat(
            lambda clock: run_stock(stock_pipe, stock_rife, request, clock, out), device, repeats, warmups
        )
        del stock_pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()

        started = time.perf_counter()
        rife = load_rife("tiny", settings.models_dir, device)
        components = CogVideoXComponents.assemble(settings, modules, location, device, dtype, rife)
        runner = TextToVideo(components)
        assembled = time.perf_counter()
        if settings.warmup:
            runner.warm_up()
        ready = time.perf_counter()

        validated = TextToVideoInput.model_validate(
            dict(
                prompt=request.prompt,
                video_size=dict(width=request.width, height=request.height),
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                use_rife=request.use_rife,
                export_fps=request.export_fps,
                seed=request.seed,
            ),
            context={"settings": settings},
        )
        openreel_clocks, openreel_frames = _repeat(
            lambda clock: run_openreel(runner, validated, clock, out), device, repeats, warmups
        )

    report = _report(request, stock_clocks, openreel_clocks, stock_frames, openreel_frames, flops)
    return {
        "endpoint": TextToVideo.endpoint_id,
        "preset": settings.models,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "speed": components.speed.describe(),
        "lossless": components.speed.lossless,
        **report,
        "cold_start": {"assemble_s": assembled - started, "warm_up_s": ready - assembled},
    }


def _repeat(run: Any, device: torch.device, repeats: int, warmups: int) -> tuple[list[StageClock], np.ndarray]:
    clocks: list[StageClock] = []
    frames = None
    for index in range(warmups + repeats):
        clock = StageClock(device)
        try:
            frames = run(clock)
        finally:
            clock.close()
        if index >= warmups:
            clocks.append(clock)
    assert frames is not None
    return clocks, frames


def _report(
    request: BenchRequest,
    stock_clocks: list[StageClock],
    openreel_clocks: list[StageClock],
    stock_frames: np.ndarray,
    openreel_frames: np.ndarray,
    flops: TransformerFlops,
) -> dict[str, Any]:
    stock, ours = medians(stock_clocks), medians(openreel_clocks)
    stages = {
        stage: {"stock": stock[stage], "openreel": ours[stage], "ratio": _ratio(ours[stage], stock[stage])}
        for stage in stock
        if stage in ours
    }
    stock_step = float(np.median([s for c in stock_clocks for s in c.step_seconds]))
    ours_step = float(np.median([s for c in openreel_clocks for s in c.step_seconds]))
    totals = {
        "stock_s": sum(entry["median_s"] for entry in stock.values()),
        "openreel_s": sum(entry["median_s"] for entry in ours.values()),
    }
    difference = np.abs(stock_frames.astype(np.int16) - openreel_frames.astype(np.int16))
    decoded = difference[::2] if request.use_rife else difference
    return {
        "request": {
            "steps": request.steps,
            "frames": NUM_FRAMES,
            "width": request.width,
            "height": request.height,
            "guidance_scale": request.guidance_scale,
            "use_rife": request.use_rife,
            "seed": request.seed,
        },
        "repeats": len(openreel_clocks),
        "memory_metric": openreel_clocks[0].memory_metric,
        "stages": stages,
        "denoising_step": {
            "stock_median_s": stock_step,
            "openreel_median_s": ours_step,
            "ratio": ours_step / stock_step,
        },
        "total": {**totals, "ratio": totals["openreel_s"] / totals["stock_s"]},
        "transformer": {
            "formula": "batch * (2 * P * L + layers * 4 * L^2 * d) per step",
            "per_token_linear_params": flops.params,
            "tokens": flops.tokens,
            "width": flops.width,
            "layers": flops.layers,
            "batch": flops.batch,
            "flops_per_step": flops.per_step,
            "stock_tflops": flops.per_step / stock_step / 1e12,
            "openreel_tflops": flops.per_step / ours_step / 1e12,
        },
        "frames": {
            "compared": len(difference),
            "decoded_max_abs_diff": int(decoded.max()),
            "video_max_abs_diff": int(difference.max()),
            "video_mean_abs_diff": float(difference.mean()),
        },
    }


def _ratio(ours: dict[str, float], stock: dict[str, float]) -> float | None:
    return ours["median_s"] / stock["median_s"] if stock["median_s"] else None
