"""Helpers shared by the fault tests: submitting tiny requests, reading their end, and checking
that each request ended once and was never run again after it succeeded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from openreel.records import RequestRecord

APP = "fal-ai/cogvideox-5b"
# Under a second of worker time on the tiny preset, yet several steps for kills to land in.
TINY = {"prompt": "fault", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 6, "use_rife": False}
# Fault tests run several workers on a shared CPU: one torch thread each, so that busy cores slow
# them down in proportion instead of stalling OpenMP's spinning thread teams.
FAULT_STACK_ENV = {"OPENREEL_ENDPOINTS": APP, "OMP_NUM_THREADS": "1"}
# Webhook tries of the shared single-worker stack time out after this many seconds.
WEBHOOK_TIMEOUT_S = 1.0
# Error types a request may end with when its worker or Redis is lost; anything else is a bug.
CLEAR_LOSS_ERRORS = {"runner_disconnected"}


def submit(client: httpx.Client, payload: dict[str, Any] = TINY, **headers: str) -> str:
    answer = client.post(f"/queue/{APP}", json=payload, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["request_id"]


def status(client: httpx.Client, request_id: str) -> dict[str, Any]:
    answer = client.get(f"/queue/{APP}/requests/{request_id}/status", params={"logs": 1})
    assert answer.status_code in (200, 202), answer.text
    return answer.json()


def is_completed(client: httpx.Client, request_id: str) -> bool:
    return status(client, request_id)["status"] == "COMPLETED"


@dataclass(frozen=True)
class Ending:
    """What a client can see of a finished request, and its record, to compare over time."""

    status_code: int
    body: dict[str, Any]
    record: RequestRecord
    messages: list[str]

    @property
    def succeeded(self) -> bool:
        return self.status_code == 200


def ending(client: httpx.Client, record: RequestRecord) -> Ending:
    result = client.get(f"/queue/{APP}/requests/{record.request_id}")
    messages = [line["message"] for line in status(client, record.request_id)["logs"]]
    return Ending(result.status_code, result.json(), record, messages)


def check_ended_once(first: Ending, later: Ending) -> None:
    """One clear end, unchanged since: a video, or an error a client can act on; one start line
    per attempt, and no attempt after the one that succeeded."""
    request_id = first.record.request_id
    if first.succeeded:
        assert first.body["video"]["url"], request_id
    else:
        assert first.body.get("error_type") in CLEAR_LOSS_ERRORS, (request_id, first.body)
    assert later.status_code == first.status_code and later.body == first.body, request_id
    assert later.record.finished_at == first.record.finished_at, request_id
    assert later.record.attempts == first.record.attempts, request_id
    starts = [m for m in later.messages if m.startswith("started on worker")]
    assert len(starts) == later.record.attempts, (request_id, later.messages)
    if first.succeeded:
        last_start = max(i for i, m in enumerate(later.messages) if m.startswith("started on worker"))
        assert "uploading" in later.messages[last_start:], (request_id, later.messages)
