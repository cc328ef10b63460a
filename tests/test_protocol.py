"""fal's wire protocol, as the clients see it: real app, real Redis, no worker (requests stay queued)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from openreel.redis_server import EmbeddedRedis
from openreel.settings import Settings
from server.app import create_app
from server.requests import app_of
from tests.conftest import API_KEY

SNAPSHOTS = Path(__file__).parent / "snapshots"
APP = "fal-ai/cogvideox-5b"
AUTH = {"Authorization": f"Key {API_KEY}"}
PROMPT = {"prompt": "a lighthouse in a storm", "num_inference_steps": 4}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    redis.Redis.from_url(redis_url).flushdb()
    settings = Settings(data_dir=tmp_path, api_keys=[API_KEY])
    with TestClient(create_app(settings, redis_url), base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def normalized(body: Any) -> Any:
    """Request ids and timestamps vary per run; everything else must match the snapshot exactly."""
    text = json.dumps(body, indent=2, sort_keys=True)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<timestamp>", text)
    return json.loads(text)


def assert_snapshot(name: str, body: Any) -> None:
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(json.dumps(normalized(body), indent=2, sort_keys=True) + "\n")
    assert normalized(body) == json.loads(path.read_text()), f"snapshot {name} differs"


def submit(client: TestClient, payload: dict[str, Any] = PROMPT, **headers: str) -> dict[str, Any]:
    response = client.post(f"/queue/{APP}", json=payload, headers=AUTH | headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-fal-request-id"] == response.json()["request_id"]
    return response.json()


def test_submit_answers_the_shape_both_clients_read(client: TestClient) -> None:
    body = submit(client)
    assert_snapshot("submit", body)
    assert body["status_url"] == f"http://127.0.0.1:8000/queue/{APP}/requests/{body['request_id']}/status"


def test_status_while_queued_keeps_the_logs_key(client: TestClient) -> None:
    request_id = submit(client)["request_id"]
    response = client.get(f"/queue/{APP}/requests/{request_id}/status", params={"logs": "0"}, headers=AUTH)
    assert response.status_code == 202
    assert_snapshot("status_in_queue", response.json())
    with_logs = client.get(f"/queue/{APP}/requests/{request_id}/status", params={"logs": "true"}, headers=AUTH)
    assert with_logs.json()["logs"] == []


def test_result_before_completion_is_a_400_not_a_retryable_code(client: TestClient) -> None:
    request_id = submit(client)["request_id"]
    response = client.get(f"/queue/{APP}/requests/{request_id}", headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {"detail": "Request is still in progress"}


def test_cancel_of_a_queued_request_completes_it_with_an_error(client: TestClient) -> None:
    request_id = submit(client)["request_id"]
    base = f"/queue/{APP}/requests/{request_id}"
    cancel = client.put(f"{base}/cancel", headers=AUTH)
    assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    status = client.get(f"{base}/status", params={"logs": 1}, headers=AUTH)
    assert status.status_code == 200
    assert_snapshot("status_cancelled", status.json())
    result = client.get(base, headers=AUTH)
    assert result.status_code == 499
    assert result.json() == {"detail": "Request was cancelled", "error_type": "request_cancelled"}
    again = client.put(f"{base}/cancel", headers=AUTH)
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})


def test_unknown_request_ids(client: TestClient) -> None:
    unknown = f"/queue/{APP}/requests/00000000-0000-0000-0000-000000000000"
    assert client.get(f"{unknown}/status", headers=AUTH).status_code == 404
    assert client.get(unknown, headers=AUTH).status_code == 404
    cancel = client.put(f"{unknown}/cancel", headers=AUTH)
    assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
    # An id is only valid under the app it was submitted to.
    request_id = submit(client)["request_id"]
    assert client.get(f"/queue/fal-ai/other/requests/{request_id}/status", headers=AUTH).status_code == 404


def test_invalid_input_is_a_422_with_pydantic_locations(client: TestClient) -> None:
    response = client.post(
        f"/queue/{APP}", json={"num_inference_steps": 0, "video_size": "huge"}, headers=AUTH
    )
    assert response.status_code == 422
    assert "x-fal-request-id" in response.headers
    locations = [tuple(item["loc"]) for item in response.json()["detail"]]
    assert ("body", "prompt") in locations
    assert ("body", "num_inference_steps") in locations
    assert any(loc[:2] == ("body", "video_size") for loc in locations)
    assert_snapshot("invalid_input", response.json())
    bad_json = client.post(f"/queue/{APP}", content=b"{not json", headers=AUTH)
    assert bad_json.status_code == 422
    assert bad_json.json()["detail"][0]["loc"] == ["body"]


def test_sizes_the_model_cannot_make_are_refused(client: TestClient) -> None:
    response = client.post(
        f"/queue/{APP}", json={"prompt": "x", "video_size": {"width": 100, "height": 64}}, headers=AUTH
    )
    assert response.status_code == 422
    assert "multiple of 16" in response.json()["detail"][0]["msg"]


def test_unknown_endpoint_is_a_404(client: TestClient) -> None:
    response = client.post("/queue/fal-ai/not-a-model", json=PROMPT, headers=AUTH)
    assert response.status_code == 404
    assert "x-fal-request-id" in response.headers


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Key wrong"}, {"Authorization": "Basic abc"}, {"Authorization": "Key "}],
)
def test_missing_or_wrong_keys_get_a_401_in_fal_shape(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(f"/queue/{APP}", json=PROMPT, headers=headers)
    assert response.status_code == 401
    assert set(response.json()) == {"detail", "error_type"}
    assert "x-fal-request-id" in response.headers


def test_bearer_and_stored_keys_are_accepted(client: TestClient) -> None:
    from openreel import api_keys

    stored = api_keys.create_key(client.app.state.redis, "ci")
    for header in (f"Bearer {API_KEY}", f"Key {stored}"):
        assert client.post(f"/queue/{APP}", json=PROMPT, headers={"Authorization": header}).status_code == 200
    api_keys.revoke_key(client.app.state.redis, stored)
    time.sleep(0)  # revocation is immediate: keys are looked up per request
    assert client.post(f"/queue/{APP}", json=PROMPT, headers={"Authorization": f"Key {stored}"}).status_code == 401


def test_low_priority_waits_behind_every_normal_request(client: TestClient) -> None:
    low = submit(client, **{"x-fal-queue-priority": "low"})
    normal = submit(client, **{"x-fal-queue-priority": "normal"})
    assert normal["queue_position"] == 0
    status = client.get(f"/queue/{APP}/requests/{low['request_id']}/status", headers=AUTH).json()
    assert status["queue_position"] == 1
    refused = client.post(f"/queue/{APP}", json=PROMPT, headers=AUTH | {"x-fal-queue-priority": "urgent"})
    assert refused.status_code == 422


def test_start_timeout_expires_into_a_user_504(client: TestClient) -> None:
    request_id = submit(client, **{"x-fal-request-timeout": "0.2"})["request_id"]
    time.sleep(0.3)
    base = f"/queue/{APP}/requests/{request_id}"
    status = client.get(f"{base}/status", headers=AUTH).json()
    assert (status["status"], status["error_type"]) == ("COMPLETED", "request_timeout")
    result = client.get(base, headers=AUTH)
    assert result.status_code == 504
    assert result.headers["x-fal-request-timeout-type"] == "user"
    assert result.json()["error_type"] == "request_timeout"


def test_queue_host_header_routes_like_the_queue_prefix(client: TestClient) -> None:
    headers = AUTH | {"Host": "queue.fal.run"}
    body = client.post(f"/{APP}", json=PROMPT, headers=headers).json()
    assert body["status_url"].startswith(f"http://queue.fal.run/{APP}/requests/")
    status = client.get(f"/{APP}/requests/{body['request_id']}/status", headers=headers)
    assert status.status_code == 202


def test_js_proxy_mode_routes_on_the_target_url(client: TestClient) -> None:
    target = {"x-fal-target-url": f"https://queue.fal.run/{APP}"}
    body = client.post("/api/fal/proxy", json=PROMPT, headers=AUTH | target).json()
    status_target = {"x-fal-target-url": f"https://queue.fal.run/{APP}/requests/{body['request_id']}/status?logs=1"}
    status = client.get("/api/fal/proxy", headers=AUTH | status_target)
    assert status.status_code == 202
    assert status.json()["logs"] == []
    missing = client.post("/api/fal/proxy", json=PROMPT, headers=AUTH)
    assert missing.status_code == 400
    assert "x-fal-request-id" in missing.headers


def test_health_needs_a_ready_worker_for_each_endpoint(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 503
    assert set(response.json()["endpoints_without_worker"]) >= {
        APP, f"{APP}/image-to-video", f"{APP}/video-to-video", "fal-ai/video-as-prompt", "fal-ai/animatediff-v2v/turbo"
    }


@pytest.mark.parametrize(
    ("endpoint_id", "app"),
    [
        ("fal-ai/cogvideox-5b", "fal-ai/cogvideox-5b"),
        ("fal-ai/cogvideox-5b/video-to-video", "fal-ai/cogvideox-5b"),
        ("workflows/fal-ai/my-flow/x", "workflows/fal-ai/my-flow"),
    ],
)
def test_request_routes_use_owner_and_alias_only(endpoint_id: str, app: str) -> None:
    assert app_of(endpoint_id) == app


def test_video_as_prompt_schema_is_fals(client: TestClient) -> None:
    """Field names, types, defaults, enums and descriptions as fal's page lists them."""
    from pipelines.registry import ENDPOINTS

    endpoint = ENDPOINTS["fal-ai/video-as-prompt"]
    schema = {"input": endpoint.input_model.model_json_schema(), "output": endpoint.output_model.model_json_schema()}
    assert_snapshot("video_as_prompt_schema", schema)
    assert schema["input"]["required"] == ["prompt", "video_url", "image_url", "video_description"]
    payload = {"prompt": "a horse inflates", "video_url": "https://example.com/a.mp4",
               "image_url": "https://example.com/a.jpg", "video_description": "a shoe inflates"}
    body = client.post("/queue/fal-ai/video-as-prompt", json=payload, headers=AUTH).json()
    assert body["status_url"].endswith(f"/queue/fal-ai/video-as-prompt/requests/{body['request_id']}/status")


def test_animatediff_turbo_schema_is_fals(client: TestClient) -> None:
    """Field names, types, defaults and descriptions as fal's page lists them."""
    from pipelines.registry import ENDPOINTS

    endpoint = ENDPOINTS["fal-ai/animatediff-v2v/turbo"]
    schema = {"input": endpoint.input_model.model_json_schema(), "output": endpoint.output_model.model_json_schema()}
    assert_snapshot("animatediff_turbo_schema", schema)
    assert schema["input"]["required"] == ["video_url", "prompt"]
    defaults = {name: field.get("default") for name, field in schema["input"]["properties"].items()}
    assert defaults == {
        "video_url": None, "prompt": None, "loras": [], "seed": None,
        "negative_prompt": "(bad quality, worst quality:1.2), ugly faces, bad anime",
        "num_inference_steps": 8, "guidance_scale": 2.2, "select_every_nth_frame": 2,
    }
    assert schema["output"]["required"] == ["video", "seed"]
