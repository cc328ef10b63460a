"""``fal-ai/animatediff-v2v/turbo`` through the real queue (API, Redis, one worker) on the tiny
preset: frame count and rate follow select_every_nth_frame, long clips go through FreeNoise, and
bad input is a 422 naming the field, whether the API or the worker finds it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.generated_inputs import data_uri, gradient_frames, mp4_bytes, png_bytes
from tests.media import probe_video
from tests.stack import Stack

ENDPOINT = "fal-ai/animatediff-v2v/turbo"
BASE = {"prompt": "a paper boat, (watercolor:1.3)", "num_inference_steps": 4, "seed": 3}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[httpx.Client]:
    """A worker for this endpoint alone, so it starts without the other families' weights."""
    env = {"OPENREEL_ENDPOINTS": ENDPOINT}
    running = Stack(tmp_path_factory.mktemp("animatediff"), models_dir, workers=1, env=env).start()
    with running.client() as http:
        yield http
    running.stop()


def call(client: httpx.Client, **fields: Any) -> tuple[httpx.Response, list[str]]:
    submitted = client.post(f"/queue/{ENDPOINT}", json={**BASE, **fields})
    if submitted.status_code != 200:
        return submitted, []
    urls = submitted.json()
    deadline = time.monotonic() + 180
    while (status := client.get(urls["status_url"], params={"logs": 1}).json())["status"] != "COMPLETED":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return client.get(urls["response_url"]), [entry["message"] for entry in status["logs"]]


def video_facts(client: httpx.Client, response: httpx.Response, directory: Path) -> tuple[int, float, int, int]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"video", "seed"} and body["seed"] == BASE["seed"]
    path = directory / "out.mp4"
    path.write_bytes(client.get(body["video"]["url"]).content)
    facts = probe_video(path)
    return facts.frames, facts.fps, facts.width, facts.height


def test_every_nth_frame_keeps_the_duration(client: httpx.Client, tmp_path: Path) -> None:
    clip = data_uri(mp4_bytes(gradient_frames(12, (64, 48)), fps=24), "video/mp4")  # 0.5 s
    response, logs = call(client, video_url=clip)  # select_every_nth_frame defaults to 2
    assert video_facts(client, response, tmp_path) == (6, 12, 64, 48)
    assert "video_url: 12 frames at 24 fps -> every 2: 6 at 12 fps, 64x48 fitted to 64x48" in logs
    assert logs.count("step 4/4") == 1
    response, _ = call(client, video_url=clip, select_every_nth_frame=3)
    assert video_facts(client, response, tmp_path) == (4, 8, 64, 48)


def test_a_clip_longer_than_the_motion_context_goes_through_freenoise(client: httpx.Client, tmp_path: Path) -> None:
    # The tiny motion adapter has positions for 24 frames: without FreeNoise 40 would not run.
    clip = data_uri(mp4_bytes(gradient_frames(40, (32, 32)), fps=20), "video/mp4")
    response, logs = call(client, video_url=clip, select_every_nth_frame=1)
    assert video_facts(client, response, tmp_path) == (40, 20, 32, 32)
    assert "40 frames: FreeNoise windows of 16, 4 apart" in logs


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"select_every_nth_frame": 0}, "select_every_nth_frame"),
        ({"select_every_nth_frame": -2}, "select_every_nth_frame"),
        ({"num_inference_steps": 3}, "num_inference_steps"),
        ({"num_inference_steps": 13}, "num_inference_steps"),
        ({"loras": [{"path": "a/b"}] * 9}, "loras.8"),
    ],
)
def test_out_of_range_fields_are_refused_at_the_api(client: httpx.Client, fields: dict, loc: str) -> None:
    response, _ = call(client, video_url="https://example.com/clip.mp4", **fields)
    assert response.status_code == 422
    assert [".".join(map(str, entry["loc"][1:])) for entry in response.json()["detail"]] == [loc]


def test_a_picture_as_video_url_is_a_422_from_the_worker(client: httpx.Client) -> None:
    response, _ = call(client, video_url=data_uri(png_bytes((32, 32)), "video/mp4"))
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "video_url"] and "not a video" in detail["msg"]
