"""The OpenAPI documents: ``/openapi.json`` for the whole server and fal's per-endpoint queue
document, both built from the registry, checked against the schemas and examples of fal's pages,
used as written, and fuzzed with Schemathesis against a real stack (no 5xx, answers as documented).

The stack has no worker, so inputs the fuzzer gets right stay queued instead of costing CPU.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.cogvideox.schema import I2V_PROMPT_EXAMPLE, NEGATIVE_PROMPT_EXAMPLE, T2V_PROMPT_EXAMPLE
from pipelines.registry import ENDPOINTS
from server.openapi import schema_base_name
from tests.conftest import API_KEY
from tests.stack import Stack

I2V = "fal-ai/cogvideox-5b/image-to-video"
EXAMPLES_PER_OPERATION = 30
schemathesis.checks.load_all_checks()
NOT_A_SERVER_ERROR = schemathesis.checks.CHECKS.get_one("not_a_server_error")
ACCEPTS_VALID_INPUT = schemathesis.checks.CHECKS.get_one("positive_data_acceptance")


@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("openapi"), models_dir, workers=0, env={"OPENREEL_API_KEYS": API_KEY})
    stack.start(wait_ready=False)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def client(idle_stack: Stack) -> Iterator[httpx.Client]:
    with idle_stack.client() as opened:
        yield opened


@pytest.fixture(scope="module")
def document(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/openapi.json", headers={"authorization": ""})
    assert response.status_code == 200
    return response.json()


def queue_document(client: httpx.Client, endpoint_id: str) -> dict[str, Any]:
    params = {"endpoint_id": endpoint_id}
    response = client.get("/openapi/queue/openapi.json", params=params, headers={"authorization": ""})
    assert response.status_code == 200, response.text
    return response.json()


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema


def test_component_names_follow_fals() -> None:
    assert schema_base_name("fal-ai/cogvideox-5b") == "Cogvideox5b"
    assert schema_base_name("fal-ai/cogvideox-5b/image-to-video") == "Cogvideox5bImageToVideo"
    assert schema_base_name("fal-ai/kling-video/v1.5/pro/image-to-video") == "KlingVideoV15ProImageToVideo"


def test_every_registered_endpoint_has_its_routes_and_fals_schemas(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert [tag["name"] for tag in document["tags"] if "x-fal-metadata" in tag] == list(ENDPOINTS)
    for endpoint in ENDPOINTS.values():
        request = f"/queue/{endpoint.id}/requests/{{request_id}}"
        submit = document["paths"][f"/queue/{endpoint.id}"]["post"]
        assert set(document["paths"][f"{request}/status"]) == {"get"}
        assert set(document["paths"][f"{request}/status/stream"]) == {"get"}
        assert set(document["paths"][f"{request}/cancel"]) == {"put"}
        assert submit["security"] == [{"apiKeyAuth": []}]
        name = schema_base_name(endpoint.id)
        input_schema = resolve(document, submit["requestBody"]["content"]["application/json"]["schema"])
        assert input_schema is document["components"]["schemas"][f"{name}Input"]
        expected = endpoint.input_model.model_json_schema()
        assert input_schema["required"] == expected["required"]
        assert input_schema["x-fal-order-properties"] == list(expected["properties"])
        result = document["paths"][request]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert resolve(document, result)["required"] == endpoint.output_model.model_json_schema()["required"]
        run = document["paths"][f"/run/{endpoint.id}"]["post"]["responses"]["200"]["content"]["application/json"]
        assert run["schema"] == result
    # The fixed routes stay documented by FastAPI, with the key where they need one.
    assert "security" not in document["paths"]["/files/{key}"]["get"]
    assert document["paths"]["/rest/storage/upload/initiate"]["post"]["security"] == [{"apiKeyAuth": []}]
    assert not any("{endpoint_id}" in path or "{app}" in path for path in document["paths"])


def test_cogvideox_schemas_carry_fals_defaults_and_examples(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    text = schemas["Cogvideox5bInput"]["properties"]
    assert text["prompt"]["examples"] == [T2V_PROMPT_EXAMPLE]
    assert text["negative_prompt"]["examples"] == [NEGATIVE_PROMPT_EXAMPLE]
    assert text["video_size"]["default"] == {"height": 480, "width": 720}
    assert text["num_inference_steps"].items() >= {"minimum": 1, "maximum": 50, "default": 50}.items()
    assert text["guidance_scale"].items() >= {"minimum": 0, "maximum": 20, "default": 7}.items()
    assert text["export_fps"].items() >= {"minimum": 4, "maximum": 32, "default": 16}.items()
    assert "loras" not in text
    image = schemas["Cogvideox5bImageToVideoInput"]["properties"]
    assert image["prompt"]["examples"] == [I2V_PROMPT_EXAMPLE]
    assert image["image_url"]["examples"] == ["https://d3phaj0sisr2ct.cloudfront.net/research/eugene.jpg"]
    assert image["loras"]["default"] == [] and image["loras"]["type"] == "array"
    # Another family's LoraWeight may share the name here: each is then prefixed with its family.
    lora = resolve(document, image["loras"]["items"])
    assert lora["title"] == "LoraWeight" and lora["required"] == ["path"]
    assert lora["properties"]["scale"]["default"] == 1
    video = schemas["Cogvideox5bVideoToVideoInput"]
    assert video["required"] == ["prompt", "video_url"]
    assert video["properties"]["strength"]["default"] == 0.8
    output = schemas["Cogvideox5bOutput"]
    assert output["required"] == ["video", "timings", "seed", "prompt"]
    assert schemas["File"]["required"] == ["url"]
    assert schemas["ImageSize"]["properties"]["width"]["default"] == 512


def test_the_queue_document_of_one_endpoint_is_fals(client: httpx.Client, idle_stack: Stack) -> None:
    document = queue_document(client, I2V)
    assert document["info"]["title"] == f"Queue OpenAPI for {I2V}"
    assert document["info"]["x-fal-metadata"]["endpointId"] == I2V
    assert document["servers"] == [{"url": f"{idle_stack.base_url}/queue"}]
    assert document["security"] == [{"apiKeyAuth": []}]
    request = f"/{I2V}/requests/{{request_id}}"
    assert {path: sorted(item) for path, item in document["paths"].items()} == {
        f"/{I2V}": ["post"],
        f"{request}/status": ["get"],
        f"{request}/status/stream": ["get"],
        request: ["get"],
        f"{request}/cancel": ["put"],
    }
    names = set(document["components"]["schemas"])
    assert {"QueueStatus", "Cogvideox5bImageToVideoInput", "Cogvideox5bImageToVideoOutput"} <= names
    assert {"ImageSize", "LoraWeight", "File"} <= names
    assert "Cogvideox5bInput" not in names  # only this endpoint's models
    # fal's path works too, for the JS proxy's and fal's own links.
    same = client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": I2V}).json()
    assert same == document


def test_an_unknown_endpoint_has_no_document(client: httpx.Client) -> None:
    response = client.get("/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/not-here"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Endpoint 'fal-ai/not-here' is not served here"}
    missing = client.get("/openapi/queue/openapi.json")
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["query", "endpoint_id"]


def test_the_documented_paths_serve_a_request(client: httpx.Client) -> None:
    """Submit, status, result and cancel at the paths the per-endpoint document writes (whole
    endpoint id), answered as its schemas say."""
    document = queue_document(client, I2V)
    base = document["servers"][0]["url"]
    schemas = {"components": document["components"]}
    status_schema = schemas | {"$ref": "#/components/schemas/QueueStatus"}
    submitted = client.post(f"{base}/{I2V}", json={"prompt": "a kite", "image_url": "https://example.com/a.png"})
    assert submitted.status_code == 200, submitted.text
    jsonschema.validate(submitted.json(), status_schema)
    request = f"{base}/{I2V}/requests/{submitted.json()['request_id']}"
    status = client.get(f"{request}/status", params={"logs": 1})
    assert status.status_code == 202 and status.json()["status"] == "IN_QUEUE"
    jsonschema.validate(status.json(), status_schema)
    assert client.get(request).status_code == 400  # still queued
    cancelled = client.put(f"{request}/cancel")
    assert cancelled.status_code == 202
    jsonschema.validate(cancelled.json(), schemas | {"$ref": "#/components/schemas/CancelStatus"})
    completed = client.get(f"{request}/status")
    assert completed.status_code == 200 and completed.json()["error_type"] == "request_cancelled"
    # Another endpoint's id does not reach it.
    other = f"{base}/fal-ai/cogvideox-5b/video-to-video/requests/{submitted.json()['request_id']}/status"
    assert client.get(other).status_code == 404


def test_a_request_id_no_header_can_carry_is_a_plain_404(client: httpx.Client) -> None:
    """Found by the fuzzer: the id in the URL was echoed in x-fal-request-id, and a newline or a
    non-Latin-1 character in it made the answer a 500."""
    for raw in ("%0Aab", "%F1%B0%8F%AA", "%C3%A9t%C3%A9"):
        response = client.get(f"/queue/fal-ai/cogvideox-5b/requests/{raw}/status")
        assert response.status_code == 404, raw
        assert uuid.UUID(response.headers["x-fal-request-id"])


def test_fuzzed_requests_get_documented_answers_and_no_5xx(idle_stack: Stack) -> None:
    """Every documented operation, with valid and invalid inputs: Schemathesis's checks (no 5xx,
    status codes, content types and bodies as documented, invalid input refused)."""
    # The key as the document's security scheme, so Schemathesis also tries calls without it.
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"apiKeyAuth": {"api_key": f"Key {API_KEY}"}}}})
    schema = schemathesis.openapi.from_url(f"{idle_stack.base_url}/openapi.json", config=config)
    # /run holds the call open until a worker answers, and this stack has none; its input goes
    # through the same validation as the queue submit, which is fuzzed. /health takes no input
    # and answers 503 here, as it must while no worker is ready.
    served = schema.exclude(path_regex="^/run/").exclude(path="/health")
    operations = [result.ok() for result in served.get_all_operations()]
    assert len(operations) > 5 * len(ENDPOINTS)
    for operation in operations:
        cases = st.one_of(*(operation.as_strategy(mode) for mode in schemathesis.GenerationMode))

        # The registry's routes are documented whole (every status, content type and body) and
        # get every check but one: their inputs are fal's schemas, which state some rules in prose
        # only ("one lora"; CogVideoX sides are multiples of 16 within the server's settings), so
        # schema-valid input may be a 422. FastAPI describes only the fixed routes' successes: no
        # 5xx is asked of those.
        documented_whole = operation.path.startswith(("/queue/", "/openapi/"))
        checks = None if documented_whole else [NOT_A_SERVER_ERROR]
        excluded = [ACCEPTS_VALID_INPUT] if operation.method.upper() == "POST" else []

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(timeout=15, checks=checks, excluded_checks=excluded)

        fuzz()
