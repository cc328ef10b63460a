"""fal-ai/video-as-prompt through the real queue (API, Redis, one worker) on the tiny preset.

The worker generates the documented sizes scaled down by OPENREEL_VIDEO_AS_PROMPT_MAX_PIXELS
(the mapping itself is tested exactly in test_video_as_prompt_model) and runs a safety checker
whose thresholds flag every image, so enable_safety_checker decides each request's fate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.tiny import safety_checker
from pipelines.video_as_prompt.schema import capped_size, output_size
from tests.generated_inputs import data_uri, gradient_frames, mp4_bytes, png_bytes
from tests.media import probe_video
from tests.stack import Stack

ENDPOINT = "fal-ai/video-as-prompt"
MAX_PIXELS = 4096
CLIP = data_uri(mp4_bytes(gradient_frames(24, (64, 48), seed=1), fps=8), "video/mp4")
BASE = {
    "prompt": "a chestnut horse inflates and floats away",
    "video_url": CLIP,
    "image_url": data_uri(png_bytes((96, 64)), "image/png"),
    "video_description": "a sneaker inflates like a balloon and rises",
    "num_frames": 5,
    "fps": 8,
    "seed": 3,
    "enable_safety_checker": False,
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[httpx.Client]:
    checker = tmp_path_factory.mktemp("checker") / "flags-everything"
    safety_checker.build(checker, threshold=-2.0)
    env = {
        "OPENREEL_ENDPOINTS": ENDPOINT,
        "OPENREEL_VIDEO_AS_PROMPT_STEPS": "2",
        "OPENREEL_VIDEO_AS_PROMPT_MAX_PIXELS": str(MAX_PIXELS),
        "OPENREEL_SAFETY_CHECKER": str(checker),
    }
    stack = Stack(tmp_path_factory.mktemp("vap"), models_dir, workers=1, env=env).start()
    with stack.client() as http:
        yield http
    stack.stop()


def call(client: httpx.Client, **overrides: Any) -> tuple[int, dict[str, Any], list[str], bytes]:
    submitted = client.post(f"/queue/{ENDPOINT}", json={**BASE, **overrides})
    if submitted.status_code != 200:
        return submitted.status_code, submitted.json(), [], b""
    urls = submitted.json()
    deadline = time.monotonic() + 120
    while (status := client.get(urls["status_url"], params={"logs": 1}).json())["status"] != "COMPLETED":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    response = client.get(urls["response_url"])
    logs = [entry["message"] for entry in status["logs"]]
    video = client.get(response.json()["video"]["url"]).content if response.status_code == 200 else b""
    return response.status_code, response.json(), logs, video


def test_every_aspect_ratio_and_resolution(client: httpx.Client, tmp_path: Path) -> None:
    for aspect_ratio in ("16:9", "9:16"):
        for resolution in ("480p", "580p", "720p"):
            code, body, logs, video = call(client, aspect_ratio=aspect_ratio, resolution=resolution)
            assert code == 200, (body, logs)
            assert set(body) == {"video"} and body["video"]["content_type"] == "video/mp4"
            width, height = output_size(aspect_ratio, resolution)
            small = capped_size((width, height), MAX_PIXELS)
            assert f"resolution: {resolution} {aspect_ratio} is {width}x{height}, over this server's " \
                   f"OPENREEL_VIDEO_AS_PROMPT_MAX_PIXELS; generated and delivered at {small[0]}x{small[1]}" in logs
            (tmp_path / "out.mp4").write_bytes(video)
            facts = probe_video(tmp_path / "out.mp4")
            assert ((facts.width, facts.height), facts.frames, facts.fps) == (small, 5, 8)
            assert "step 2/2" in logs and "safety check" not in logs


def test_same_seed_same_video_and_the_reference_video_steers_it(client: httpx.Client) -> None:
    code, _, logs, first = call(client, num_frames=7)
    assert code == 200
    assert "num_frames: 7 rounded down to 5 (1 + a multiple of 4)" in logs
    assert "video_url: 24 frames -> 5 evenly spaced, fitted to 48x80" in logs
    assert call(client, num_frames=7)[3] == first
    other = data_uri(mp4_bytes(gradient_frames(24, (64, 48), seed=8)[:, ::-1], fps=8), "video/mp4")
    assert call(client, num_frames=7, video_url=other)[3] != first


def test_a_flagged_video_is_a_content_policy_violation(client: httpx.Client) -> None:
    code, body, logs, _ = call(client, enable_safety_checker=True)
    assert code == 422, body
    assert body["error_type"] == "content_policy_violation"
    assert body["detail"][0]["type"] == "content_policy_violation"
    assert "flagged by the safety checker" in body["detail"][0]["msg"]
    assert "safety check" in logs and "encoding video" not in logs


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"video_description": None}, "video_description", "Field required"),
        ({"resolution": "1080p"}, "resolution", "'480p', '580p' or '720p'"),
        ({"aspect_ratio": "1:1"}, "aspect_ratio", "'16:9' or '9:16'"),
        ({"num_frames": 200}, "num_frames", "less than or equal to 121"),
    ],
)
def test_invalid_fields_are_refused_at_submit(client: httpx.Client, change: dict, loc: str, message: str) -> None:
    payload = {key: value for key, value in {**BASE, **change}.items() if value is not None}
    response = client.post(f"/queue/{ENDPOINT}", json=payload)
    assert response.status_code == 422
    assert any(entry["loc"] == ["body", loc] and message in entry["msg"] for entry in response.json()["detail"])


def test_an_image_url_that_is_not_an_image_is_a_422(client: httpx.Client) -> None:
    code, body, _, _ = call(client, image_url=CLIP)
    assert (code, body["error_type"]) == (422, "invalid_input")
    assert body["detail"][0]["loc"] == ["body", "image_url"] and "not an image" in body["detail"][0]["msg"]
