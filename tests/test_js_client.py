"""The official JS client (@fal-ai/client, installed by `make test`) in both redirection modes:
``requestMiddleware`` URL rewrite and ``proxyUrl: {url, when: "always"}``."""

from __future__ import annotations

import hashlib
import json
import os
import time
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from openreel.storage.base import EXPIRY_KEY
from tests.conftest import API_KEY
from tests.media import download_video
from tests.stack import Stack

JS_DIR = Path(__file__).parent / "js"
SMALL = {"prompt": "a paper boat on a river", "video_size": {"width": 48, "height": 32}, "num_inference_steps": 3}
SLOW = {"prompt": "slow", "video_size": {"width": 320, "height": 320}, "num_inference_steps": 50}
MODES = ["middleware", "proxy"]

pytestmark = pytest.mark.skipif(
    not (JS_DIR / "node_modules" / "@fal-ai" / "client").is_dir() or shutil.which("node") is None,
    reason="run through `make test`, which installs node_modules",
)


def js(stack: Stack, mode: str, scenario: str, payload: dict[str, Any], key: str = API_KEY) -> dict[str, Any]:
    env = {**os.environ, "FAL_KEY": key, "NODE_EXTRA_CA_CERTS": str(stack.tls.cert)}  # type: ignore[union-attr]
    completed = subprocess.run(
        ["node", "fal_client_check.mjs", mode, stack.base_url, scenario, json.dumps(payload)],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def result_of(outcome: dict[str, Any]) -> dict[str, Any]:
    assert outcome["ok"], outcome
    return outcome["result"]


@pytest.mark.parametrize("mode", MODES)
def test_run(stack: Stack, mode: str, tmp_path: Path) -> None:
    result = result_of(js(stack, mode, "run", SMALL | {"seed": 3}))
    assert result["data"]["seed"] == 3
    assert result["requestId"]
    facts = download_video(result["data"]["video"]["url"], tmp_path, verify=stack.verify)
    assert (facts.frames, facts.width, facts.height) == (97, 48, 32)  # use_rife: 49 -> 97


@pytest.mark.parametrize("mode", MODES)
def test_subscribe_with_logs(stack: Stack, mode: str) -> None:
    result = result_of(js(stack, mode, "subscribe", SMALL))
    assert result["data"]["video"]["content_type"] == "video/mp4"
    assert result["updates"][-1]["status"] in ("IN_PROGRESS", "COMPLETED")
    messages = {message for update in result["updates"] for message in update["logs"]}
    assert "step 3/3" in messages


def test_subscribe_streaming_mode(stack: Stack) -> None:
    result = result_of(js(stack, "middleware", "subscribeStreaming", SMALL))
    assert result["data"]["video"]["url"]


@pytest.mark.parametrize("mode", MODES)
def test_submit_status_result(stack: Stack, mode: str) -> None:
    result = result_of(js(stack, mode, "queue", SMALL))
    assert result["submitted"]["status"] == "IN_QUEUE"
    assert result["done"]["status"] == "COMPLETED"
    assert result["result"]["data"]["video"]["url"]
    assert result["result"]["requestId"] == result["submitted"]["request_id"]


@pytest.mark.parametrize("mode", MODES)
def test_status_stream_carries_only_new_logs_and_closes(stack: Stack, mode: str) -> None:
    result = result_of(js(stack, mode, "streamStatus", SMALL))
    assert result["last"]["status"] == "COMPLETED"
    step_lines = [m for event in result["events"] for m in event["logs"] if m.startswith("step ")]
    assert step_lines == [f"step {i}/3" for i in range(1, 4)]  # each line once: events carry only new logs


@pytest.mark.parametrize("mode", MODES)
def test_cancel_queued_and_running(stack: Stack, mode: str) -> None:
    result = result_of(js(stack, mode, "cancel", SLOW))
    assert result["queuedBefore"] == "IN_QUEUE"
    assert [final["error_type"] for final in result["finals"]] == ["request_cancelled"] * 3
    assert result["again"]["status"] == 400
    assert result["again"]["body"] == {"status": "ALREADY_COMPLETED"}
    assert result["result"]["status"] == 499


@pytest.mark.parametrize("mode", MODES)
def test_invalid_input_is_a_validation_error(stack: Stack, mode: str) -> None:
    result = result_of(js(stack, mode, "invalid", {"num_inference_steps": 2}))
    for call in ("run", "subscribe"):
        error = result[call]
        assert error["isValidationError"] and error["status"] == 422
        assert error["promptErrors"][0]["loc"] == ["body", "prompt"]
        assert error["requestId"]


@pytest.mark.parametrize("mode", MODES)
def test_wrong_key_is_a_401(stack: Stack, mode: str) -> None:
    outcome = js(stack, mode, "run", SMALL, key="wrong-key")
    assert not outcome["ok"]
    assert outcome["error"]["status"] == 401


def digest_of(url: str, stack: Stack) -> str:
    answer = httpx.get(url, verify=stack.verify, timeout=60)
    answer.raise_for_status()
    return hashlib.sha256(answer.content).hexdigest()


@pytest.mark.parametrize("mode", MODES)
def test_blob_in_the_input_is_uploaded(stack: Stack, mode: str, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "clip.mp4").write_bytes(data)
    payload = {"file": str(tmp_path / "clip.mp4"), "type": "video/mp4", "arguments": SMALL}
    result = result_of(js(stack, mode, "uploadInInput", payload))
    url = result["data"]["prompt"]  # the URL the client put in place of the Blob
    assert url.startswith(f"{stack.base_url}/files/") and url.endswith(".mp4")
    assert digest_of(url, stack) == hashlib.sha256(data).hexdigest()


def test_storage_upload_over_90_mib_is_multipart(stack: Stack, tmp_path: Path) -> None:
    size = 91 * 1024 * 1024
    data = os.urandom(size)
    (tmp_path / "big.bin").write_bytes(data)
    payload = {"file": str(tmp_path / "big.bin"), "type": "application/octet-stream", "lifecycle": {"expiresIn": "1d"}}
    result = result_of(js(stack, "proxy", "storageUpload", payload))
    parts = [call for call in result["calls"] if call.startswith("PUT /rest/storage/upload/multipart/")]
    assert [int(call.rsplit("/", 1)[1]) for call in parts] == list(range(1, 11))  # 10 MiB parts
    assert result["calls"][-1].startswith("POST /rest/storage/upload/multipart/") and result["calls"][-1].endswith("/complete")
    url = result["url"]
    assert digest_of(url, stack) == hashlib.sha256(data).hexdigest()
    key = "/".join(url.split("/")[-2:])
    expires_at = redis.Redis.from_url(stack.redis_url).zscore(EXPIRY_KEY, key)
    assert expires_at == pytest.approx(time.time() + 86400, abs=60)
