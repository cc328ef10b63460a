"""The SSRF guard on the real paths: input URLs, LoRA paths and webhooks of submitted requests,
fetched by real workers and the io-worker, never reach internal addresses however they are spelled."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.generated_inputs import data_uri, png_bytes
from tests.http_servers import Reply, ScriptedServer
from tests.stack import Stack, wait_until

# Dotted octal is not even a URL to httpx: refused before any lookup, in other words.
UNPARSABLE = "Invalid IPv4 address"
SMALL = {"prompt": "x", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "use_rife": False}


@pytest.fixture(scope="module")
def internal() -> Iterator[ScriptedServer]:
    """An internal service on loopback that answers everything: any hit is a leak."""
    server = ScriptedServer().start()
    for path in ("/clip.mp4", "/still.png", "/lora.safetensors", "/hook"):
        server.route(path, Reply(200, b"internal data"))
    yield server
    server.stop()


def spellings(port: int) -> list[str]:
    """One internal service written every way a URL can name it, plus other internal networks."""
    return [
        f"http://127.0.0.1:{port}",
        f"http://localhost:{port}",  # a DNS name that resolves to loopback
        f"http://[::1]:{port}",
        f"http://[::ffff:127.0.0.1]:{port}",  # IPv4-mapped IPv6
        f"http://[::ffff:7f00:1]:{port}",
        f"http://2130706433:{port}",  # decimal
        f"http://0177.0.0.1:{port}",  # octal
        f"http://0x7f.0.0.1:{port}",
        f"http://127.1:{port}",
        "http://10.0.0.1",
        "http://169.254.169.254",
        "http://[::ffff:169.254.169.254]",
    ]


def field_cases(base: str) -> dict[str, tuple[str, dict[str, Any], list[Any]]]:
    """endpoint, input and the error location for each way a request names a URL the worker fetches."""
    image = data_uri(png_bytes((32, 32)), "image/png")
    return {
        "video_url": ("fal-ai/cogvideox-5b/video-to-video", SMALL | {"video_url": f"{base}/clip.mp4"}, ["body", "video_url"]),
        "image_url": ("fal-ai/cogvideox-5b/image-to-video", SMALL | {"image_url": f"{base}/still.png"}, ["body", "image_url"]),
        "lora": (
            "fal-ai/cogvideox-5b/image-to-video",
            SMALL | {"image_url": image, "loras": [{"path": f"{base}/lora.safetensors"}]},
            ["body", "loras", 0, "path"],
        ),
    }


def final(client: httpx.Client, endpoint: str, request_id: str) -> httpx.Response:
    app = "/".join(endpoint.split("/")[:2])
    wait_until(
        lambda: client.get(f"/queue/{app}/requests/{request_id}/status").json()["status"] == "COMPLETED", timeout_s=120
    )
    return client.get(f"/queue/{app}/requests/{request_id}")


def test_inputs_and_loras_at_internal_addresses_are_refused(stack: Stack, internal: ScriptedServer) -> None:
    submitted = []
    with stack.client() as client:
        for base in spellings(internal.port):
            for field, (endpoint, payload, loc) in field_cases(base).items():
                answer = client.post(f"/queue/{endpoint}", json=payload)
                assert answer.status_code == 200, answer.text
                submitted.append((base, field, endpoint, loc, answer.json()["request_id"]))
        for base, field, endpoint, loc, request_id in submitted:
            result = final(client, endpoint, request_id)
            assert result.status_code == 422, (base, field, result.text)
            [error] = result.json()["detail"]
            assert error["loc"] == loc, (base, field, error)
            assert "not allowed" in error["msg"] or UNPARSABLE in error["msg"], (base, field, error)
    assert internal.hits == []


def test_lora_files_outside_the_allowed_directories_are_refused(stack: Stack, internal: ScriptedServer) -> None:
    endpoint, payload, loc = field_cases(internal.url(""))["lora"]
    with stack.client() as client:
        ids = [
            client.post(f"/queue/{endpoint}", json=payload | {"loras": [{"path": path}]}).json()["request_id"]
            for path in ("/etc/passwd", "../../../../etc/passwd", "file:///etc/passwd")
        ]
        for request_id in ids:
            result = final(client, endpoint, request_id)
            assert result.status_code == 422 and result.json()["detail"][0]["loc"] == loc, result.text


def test_webhooks_to_internal_addresses_are_never_sent(stack: Stack, internal: ScriptedServer) -> None:
    app = "fal-ai/cogvideox-5b"
    with stack.client() as client:
        ids = []
        for base in spellings(internal.port):
            answer = client.post(f"/queue/{app}", params={"fal_webhook": f"{base}/hook"}, json={"prompt": "x"})
            assert answer.status_code == 200, answer.text
            request_id = answer.json()["request_id"]
            client.put(f"/queue/{app}/requests/{request_id}/cancel")  # ends it at once, webhook included
            ids.append((base, request_id))

        def messages(request_id: str) -> list[str]:
            logs = client.get(f"/queue/{app}/requests/{request_id}/status", params={"logs": 1}).json()["logs"]
            return [line["message"] for line in logs]

        for base, request_id in ids:
            wait_until(lambda: any("webhook not sent" in m for m in messages(request_id)), timeout_s=30)  # noqa: B023
            sent = messages(request_id)
            assert any("refusing to contact" in m or UNPARSABLE in m for m in sent), (base, sent)
    assert internal.hits == []
