"""Who may call what: every route but the public ones needs a key, a request belongs to the key
that submitted it, and presigned upload URLs stop working when they expire."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from openreel import api_keys
from openreel.settings import Settings
from server.app import create_app
from tests.conftest import API_KEY
from tests.stack import Stack, wait_until

APP = "fal-ai/cogvideox-5b"
SMALL = {"prompt": "mine", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "use_rife": False}

# Routes a client reaches without an API key: each is authorised otherwise (an unguessable file
# key, an upload URL's signature, a CDN token) or reveals nothing.
PUBLIC_PATHS = {
    "/",
    "/health",
    "/live",
    "/.well-known/jwks.json",
    "/rest/.well-known/jwks.json",
    "/files/{key}",
    "/cdn/files/{key}",
    "/openapi.json",
    "/openapi/queue/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
SIGNED_PREFIXES = ("/rest/storage/upload/object/", "/rest/storage/upload/multipart/")
TOKEN_PREFIX = "/cdn/"

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")
SAMPLE_VALUES = {"app": APP, "endpoint_id": APP, "request_id": str(uuid.uuid4())}


def concrete(path: str) -> str:
    return PARAMETER.sub(lambda match: SAMPLE_VALUES.get(match.group(1), "1"), path)


def served_routes(stack: Stack) -> list[tuple[str, str]]:
    """(method, path template) of every route the API serves: the app's own routes and every
    operation of its OpenAPI document (routers are listed there, whatever FastAPI nests them in)."""
    settings = Settings(data_dir=stack.directory / "data", api_keys=[API_KEY])
    app = create_app(settings, stack.redis_url)
    routes = {
        (method, PARAMETER.sub(r"{\1}", route.path))
        for route in app.routes
        for method in (getattr(route, "methods", None) or set()) - {"HEAD", "OPTIONS"}
    }
    for path, operations in app.openapi()["paths"].items():
        routes |= {(method.upper(), path) for method in operations if method.upper() in HTTP_METHODS}
    return sorted(routes)


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID")
def test_every_route_but_the_public_ones_needs_a_key(stack: Stack) -> None:
    routes = served_routes(stack)
    assert len(routes) > 10
    with httpx.Client(base_url=stack.base_url, verify=stack.verify, timeout=30) as anonymous:
        for method, template in routes:
            path = concrete(template)
            for headers in ({}, {"authorization": "Key not-a-key"}):
                answer = anonymous.request(method, path, headers=headers, json={})
                assert answer.status_code < 500, (method, template, answer.text)
                if template in PUBLIC_PATHS:
                    continue
                if template.startswith(SIGNED_PREFIXES):
                    assert answer.status_code in (403, 422), (method, template, answer.status_code)
                    continue
                assert answer.status_code == 401, (method, template, answer.status_code)
                assert answer.json()["error_type"] == "unauthorized" and answer.headers["x-fal-request-id"]


@pytest.fixture
def other_key(stack: Stack) -> Iterator[str]:
    connection = redis.Redis.from_url(stack.redis_url)
    key = api_keys.create_key(connection, "another tenant")
    yield key
    api_keys.revoke_key(connection, key)


def test_a_request_is_visible_only_to_the_key_that_submitted_it(stack: Stack, other_key: str) -> None:
    with stack.client() as owner, stack.client() as stranger:
        stranger.headers["authorization"] = f"Key {other_key}"
        request_id = owner.post(f"/queue/{APP}", json=SMALL).json()["request_id"]
        base = f"/queue/{APP}/requests/{request_id}"
        # Queued, running or done: to another key the id does not exist, and it cannot cancel it.
        for answer in (stranger.get(f"{base}/status"), stranger.get(f"{base}/status/stream"), stranger.get(base)):
            assert (answer.status_code, answer.json()) == (404, {"detail": "Request not found"})
        refused = stranger.put(f"{base}/cancel")
        assert (refused.status_code, refused.json()) == (404, {"status": "NOT_FOUND"})
        wait_until(lambda: owner.get(f"{base}/status").json()["status"] == "COMPLETED", timeout_s=60)
        assert stranger.get(base).status_code == 404
        assert stranger.put(f"{base}/cancel").status_code == 404
        assert owner.get(base).json()["video"]["url"]
        # The stranger's own requests work: the refusal is about ownership, not the key.
        own = stranger.post(f"/queue/{APP}", json=SMALL).json()["request_id"]
        assert stranger.put(f"/queue/{APP}/requests/{own}/cancel").status_code in (202, 400)
        assert owner.get(f"/queue/{APP}/requests/{own}/status").status_code == 404


def test_a_presigned_upload_url_expires(make_stack: object, tmp_path: Path) -> None:
    stack: Stack = make_stack(workers=0, env={"OPENREEL_UPLOAD_URL_EXPIRY_S": "10"}).start(wait_ready=False)  # type: ignore[operator]
    with stack.client() as client:
        on_time, upload_url = (
            client.post("/rest/storage/upload/initiate", json={"file_name": name}).json()["upload_url"]
            for name in ("b.txt", "a.txt")
        )
    assert httpx.put(on_time, content=b"on time").status_code == 200
    time.sleep(11.1)  # the shortest expiry allowed, checked in whole seconds
    answer = httpx.put(upload_url, content=b"late")
    assert answer.status_code == 403
    assert answer.json() == {"detail": "The upload URL is invalid or has expired"}
    assert not list((stack.directory / "data" / "files").glob("*/a.txt"))
