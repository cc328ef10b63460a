"""The official Python fal-client, unmodified, over TLS: only FAL_* environment variables point it here."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.conftest import API_KEY
from tests.media import download_video
from tests.stack import Stack, wait_until

APP = "fal-ai/cogvideox-5b"
SMALL = {"prompt": "a red kite over dunes", "video_size": {"width": 64, "height": 48}, "num_inference_steps": 4}
# On the tiny preset: ~7 s of denoising (cancellable at each step), then ~9 s of VAE decode.
SLOW = {"prompt": "a slow one", "video_size": {"width": 320, "height": 320}, "num_inference_steps": 50}


@pytest.fixture(scope="module")
def fal(stack: Stack) -> ModuleType:
    """fal_client reads its hosts when imported, so the variables are set first (recipe P1)."""
    host = stack.base_url.removeprefix("https://")
    os.environ.update(
        {
            "FAL_KEY": API_KEY,
            "FAL_RUN_HOST": f"{host}/run",
            "FAL_QUEUE_RUN_HOST": f"{host}/queue",
            "SSL_CERT_FILE": str(stack.tls.cert),  # type: ignore[union-attr]
        }
    )
    for name in [m for m in sys.modules if m == "fal_client" or m.startswith("fal_client.")]:
        del sys.modules[name]
    return importlib.import_module("fal_client")


def test_subscribe_with_logs_returns_a_playable_video(fal: ModuleType, stack: Stack, tmp_path: Path) -> None:
    updates = []
    result = fal.subscribe(APP, arguments=SMALL | {"seed": 7}, with_logs=True, on_queue_update=updates.append)
    assert set(result) == {"video", "seed", "prompt", "timings"}
    assert result["seed"] == 7 and result["prompt"] == SMALL["prompt"]
    video = result["video"]
    assert video["content_type"] == "video/mp4"
    assert video["file_name"].endswith(".mp4")
    facts = download_video(video["url"], tmp_path, verify=stack.verify)
    assert (facts.frames, facts.width, facts.height, facts.codec) == (97, 64, 48, "h264")  # use_rife: 49 -> 97
    assert facts.size_bytes == video["file_size"]
    assert facts.fps == pytest.approx(16)
    assert set(result["timings"]) >= {"encoding_prompt", "denoising", "decoding", "encoding_video"}
    messages = [log["message"] for update in updates if isinstance(update, fal.InProgress) for log in update.logs or []]
    assert "step 4/4" in messages and "denoising" in messages


def test_same_seed_same_video_and_random_seed_returned(fal: ModuleType, stack: Stack, tmp_path: Path) -> None:
    first = fal.subscribe(APP, arguments=SMALL | {"seed": 1234})
    second = fal.subscribe(APP, arguments=SMALL | {"seed": 1234})

    def fetch(result: dict) -> bytes:
        return httpx.get(result["video"]["url"], verify=stack.verify).content

    assert fetch(first) == fetch(second)
    unseeded = fal.subscribe(APP, arguments=SMALL)
    assert isinstance(unseeded["seed"], int)


def test_sync_run(fal: ModuleType, stack: Stack, tmp_path: Path) -> None:
    result = fal.run(APP, arguments=SMALL | {"export_fps": 8})
    facts = download_video(result["video"]["url"], tmp_path, verify=stack.verify)
    assert facts.fps == pytest.approx(8) and facts.frames == 97


def test_submit_status_events_and_result(fal: ModuleType) -> None:
    handle = fal.submit(APP, arguments=SMALL)
    first = handle.status(with_logs=True)
    assert isinstance(first, (fal.Queued, fal.InProgress, fal.Completed))
    events = list(handle.iter_events(with_logs=True, interval=0.05))
    assert isinstance(events[-1], fal.Completed)
    assert events[-1].error is None
    assert handle.get()["video"]["url"]
    # The module-level calls rebuild URLs from owner/alias, dropping any subpath.
    assert isinstance(fal.status(APP, handle.request_id, with_logs=False), fal.Completed)
    assert fal.result(APP, handle.request_id)["seed"] == handle.get()["seed"]


def test_cancel_running_and_queued(fal: ModuleType) -> None:
    running = [fal.submit(APP, arguments=SLOW) for _ in range(2)]  # both workers busy
    queued = fal.submit(APP, arguments=SLOW, priority="low")
    for handle in running:
        wait_until(lambda h=handle: isinstance(h.status(), fal.InProgress))
    assert isinstance(queued.status(), fal.Queued)
    queued.cancel()
    for handle in running:
        handle.cancel()
    for handle in [queued, *running]:
        final = list(handle.iter_events(interval=0.05))[-1]
        assert isinstance(final, fal.Completed)
        assert final.error_type == "request_cancelled"
    with pytest.raises(fal.FalClientHTTPError) as again:
        queued.cancel()
    assert again.value.status_code == 400
    with pytest.raises(fal.FalClientHTTPError) as result:
        running[0].get()
    assert result.value.error_type == "request_cancelled"


def test_invalid_input_is_a_422_with_the_field(fal: ModuleType) -> None:
    with pytest.raises(fal.FalClientHTTPError) as error:
        fal.subscribe(APP, arguments={"num_inference_steps": 4})
    assert error.value.status_code == 422
    assert error.value.message[0]["loc"] == ["body", "prompt"]
    with pytest.raises(fal.FalClientHTTPError) as run_error:
        fal.run(APP, arguments=SMALL | {"num_inference_steps": 51})
    assert run_error.value.status_code == 422


def test_wrong_key_is_a_401(fal: ModuleType) -> None:
    client = fal.SyncClient(key="not-a-key")
    with pytest.raises(fal.FalClientHTTPError) as error:
        client.submit(APP, arguments=SMALL)
    assert error.value.status_code == 401
