"""The operator commands (``openreel status``, ``requests show|cancel``, ``keys list|revoke``) as
subprocesses against the Redis of a running stack, as an operator runs them from another host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx

from tests.stack import Stack, wait_until

APP = "fal-ai/cogvideox-5b"
V2V = "fal-ai/cogvideox-5b/video-to-video"
SMALL = {"prompt": "tiny", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "use_rife": False}
SLOW = {"prompt": "slow", "video_size": {"width": 320, "height": 320}, "num_inference_steps": 50, "use_rife": False}
NOT_A_VIDEO = {"prompt": "x", "video_url": "data:text/plain;base64,aGVsbG8=", "num_inference_steps": 2}


def openreel(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENREEL_")}
    env["OPENREEL_REDIS_URL"] = stack.redis_url
    return subprocess.run(
        [sys.executable, "-m", "openreel.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def report(stack: Stack, *args: str) -> Any:
    result = openreel(stack, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def submit(http: httpx.Client, payload: dict[str, Any], app: str = APP) -> str:
    response = http.post(f"/queue/{app}", json=payload)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def status_of(http: httpx.Client, request_id: str) -> str:
    return http.get(f"/queue/{APP}/requests/{request_id}/status").json()["status"]


def completed(http: httpx.Client, request_id: str) -> bool:
    return status_of(http, request_id) == "COMPLETED"


def test_status_shows_queues_workers_and_recent_failures(stack: Stack) -> None:
    with stack.client() as http:
        failed = submit(http, NOT_A_VIDEO, app=V2V)
        wait_until(lambda: completed(http, failed), timeout_s=60)
    # /health turns 200 with one worker per endpoint; the stack's second may still be loading.
    wait_until(lambda: [w["state"] for w in report(stack, "status")["workers"]] == ["ready", "ready"], timeout_s=120)
    status = report(stack, "status")
    assert {"cogvideox", "cogvideox.low", "webhooks"} <= set(status["queues"])
    assert all(isinstance(depth, int) for depth in status["queues"].values())
    newest = status["recent_failures"][0]
    assert (newest["request_id"], newest["endpoint"], newest["error_type"]) == (failed, V2V, "invalid_input")

    text = openreel(stack, "status").stdout
    assert text.startswith("queues\n") and "workers (2)" in text
    assert f"{failed}  {V2V}  invalid_input: " in text
    assert "error      invalid_input (HTTP 422): video_url: " in openreel(stack, "requests", "show", failed).stdout


def test_requests_show_gives_the_record_timings_and_log_tail(stack: Stack) -> None:
    with stack.client() as http:
        request_id = submit(http, SMALL)
        wait_until(lambda: completed(http, request_id), timeout_s=60)
    shown = report(stack, "requests", "show", request_id, "--logs", "3")
    assert (shown["status"], shown["endpoint"], shown["queue"], shown["error"]) == ("COMPLETED", APP, "cogvideox", None)
    assert shown["attempts"] == 1 and shown["worker"] and shown["run_s"] > 0 and shown["queue_wait_s"] >= 0
    assert shown["stage_timings_s"]["denoising"] > 0
    assert len(shown["logs"]) == 3 and shown["log_count"] > 3
    assert shown["logs"][-1]["message"] == "uploading"

    text = openreel(stack, "requests", "show", request_id).stdout
    assert f"request    {request_id}" in text and "status     COMPLETED" in text and "denoising" in text

    missing = openreel(stack, "requests", "show", "no-such-request")
    assert missing.returncode != 0 and "no request no-such-request" in missing.stderr


def test_requests_cancel_stops_a_running_request(stack: Stack) -> None:
    with stack.client() as http:
        request_id = submit(http, SLOW)
        wait_until(lambda: status_of(http, request_id) == "IN_PROGRESS", timeout_s=30)
        cancelled = openreel(stack, "requests", "cancel", request_id)
        assert cancelled.returncode == 0 and "cancellation requested" in cancelled.stdout
        wait_until(lambda: completed(http, request_id), timeout_s=30)
        assert http.get(f"/queue/{APP}/requests/{request_id}").json()["error_type"] == "request_cancelled"
    again = openreel(stack, "requests", "cancel", request_id)
    assert again.returncode != 0 and "already completed" in again.stderr


def test_keys_list_shows_ids_and_creation_times_never_secrets_and_revokes_by_id(stack: Stack) -> None:
    created = openreel(stack, "keys", "create", "--name", "ops-test")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    key_id, secret = key.split(":")
    listed = {entry["id"]: entry for entry in report(stack, "keys", "list")}
    assert listed[key_id]["name"] == "ops-test" and listed[key_id]["created_at"] > 0
    text = openreel(stack, "keys", "list").stdout
    assert key_id in text and "ops-test" in text and secret not in text

    with httpx.Client(base_url=stack.base_url, verify=stack.verify) as http:
        assert http.get("/metrics", headers={"authorization": f"Bearer {key}"}).status_code == 200
        assert openreel(stack, "keys", "revoke", key_id).returncode == 0
        assert key_id not in {entry["id"] for entry in report(stack, "keys", "list")}
        assert http.get("/metrics", headers={"authorization": f"Bearer {key}"}).status_code == 401
