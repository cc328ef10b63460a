"""The io-worker's jobs end to end: completion webhooks (real ``openreel up`` stacks, real
receivers on loopback, a signature verifier written here from fal's documentation alone) and
the sweep of expired stored files."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openreel.redis_server import free_port
from openreel.settings import Settings
from openreel.storage import make_storage
from tests.http_servers import Hit, Reply, ScriptedServer
from tests.stack import Stack, wait_until

APP = "fal-ai/cogvideox-5b"
SMALL = {"prompt": "tiny", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2}
# Receivers run on 127.0.0.1, which only fetch_allow opens; 127.0.0.2 stays refused.
WEBHOOK_ENV = {"OPENREEL_FETCH_ALLOW": "127.0.0.1"}


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """A stack with a worker: requests complete with a real output."""
    stack = Stack(tmp_path_factory.mktemp("webhooks-busy"), models_dir, workers=1, env=WEBHOOK_ENV).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """A stack without GPU workers (only the io-worker): requests stay queued until cancelled."""
    env = WEBHOOK_ENV | {"OPENREEL_STORAGE_SWEEP_S": "1"}
    stack = Stack(tmp_path_factory.mktemp("webhooks-idle"), models_dir, workers=0, env=env)
    yield stack.start(wait_ready=False)
    stack.stop()


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


def submit(stack: Stack, webhook_url: str, headers: dict[str, str] | None = None) -> str:
    with stack.client() as client:
        response = client.post(f"/queue/{APP}", params={"fal_webhook": webhook_url}, json=SMALL, headers=headers)
        response.raise_for_status()
        return response.json()["request_id"]


def logs(stack: Stack, request_id: str) -> list[str]:
    with stack.client() as client:
        body = client.get(f"/queue/{APP}/requests/{request_id}/status", params={"logs": 1}).json()
    return [line["message"] for line in body["logs"] or []]


def wait_for_log(stack: Stack, request_id: str, text: str, timeout_s: float = 30) -> list[str]:
    wait_until(lambda: any(text in line for line in logs(stack, request_id)), timeout_s=timeout_s, interval_s=0.1)
    return logs(stack, request_id)


def cancel(stack: Stack, request_id: str) -> None:
    with stack.client() as client:
        assert client.put(f"/queue/{APP}/requests/{request_id}/cancel").status_code == 202


# --- an independent verifier, as a receiver would write it from fal's docs ----------------
def fetch_jwks(stack: Stack) -> list[Ed25519PublicKey]:
    keys = httpx.get(f"{stack.base_url}/.well-known/jwks.json").json()["keys"]
    return [
        Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4)))
        for key in keys
        if key["kty"] == "OKP" and key["crv"] == "Ed25519"
    ]


def verify(hit: Hit, keys: list[Ed25519PublicKey]) -> bool:
    timestamp = hit.headers["x-fal-webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    message = "\n".join(
        [
            hit.headers["x-fal-webhook-request-id"],
            hit.headers["x-fal-webhook-user-id"],
            timestamp,
            hashlib.sha256(hit.body).hexdigest(),
        ]
    ).encode()
    signature = bytes.fromhex(hit.headers["x-fal-webhook-signature"])
    for key in keys:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False


# --- tests -------------------------------------------------------------------------------
def test_jwks_is_served_where_verifiers_look(idle: Stack) -> None:
    first = httpx.get(f"{idle.base_url}/.well-known/jwks.json").json()
    assert httpx.get(f"{idle.base_url}/rest/.well-known/jwks.json").json() == first
    as_rest_host = httpx.get(f"{idle.base_url}/.well-known/jwks.json", headers={"host": "rest.fal.ai"})
    assert as_rest_host.json() == first
    (key,) = first["keys"]
    assert set(key) == {"kty", "crv", "x", "kid"} and (key["kty"], key["crv"]) == ("OKP", "Ed25519")
    assert len(base64.urlsafe_b64decode(key["x"] + "=")) == 32


def test_retried_until_accepted_then_delivered_exactly_once_with_a_valid_signature(
    busy: Stack, receiver: ScriptedServer
) -> None:
    url = receiver.route("/hook", Reply(500), Reply(500), Reply(200, b"thanks"))
    request_id = submit(busy, url)
    wait_until(lambda: len(receiver.hits_on("/hook")) >= 3, timeout_s=120)
    lines = wait_for_log(busy, request_id, "webhook delivered")
    time.sleep(3)  # longer than any retry interval: a fourth POST would have come by now
    hits = receiver.hits_on("/hook")
    assert len(hits) == 3 and len({hit.body for hit in hits}) == 1

    keys = fetch_jwks(busy)
    assert all(verify(hit, keys) for hit in hits)
    tampered = Hit(hits[2].method, hits[2].path, hits[2].headers, hits[2].body.replace(b"OK", b"KO"), hits[2].at)
    assert not verify(tampered, keys)

    body = json.loads(hits[2].body)
    with busy.client() as client:
        output = client.get(f"/queue/{APP}/requests/{request_id}").json()
    assert body == {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK",
        "payload": output,
        "error": None,
        "payload_error": None,
    }
    assert hits[2].headers["content-type"] == "application/json"
    assert hits[2].headers["x-fal-webhook-request-id"] == request_id
    assert [line for line in lines if line.startswith("webhook")] == [
        "webhook attempt 1/4 failed: HTTP 500",
        "webhook attempt 2/4 failed: HTTP 500",
        "webhook delivered (attempt 3/4): HTTP 200",
    ]


def test_a_receiver_that_is_down_at_first_still_gets_the_payload(busy: Stack) -> None:
    port = free_port()
    request_id = submit(busy, f"http://127.0.0.1:{port}/late")
    wait_for_log(busy, request_id, "attempt 2/4 failed: ConnectError", timeout_s=120)
    late = ScriptedServer(port=port).start()
    try:
        late.route("/late", Reply(204))
        wait_until(lambda: late.hits_on("/late"), timeout_s=30)
        (hit,) = late.hits_on("/late")
        assert json.loads(hit.body)["status"] == "OK" and verify(hit, fetch_jwks(busy))
        assert "webhook delivered (attempt 3/4): HTTP 204" in wait_for_log(busy, request_id, "webhook delivered")
    finally:
        late.stop()


@pytest.mark.parametrize("ending", ["cancelled", "start timeout"])
def test_a_request_that_never_ran_sends_an_error_webhook(idle: Stack, receiver: ScriptedServer, ending: str) -> None:
    url = receiver.route("/hook", Reply(200))
    if ending == "cancelled":
        request_id = submit(idle, url)
        cancel(idle, request_id)
        expected = (499, {"detail": "Request was cancelled", "error_type": "request_cancelled"})
    else:
        request_id = submit(idle, url, {"x-fal-request-timeout": "0.2"})
        time.sleep(0.3)
        logs(idle, request_id)  # the API notices the missed deadline when the request is read
        expected = (504, {"detail": "Request timed out before a worker started it", "error_type": "request_timeout"})
    wait_until(lambda: receiver.hits_on("/hook"), timeout_s=30)
    (hit,) = receiver.hits_on("/hook")
    body = json.loads(hit.body)
    assert body["status"] == "ERROR" and body["request_id"] == request_id
    assert (body["error"], body["payload"]) == (f"Invalid status code: {expected[0]}", expected[1])
    assert verify(hit, fetch_jwks(idle))


def test_redirects_are_failures_and_never_followed(idle: Stack, receiver: ScriptedServer) -> None:
    internal = ScriptedServer(host="127.0.0.2").start()
    try:
        internal.route("/admin", Reply(200))
        url = receiver.route("/moved", Reply(302, headers={"location": internal.url("/admin")}))
        request_id = submit(idle, url)
        cancel(idle, request_id)
        lines = wait_for_log(idle, request_id, "giving up")
        assert len(receiver.hits_on("/moved")) == 4 and internal.hits == []
        assert "webhook attempt 4/4 failed: HTTP 302 (redirects are not followed); giving up" in lines
    finally:
        internal.stop()


def test_a_refused_webhook_address_is_never_contacted(idle: Stack) -> None:
    internal = ScriptedServer(host="127.0.0.2").start()
    try:
        url = internal.route("/hook", Reply(200))
        request_id = submit(idle, url)
        cancel(idle, request_id)
        lines = wait_for_log(idle, request_id, "webhook not sent")
        assert "webhook not sent: refusing to contact 127.0.0.2: loopback address" in lines
        time.sleep(2)  # no retry follows a refusal
        assert internal.hits == [] and sum("webhook" in line for line in logs(idle, request_id)) == 1
    finally:
        internal.stop()


def test_a_webhook_url_that_is_not_http_is_refused_at_submit(idle: Stack) -> None:
    with idle.client() as client:
        for url in ("ftp://127.0.0.1/hook", "not a url", "http://"):
            response = client.post(f"/queue/{APP}", params={"fal_webhook": url}, json=SMALL)
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["query", "fal_webhook"]


def test_no_webhook_without_fal_webhook(idle: Stack) -> None:
    with idle.client() as client:
        request_id = client.post(f"/queue/{APP}", json=SMALL).json()["request_id"]
    cancel(idle, request_id)
    time.sleep(1)
    assert not any("webhook" in line for line in logs(idle, request_id))


def test_the_io_worker_sweeps_expired_files(idle: Stack, tmp_path: Path) -> None:
    storage = make_storage(Settings(data_dir=idle.directory / "data"), redis.Redis.from_url(idle.redis_url))
    source = tmp_path / "short-lived.txt"
    source.write_text("soon gone")
    key = storage.put_file(source, source.name, "text/plain", expires_at=time.time() + 0.5)
    kept = storage.put_file(source, source.name, "text/plain")
    assert storage.exists(key)
    wait_until(lambda: not storage.exists(key), timeout_s=15)
    assert storage.exists(kept)
