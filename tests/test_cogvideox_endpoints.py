"""The three CogVideoX endpoints through the real queue (API, Redis, one worker) on the tiny
preset: every field moves the output the way a fal user expects, LoRAs come and go without a
trace, and bad input is a 422 naming the field."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import numpy as np
import pytest

from tests.generated_inputs import data_uri, gradient_frames, lora_bytes, mp4_bytes, png_bytes
from tests.stack import Stack

T2V = "fal-ai/cogvideox-5b"
I2V = "fal-ai/cogvideox-5b/image-to-video"
V2V = "fal-ai/cogvideox-5b/video-to-video"
MAX_SIDE = 512  # OPENREEL_VIDEO_MAX_SIDE of this stack
HF_REPO = "testorg/tiny-lora"
# Small and quick; use_rife off and 8 fps unless a test is about them.
BASE = {
    "prompt": "a red kite over dunes",
    "video_size": {"width": 64, "height": 48},
    "num_inference_steps": 2,
    "seed": 11,
    "use_rife": False,
    "export_fps": 8,
}
LORA = lora_bytes(seed=0)
CLIP = gradient_frames(49, (64, 48), seed=1)


@dataclass
class Result:
    status_code: int
    body: dict[str, Any]
    logs: list[str] = field(default_factory=list)
    video: bytes = b""

    def frames(self, directory: Path) -> tuple[dict[str, Any], np.ndarray]:
        path = directory / "out.mp4"
        path.write_bytes(self.video)
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = np.stack([np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader])
        return meta, frames

    def detail(self) -> list[tuple[str, str]]:
        assert self.status_code == 422, (self.status_code, self.body)
        return [(".".join(str(part) for part in entry["loc"][1:]), entry["msg"]) for entry in self.body["detail"]]


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("loras")
    (directory / "style.safetensors").write_bytes(LORA)
    return directory


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache holding one LoRA repo, laid out as huggingface_hub lays it out."""
    cache = tmp_path_factory.mktemp("hf")
    repo = cache / f"models--{HF_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    (snapshot / "pytorch_lora_weights.safetensors").write_bytes(lora_bytes(seed=1))
    return cache


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, lora_dir: Path, hf_cache: Path) -> Iterator[Stack]:
    """One worker, so LoRA state carried from one request to the next is really tested."""
    env = {
        "OPENREEL_LORA_DIRS": str(lora_dir),
        "OPENREEL_VIDEO_MAX_SIDE": str(MAX_SIDE),
        "HF_HUB_CACHE": str(hf_cache),
    }
    running = Stack(tmp_path_factory.mktemp("reel"), models_dir, workers=1, env=env).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(reel: Stack) -> Iterator[httpx.Client]:
    with reel.client() as http:
        yield http


def call(client: httpx.Client, endpoint: str, **overrides: Any) -> Result:
    """Submit through the queue, wait, and collect the result, its logs and its video."""
    submitted = client.post(f"/queue/{endpoint}", json={**BASE, **overrides})
    if submitted.status_code != 200:
        return Result(submitted.status_code, submitted.json())
    urls = submitted.json()
    deadline = time.monotonic() + 180
    while (status := client.get(urls["status_url"], params={"logs": 1}).json())["status"] != "COMPLETED":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    response = client.get(urls["response_url"])
    result = Result(response.status_code, response.json(), [entry["message"] for entry in status["logs"]])
    if response.status_code == 200:
        result.video = client.get(result.body["video"]["url"]).content
    return result


def ok(client: httpx.Client, endpoint: str, **overrides: Any) -> Result:
    result = call(client, endpoint, **overrides)
    assert result.status_code == 200, (result.body, result.logs)
    return result


def test_image_to_video_fields_each_change_the_video(client: httpx.Client, tmp_path: Path) -> None:
    image = data_uri(png_bytes((120, 90)), "image/png")
    base = ok(client, I2V, image_url=image)
    meta, frames = base.frames(tmp_path)
    assert (frames.shape, meta["fps"]) == ((49, 48, 64, 3), 8)
    assert ok(client, I2V, image_url=image).video == base.video
    variants = {
        "seed": {"seed": 12},
        "prompt": {"prompt": "a blue kite over dunes"},
        "negative_prompt": {"negative_prompt": "blurry"},
        "guidance_scale": {"guidance_scale": 1.0},
        "num_inference_steps": {"num_inference_steps": 3},
        "image_url": {"image_url": data_uri(png_bytes((120, 90), seed=5), "image/png")},
    }
    for name, change in variants.items():
        assert ok(client, I2V, **{"image_url": image, **change}).video != base.video, name


def test_image_to_video_at_another_size_is_generated_natively_and_resized(client: httpx.Client, tmp_path: Path) -> None:
    image = data_uri(png_bytes((90, 120)), "image/png")
    result = ok(client, I2V, image_url=image, video_size={"width": 96, "height": 96}, use_rife=True, export_fps=24)
    meta, frames = result.frames(tmp_path)
    assert (frames.shape, meta["fps"]) == ((97, 96, 96, 3), 24)
    assert "video_size: CogVideoX-5B-I2V generates 64x48 only; the image is framed at 96x96 and the video " \
           "resized to 96x96" in result.logs
    assert "use_rife: 49 frames doubled to 97, written at 24 fps (4.0 s)" in result.logs


def test_text_to_video_rife_and_export_fps_set_frame_count_and_rate(client: httpx.Client, tmp_path: Path) -> None:
    doubled = ok(client, T2V, use_rife=True, export_fps=16)
    meta, frames = doubled.frames(tmp_path)
    assert (len(frames), meta["fps"], meta["duration"]) == (97, 16, pytest.approx(97 / 16, abs=0.1))
    assert {"interpolating", "denoising", "decoding"} <= set(doubled.body["timings"])
    plain = ok(client, T2V, use_rife=False, export_fps=12)
    meta, frames = plain.frames(tmp_path)
    assert (len(frames), meta["fps"]) == (49, 12)
    # RIFE keeps the generated frames and only adds the in-betweens.
    assert np.abs(doubled.frames(tmp_path)[1][::2].astype(int) - plain.frames(tmp_path)[1]).mean() < 3


def test_video_to_video_conforms_the_input_and_strength_spans_keep_to_remake(
    client: httpx.Client, tmp_path: Path
) -> None:
    clip = data_uri(mp4_bytes(CLIP, fps=8), "video/mp4")
    kept = ok(client, V2V, video_url=clip, strength=0.0)
    assert "strength 0 leaves 0 of 2 denoising steps: the input video is returned as it is" in kept.logs
    assert not any(line.startswith("step") for line in kept.logs)
    _, frames = kept.frames(tmp_path)
    assert frames.shape == CLIP.shape
    assert np.abs(frames.astype(int) - CLIP).mean() < 6  # the input, through H.264 (4:2:0) twice

    other_clip = data_uri(mp4_bytes(gradient_frames(49, (64, 48), seed=9)[:, ::-1], fps=8), "video/mp4")
    remade = ok(client, V2V, video_url=clip, strength=1.0)
    assert ok(client, V2V, video_url=other_clip, strength=1.0).video == remade.video  # nothing of the input left
    assert "step 2/2" in remade.logs
    _, remade_frames = remade.frames(tmp_path)
    assert np.abs(remade_frames.astype(int) - CLIP).mean() > 20

    halfway = ok(client, V2V, video_url=clip, strength=0.5, num_inference_steps=4)
    assert "step 2/2" in halfway.logs  # int(4 * 0.5) of the 4 steps run
    assert halfway.video not in (kept.video, remade.video)
    assert ok(client, V2V, video_url=other_clip, strength=0.5, num_inference_steps=4).video != halfway.video

    # 60 frames at 24 fps (2.5 s) become 20 at 8 fps, then hold the last frame up to 49.
    wide = data_uri(mp4_bytes(gradient_frames(60, (96, 48)), fps=24), "video/mp4")
    conformed = ok(client, V2V, video_url=wide, strength=0.0, video_size={"width": 48, "height": 48})
    assert "video_url: 60 frames at 24 fps -> 20 at 8 fps, padded with its last frame to 49, fitted to 48x48" \
        in conformed.logs
    _, frames = conformed.frames(tmp_path)
    assert frames.shape == (49, 48, 48, 3)
    assert np.abs(frames[19:].astype(int) - frames[19]).max() < 8  # the held last frame


def test_lora_changes_the_video_and_leaves_no_trace(client: httpx.Client, lora_dir: Path) -> None:
    clip = data_uri(mp4_bytes(CLIP, fps=8), "video/mp4")
    t2v_before = ok(client, T2V).video
    v2v_before = ok(client, V2V, video_url=clip).video

    styled = ok(client, V2V, video_url=clip, loras=[{"path": data_uri(LORA, "application/octet-stream")}])
    assert styled.video != v2v_before
    assert any("loaded from its URL" in line for line in styled.logs)
    # The same bytes from an allowed directory: found by content, not loaded twice.
    local = ok(client, V2V, video_url=clip, loras=[{"path": str(lora_dir / "style.safetensors"), "scale": 1}])
    assert local.video == styled.video
    assert any("already loaded" in line for line in local.logs)
    half = ok(client, V2V, video_url=clip, loras=[{"path": str(lora_dir / "style.safetensors"), "scale": 0.5}])
    assert half.video not in (styled.video, v2v_before)
    from_hub = ok(client, V2V, video_url=clip, loras=[{"path": HF_REPO}])
    assert any(f"from the Hugging Face repo {HF_REPO}" in line for line in from_hub.logs)
    assert from_hub.video not in (styled.video, v2v_before)
    i2v_image = data_uri(png_bytes((64, 48)), "image/png")
    i2v_styled = ok(client, I2V, image_url=i2v_image, loras=[{"path": HF_REPO}])
    assert i2v_styled.video != ok(client, I2V, image_url=i2v_image).video

    # Text-to-video shares the video-to-video transformer the adapters were loaded into.
    assert ok(client, T2V).video == t2v_before
    assert ok(client, V2V, video_url=clip).video == v2v_before


@pytest.mark.parametrize(
    ("endpoint", "change", "loc", "message"),
    [
        (T2V, {"video_size": {"width": 50, "height": 48}}, "video_size", "width must be a multiple of 16"),
        (I2V, {"video_size": {"width": 64, "height": MAX_SIDE + 16}}, "video_size", f"between 16 and {MAX_SIDE}"),
        (V2V, {"video_size": "square_hd"}, "video_size", f"between 16 and {MAX_SIDE}, got 1024"),
        (T2V, {"num_inference_steps": 0}, "num_inference_steps", "greater than or equal to 1"),
        (I2V, {"num_inference_steps": 51}, "num_inference_steps", "less than or equal to 50"),
        (V2V, {"guidance_scale": 20.5}, "guidance_scale", "less than or equal to 20"),
        (T2V, {"export_fps": 3}, "export_fps", "greater than or equal to 4"),
        (T2V, {"export_fps": 33}, "export_fps", "less than or equal to 32"),
        (T2V, {"seed": -1}, "seed", "greater than or equal to 0"),
        (V2V, {"strength": 1.01}, "strength", "less than or equal to 1"),
        (V2V, {"strength": -0.1}, "strength", "greater than or equal to 0"),
        (I2V, {"loras": [{"path": "a/b"}, {"path": "c/d"}]}, "loras.1", "Only 1 LoRA is supported"),
        (V2V, {"loras": [{"scale": 1}]}, "loras.0.path", "Field required"),
        (I2V, {"image_url": None}, "image_url", "valid string"),
    ],
)
def test_invalid_fields_are_refused_at_submit(
    client: httpx.Client, endpoint: str, change: dict, loc: str, message: str
) -> None:
    extra = {"image_url": "https://example.com/a.png"} if endpoint == I2V else {}
    extra |= {"video_url": "https://example.com/a.mp4"} if endpoint == V2V else {}
    result = call(client, endpoint, **{**extra, **change})
    assert any(where == loc and message in msg for where, msg in result.detail()), result.body


def test_unusable_files_are_422s_naming_the_field(client: httpx.Client, tmp_path: Path) -> None:
    png = data_uri(png_bytes((64, 48)), "image/png")
    clip = data_uri(mp4_bytes(CLIP[:9], fps=8), "video/mp4")
    cases = [
        (I2V, {"image_url": clip}, "image_url", "not an image"),
        (V2V, {"video_url": png}, "video_url", "not a video"),
        (V2V, {"video_url": clip, "loras": [{"path": png}]}, "loras.0.path", "not a LoRA in safetensors format"),
        (
            V2V,
            {"video_url": clip, "loras": [{"path": data_uri(lora_bytes(attention_head_dim=32), "x/y")}]},
            "loras.0.path",
            "Not a LoRA for CogVideoX-5B",
        ),
        (I2V, {"image_url": png, "loras": [{"path": str(tmp_path / "x.safetensors")}]}, "loras.0.path", "LORA_DIRS"),
        (I2V, {"image_url": png, "loras": [{"path": "testorg/absent"}]}, "loras.0.path", "not in this server's cache"),
        (I2V, {"image_url": png, "loras": [{"path": "lora.safetensors"}]}, "loras.0.path", "Hugging Face repo id"),
    ]
    for endpoint, change, loc, message in cases:
        result = call(client, endpoint, **change)
        assert any(where == loc and message in msg for where, msg in result.detail()), (loc, result.body)
