"""The CogVideoX text-to-video runner end to end on the tiny preset (real modules, random weights)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import redis
import torch
from diffusers import CogVideoXPipeline

from models import presets
from openreel.settings import Settings
from openreel.storage import LocalStorage
from pipelines.cogvideox import T2V_REPO
from pipelines.cogvideox.components import CogVideoXComponents
from pipelines.cogvideox.runner import NUM_FRAMES, TextToVideo, load_family
from pipelines.cogvideox.schema import TextToVideoInput
from pipelines.fal_types import File, ImageSize
from workers.context import JobContext, Progress, RequestCancelled
from workers.outputs import OutputWriter

# Non-square, so a swapped width/height shows up.
WIDTH, HEIGHT = 64, 48
STEPS = 3
STAGES = ["encoding prompt", "denoising", "decoding", "encoding video", "uploading"]
FILES_BASE = "http://files.test"


@dataclass
class Recorded:
    logs: list[str] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    storage: LocalStorage | None = None

    def path_of(self, url: str) -> Path:
        path = self.storage.path_of(url.removeprefix(f"{FILES_BASE}/files/"))  # type: ignore[union-attr]
        assert path is not None, url
        return path


def make_context(
    out_dir: Path, connection: redis.Redis, cancel_when=lambda logs: False
) -> tuple[JobContext, Recorded]:
    """A real JobContext writing through the worker's output writer into local storage;
    ``cancel_when(logs)`` plays the user pressing cancel."""
    recorded = Recorded()
    progress = Progress(log=recorded.logs.append, cancelled=lambda: cancel_when(recorded.logs))
    writer = OutputWriter(LocalStorage(out_dir / "files", connection, 3600), FILES_BASE, progress, out_dir / "tmp")

    def write_video(frames: np.ndarray, fps: int, file_name: str = "output.mp4") -> File:
        recorded.frames.append(frames)
        return writer.write_video(frames, fps, file_name)

    recorded.storage = writer.storage
    return JobContext(request_id="test", progress=progress, write_video=write_video), recorded


def request(**overrides) -> TextToVideoInput:
    fields = dict(
        prompt="a cat walking on the beach at sunset",
        video_size=ImageSize(width=WIDTH, height=HEIGHT),
        num_inference_steps=STEPS,
        seed=7,
        use_rife=False,
        export_fps=8,
    )
    return TextToVideoInput(**{**fields, **overrides})


def read_video(path: Path) -> tuple[dict, list[bytes]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, list(reader)


def tiny_settings(models_dir: Path) -> Settings:
    return Settings(models="tiny", model_cache_dir=models_dir, device="cpu")


@pytest.fixture(scope="module")
def t2v(models_dir: Path) -> TextToVideo:
    runners = load_family(settings=tiny_settings(models_dir), endpoints=["fal-ai/cogvideox-5b"])
    assert list(runners) == ["fal-ai/cogvideox-5b"]
    return runners["fal-ai/cogvideox-5b"]


@pytest.fixture(scope="module")
def first_run(t2v: TextToVideo, tmp_path_factory: pytest.TempPathFactory, redis_connection: redis.Redis):
    ctx, recorded = make_context(tmp_path_factory.mktemp("first"), redis_connection)
    return t2v.run(request(), ctx), recorded


def test_video_has_49_frames_at_the_requested_size(first_run) -> None:
    output, recorded = first_run
    assert output.seed == 7 and output.prompt == request().prompt
    (frames,) = recorded.frames
    assert frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    path = recorded.path_of(output.video.url)
    meta, encoded = read_video(path)
    assert meta["size"] == (WIDTH, HEIGHT)
    assert meta["fps"] == 8
    assert len(encoded) == NUM_FRAMES
    assert output.video.file_size == path.stat().st_size


def test_progress_reports_stages_steps_and_timings(first_run) -> None:
    output, recorded = first_run
    steps = [f"step {i}/{STEPS}" for i in range(1, STEPS + 1)]
    speed = "speed: eager, fused QKV, attention torch default"  # the worker's speed options, per request
    assert recorded.logs == [STAGES[0], STAGES[1], speed, *steps, *STAGES[2:]]
    assert set(output.timings) == {stage.replace(" ", "_") for stage in STAGES}
    assert all(seconds >= 0 for seconds in output.timings.values())


def test_same_seed_same_video_other_seed_other_video(
    t2v: TextToVideo, first_run, tmp_path: Path, redis_connection: redis.Redis
) -> None:
    (reference,) = first_run[1].frames
    ctx, same = make_context(tmp_path, redis_connection)
    t2v.run(request(), ctx)
    np.testing.assert_array_equal(same.frames[0], reference)

    ctx, other = make_context(tmp_path, redis_connection)
    t2v.run(request(seed=8), ctx)
    assert np.abs(other.frames[0].astype(int) - reference).mean() > 1.0


def test_random_seed_is_reported_and_rife_doubles_the_frames(
    t2v: TextToVideo, tmp_path: Path, redis_connection: redis.Redis
) -> None:
    ctx, recorded = make_context(tmp_path, redis_connection)
    output = t2v.run(request(seed=None, use_rife=True, num_inference_steps=1, export_fps=16), ctx)
    assert 0 <= output.seed < 2**31
    (frames,) = recorded.frames
    assert frames.shape == (2 * NUM_FRAMES - 1, HEIGHT, WIDTH, 3)
    assert "use_rife: 49 frames doubled to 97, written at 16 fps (6.1 s)" in recorded.logs
    assert output.timings["interpolating"] >= 0
    meta, encoded = read_video(recorded.path_of(output.video.url))
    assert (len(encoded), meta["fps"]) == (97, 16)


def test_guidance_scale_one_skips_classifier_free_guidance(
    t2v: TextToVideo, tmp_path: Path, redis_connection: redis.Redis
) -> None:
    ctx, recorded = make_context(tmp_path, redis_connection)
    t2v.run(request(guidance_scale=1.0, num_inference_steps=2), ctx)
    assert recorded.frames[0].shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)


def test_cancel_stops_at_the_next_step_before_decoding(
    t2v: TextToVideo, tmp_path: Path, redis_connection: redis.Redis
) -> None:
    ctx, recorded = make_context(tmp_path, redis_connection, cancel_when=lambda logs: "step 2/5" in logs)
    with pytest.raises(RequestCancelled):
        t2v.run(request(num_inference_steps=5), ctx)
    assert recorded.logs[-1] == "step 2/5"
    assert "decoding" not in recorded.logs
    assert recorded.frames == []


def test_warm_up_runs_without_a_request(t2v: TextToVideo) -> None:
    t2v.warm_up()


def test_weights_come_from_the_generated_repo_via_from_pretrained(
    t2v: TextToVideo, models_dir: Path, monkeypatch
) -> None:
    location = presets.tiny_dir(T2V_REPO, models_dir)
    index = json.loads((location / "model_index.json").read_text())
    assert index["_class_name"] == "CogVideoXPipeline"
    assert index["transformer"] == ["diffusers", "CogVideoXTransformer3DModel"]
    assert index["scheduler"] == ["diffusers", "CogVideoXDDIMScheduler"]

    calls = []
    real_from_pretrained = CogVideoXPipeline.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append((args, kwargs))
        return real_from_pretrained(cls, *args, **kwargs)

    monkeypatch.setattr(CogVideoXPipeline, "from_pretrained", classmethod(spy))
    components = CogVideoXComponents.load(tiny_settings(models_dir), with_i2v=False)
    assert calls == [((str(location),), {"dtype": torch.float32})]
    assert components.location == t2v.components.location == str(location)

    # The THUDM demo's sampler replaces the repo's DDIM at load time.
    assert type(t2v.pipe.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert t2v.pipe.scheduler.config.timestep_spacing == "trailing"
    assert t2v.pipe.transformer.config.max_text_seq_length == 226
    assert t2v.pipe.tokenizer.model_max_length == 226
    assert t2v.pipe.vae.config.scaling_factor == 0.7
    assert presets.resolve(T2V_REPO, "full", models_dir) == T2V_REPO


def test_tiny_repo_is_reused_not_rebuilt(t2v: TextToVideo, models_dir: Path, monkeypatch) -> None:
    location = presets.tiny_dir(T2V_REPO, models_dir)
    marker = location / presets.COMPLETE_MARKER
    built_at = marker.stat().st_mtime_ns

    def must_not_build(directory: Path) -> None:
        raise AssertionError("tiny repo rebuilt although it was complete")

    monkeypatch.setitem(presets.TINY_BUILDERS, T2V_REPO, must_not_build)
    assert presets.resolve(T2V_REPO, "tiny", models_dir) == str(location)
    assert marker.stat().st_mtime_ns == built_at


def test_a_build_that_loses_the_race_is_discarded(tmp_path: Path, monkeypatch) -> None:
    def winner(directory: Path) -> None:
        directory.mkdir()
        (directory / "weights").write_text("winner")

    def loser(directory: Path) -> None:
        directory.mkdir()
        (directory / "weights").write_text("loser")
        # Another process finishes first while this build is still being written.
        monkeypatch.setitem(presets.TINY_BUILDERS, "test/race", winner)
        presets.make_tiny("test/race", tmp_path)

    monkeypatch.setitem(presets.TINY_BUILDERS, "test/race", loser)
    location = presets.make_tiny("test/race", tmp_path)
    assert (location / "weights").read_text() == "winner"
    assert presets.is_complete(location)
    assert sorted(p.name for p in location.parent.iterdir()) == ["race"]
