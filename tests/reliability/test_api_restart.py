"""The API process killed with SIGKILL and restarted while clients stream status and upload files:
a client that retries gets its stream and its upload through, and a cut-off upload never becomes
a visible file. Redis and the worker live on in their own processes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openreel.redis_server import EmbeddedRedis
from tests.reliability.faults import APP, FAULT_STACK_ENV, is_completed, status, submit
from tests.stack import Stack, wait_until

LONG = {"prompt": "long", "video_size": {"width": 256, "height": 256}, "num_inference_steps": 30, "use_rife": False}


@pytest.fixture(scope="module")
def split_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """API (with the io-worker) in one process, Redis and a worker in others: only the API dies."""
    directory = tmp_path_factory.mktemp("api-restart")
    server = EmbeddedRedis(directory / "data" / "redis")
    stack = Stack(directory, models_dir, workers=0, env=FAULT_STACK_ENV | {"OPENREEL_REDIS_URL": server.start()})
    try:
        stack.start(wait_ready=False)
        stack.start_worker()
        stack.wait(ready=True)
        yield stack
    finally:
        stack.stop()
        server.stop()


def restart_api(stack: Stack) -> None:
    assert stack.process is not None
    stack.process.kill()
    stack.process.wait()
    stack.start(wait_ready=False)  # same port, same Redis


def stream_until_completed(stack: Stack, request_id: str, events: list[dict[str, Any]], failures: list[str]) -> None:
    """An SSE client that reconnects after a broken stream, as a retrying client does."""
    url = f"/queue/{APP}/requests/{request_id}/status/stream"
    with stack.client() as client:
        while True:
            try:
                with client.stream("GET", url) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            events.append(json.loads(line[len("data: ") :]))
                            if events[-1]["status"] == "COMPLETED":
                                return
            except (httpx.TransportError, httpx.HTTPStatusError) as error:
                failures.append(type(error).__name__)
                time.sleep(0.2)


def test_status_streams_survive_an_api_restart(split_stack: Stack) -> None:
    with split_stack.client() as client:
        request_id = submit(client, LONG)
        events: list[dict[str, Any]] = []
        failures: list[str] = []
        reader = threading.Thread(target=stream_until_completed, args=(split_stack, request_id, events, failures))
        reader.start()
        wait_until(lambda: any(e["status"] == "IN_PROGRESS" for e in events), timeout_s=60)
        restart_api(split_stack)
        reader.join(timeout=180)
        assert not reader.is_alive(), "the stream never completed"
        assert failures, "the stream should have been cut by the restart"
        assert events[-1]["status"] == "COMPLETED" and is_completed(client, request_id)
        assert client.get(f"/queue/{APP}/requests/{request_id}").json()["video"]["url"]
        assert status(client, request_id)["status"] == "COMPLETED"


def test_an_upload_cut_by_an_api_restart_leaves_no_file_and_its_retry_succeeds(split_stack: Stack) -> None:
    content = bytes(range(256)) * 4096 * 4  # 4 MiB
    with split_stack.client() as client:
        urls = client.post("/rest/storage/upload/initiate", json={"file_name": "clip.bin"}).json()
    half_sent = threading.Event()
    api_down = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield content[: len(content) // 2]
        half_sent.set()
        api_down.wait(60)
        yield content[len(content) // 2 :]

    outcome: list[object] = []

    def upload() -> None:
        try:
            outcome.append(httpx.put(urls["upload_url"], content=slow_body(), timeout=60).status_code)
        except httpx.TransportError as error:
            outcome.append(error)

    uploader = threading.Thread(target=upload)
    uploader.start()
    assert half_sent.wait(30)
    time.sleep(0.5)  # the first half is in the API's hands
    restart_api(split_stack)
    api_down.set()
    uploader.join(60)
    assert outcome and (not isinstance(outcome[0], int) or outcome[0] >= 400), outcome

    files = split_stack.directory / "data" / "files"
    assert httpx.get(urls["file_url"]).status_code == 404
    assert not [p for p in files.rglob("clip.bin") if ".staging" not in p.parts]
    retried = httpx.put(urls["upload_url"], content=content, timeout=60)  # the same signed URL, still valid
    assert retried.status_code == 200, retried.text
    assert httpx.get(urls["file_url"]).content == content
