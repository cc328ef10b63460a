"""Hostile input: Hypothesis over every endpoint's input schema against the real API, oversize and
deeply nested bodies, and hostile files (truncated, corrupt, huge in frames or size, bombs) at
real workers. Every one is a clear 4xx, never a 5xx, and the workers live on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.registry import ENDPOINTS
from tests.generated_inputs import data_uri
from tests.security.hostile_files import hostile_images, hostile_videos
from tests.stack import Stack, wait_until

BODY_LIMIT = 256 * 1024
SMALL = {"prompt": "x", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "use_rife": False}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """The API alone (no workers: accepted requests just wait), with a small body limit."""
    stack = Stack(
        tmp_path_factory.mktemp("hostile-api"), models_dir, workers=0,
        env={"OPENREEL_REQUEST_BODY_MAX_BYTES": str(BODY_LIMIT)},
    ).start(wait_ready=False)  # fmt: skip
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(api: Stack) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


def check_answer(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    if answer.status_code >= 400:  # fal's error shape; cancel answers {"status": ...} instead
        assert {"detail", "status"} & answer.json().keys(), answer.text[:500]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def payloads(draw: st.DrawFn, fields: list[str]) -> Any:
    """Mostly objects with the schema's own field names holding anything, sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    chosen = draw(st.lists(st.sampled_from(fields), unique=True)) if fields else []
    body = {name: draw(json_values) for name in chosen}
    body.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return body


# What HTTP lets a header carry: printable ASCII, no surrounding blanks.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(str.strip)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_no_input_makes_the_api_fail(http: httpx.Client, endpoint: str) -> None:
    fields = list(ENDPOINTS[endpoint].input_model.model_fields)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(payloads(fields), header_text, header_text, header_text, header_text)
    def run(payload: Any, priority: str, timeout: str, lifecycle: str, webhook: str) -> None:
        headers = {
            "content-type": "application/json",
            "x-fal-queue-priority": priority,
            "x-fal-request-timeout": timeout,
            "x-fal-object-lifecycle-preference": lifecycle,
        }
        body = json.dumps(payload).encode()  # NaN and Infinity included: Python's parser takes them
        check_answer(http.post(f"/queue/{endpoint}", content=body, headers=headers, params={"fal_webhook": webhook}))
        check_answer(http.post(f"/run/{endpoint}", content=body, headers={"content-type": "application/json"}))

    run()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.text(max_size=60), st.text(max_size=40))
def test_no_request_path_makes_the_api_fail(http: httpx.Client, app: str, request_id: str) -> None:
    app, request_id = quote(app, safe="/"), quote(request_id, safe="")
    for path in (f"/queue/{app}/requests/{request_id}", f"/queue/{app}/requests/{request_id}/status"):
        check_answer(http.get(path))
    check_answer(http.put(f"/queue/{app}/requests/{request_id}/cancel"))


def test_oversize_bodies_are_a_413_declared_or_not(http: httpx.Client) -> None:
    oversize = json.dumps({"prompt": "x" * (BODY_LIMIT + 1)}).encode()
    declared = http.post("/queue/fal-ai/cogvideox-5b", content=oversize, headers={"content-type": "application/json"})

    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting tells
        for start in range(0, len(oversize), 65536):
            yield oversize[start : start + 65536]

    streamed = http.post("/queue/fal-ai/cogvideox-5b", content=chunks(), headers={"content-type": "application/json"})
    run = http.post("/run/fal-ai/cogvideox-5b", content=oversize, headers={"content-type": "application/json"})
    for answer in (declared, streamed, run):
        assert answer.status_code == 413, answer.text[:300]
        assert answer.json() == {"detail": f"The request body is larger than {BODY_LIMIT} bytes", "error_type": "payload_too_large"}


@pytest.mark.parametrize("depth", [50, 5_000, 30_000])
def test_deeply_nested_json_is_a_422(http: httpx.Client, depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"prompt": ' + '{"a": ' * depth + "1" + "}" * depth + "}"):
        answer = http.post("/queue/fal-ai/cogvideox-5b", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 422, answer.text[:300]


def finished(client: httpx.Client, endpoint: str, request_id: str) -> httpx.Response:
    app = "/".join(endpoint.split("/")[:2])
    base = f"/queue/{app}/requests/{request_id}"
    wait_until(lambda: client.get(f"{base}/status").json()["status"] == "COMPLETED", timeout_s=120)
    return client.get(base)


def test_hostile_files_are_422s_and_the_workers_survive(stack: Stack) -> None:
    cases = [("fal-ai/cogvideox-5b/video-to-video", "video_url", name, data) for name, data in hostile_videos().items()]
    cases += [("fal-ai/cogvideox-5b/image-to-video", "image_url", name, data) for name, data in hostile_images().items()]
    cases.append(("fal-ai/cogvideox-5b/video-to-video", "video_url", "a data: URI over its cap", b""))
    started = time.monotonic()
    with stack.client() as client:
        submitted = []
        for endpoint, field, name, data in cases:
            url = data_uri(data, "video/mp4") if data else "data:video/mp4;base64," + "A" * (64 * 1024**2 // 3 * 4 + 8)
            answer = client.post(f"/queue/{endpoint}", json=SMALL | {field: url})
            check_answer(answer)
            submitted.append((endpoint, field, name, answer.json()["request_id"]))
        for endpoint, field, name, request_id in submitted:
            result = finished(client, endpoint, request_id)
            assert result.status_code == 422, (name, result.text[:300])
            assert result.json()["detail"][0]["loc"] == ["body", field], (name, result.text[:300])
        print(f"{len(cases)} hostile files refused in {time.monotonic() - started:.1f} s")
        after = client.post("/queue/fal-ai/cogvideox-5b", json=SMALL).json()["request_id"]
        assert finished(client, "fal-ai/cogvideox-5b", after).status_code == 200
    log = (stack.directory / "up.log").read_text(errors="replace")
    assert '"message": "worker pid' not in log, "a GPU worker died on a hostile file"  # the supervisor's line
