"""The official Python fal-client uploading through recipe P2: only HTTPS_PROXY (a CONNECT proxy
tunnelling every host to the server), SSL_CERT_FILE and FAL_KEY are set. The client's hard-coded
rest.fal.ai and v3.fal.media reach openreel, which routes on the Host header."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import redis

from openreel.storage.base import EXPIRY_KEY
from tests.conftest import API_KEY
from tests.connect_proxy import ConnectProxy
from tests.generated_inputs import gradient_frames, mp4_bytes, png_bytes
from tests.stack import Stack

MiB = 1024 * 1024
APP = "fal-ai/cogvideox-5b"
SMALL = {"prompt": "a kite", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2}
RECIPE_VARIABLES = ("FAL_KEY", "HTTPS_PROXY", "SSL_CERT_FILE", "FAL_RUN_HOST", "FAL_QUEUE_RUN_HOST")


@pytest.fixture(scope="module")
def proxy(stack: Stack) -> Iterator[ConnectProxy]:
    running = ConnectProxy(stack.port).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fal(stack: Stack, proxy: ConnectProxy) -> Iterator[ModuleType]:
    """fal_client as a user of recipe P2 gets it: fal's default hosts, reached through the proxy."""
    saved = {name: os.environ.get(name) for name in RECIPE_VARIABLES}
    for name in ("FAL_RUN_HOST", "FAL_QUEUE_RUN_HOST"):
        os.environ.pop(name, None)
    os.environ.update({"FAL_KEY": API_KEY, "HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(stack.tls.cert)})  # type: ignore[union-attr]
    _forget_fal_client()
    yield importlib.import_module("fal_client")
    _forget_fal_client()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _forget_fal_client() -> None:
    """fal_client reads its hosts when imported: drop it so the next import sees the environment."""
    for name in [m for m in sys.modules if m == "fal_client" or m.startswith("fal_client.")]:
        del sys.modules[name]


@pytest.fixture
def download(stack: Stack, proxy: ConnectProxy) -> Iterator[callable]:
    """Fetch a returned URL the way the user's own code would: through the same proxy."""
    with httpx.Client(proxy=proxy.url, verify=stack.verify, timeout=60) as client:
        yield lambda url: client.get(url)


def random_file(path: Path, size: int) -> str:
    """Writes ``size`` random bytes to ``path``; returns their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for offset in range(0, size, 8 * MiB):
            block = os.urandom(min(8 * MiB, size - offset))
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def expiry_of(stack: Stack, url: str) -> float | None:
    key = "/".join(url.split("?")[0].split("/")[-2:])
    return redis.Redis.from_url(stack.redis_url).zscore(EXPIRY_KEY, key)


def test_default_v3_upload(fal: ModuleType, proxy: ConnectProxy, download, tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    digest = random_file(path, 300_000)
    url = fal.upload_file(path)
    assert url.startswith("https://v3.fal.media/files/") and url.endswith("/still.png")
    answer = download(url)
    assert hashlib.sha256(answer.content).hexdigest() == digest
    assert answer.headers["content-type"] == "image/png"
    assert {"rest.fal.ai:443", "v3.fal.media:443"} <= set(proxy.hosts)


def test_storage_repository_path(fal: ModuleType, download) -> None:
    data = os.urandom(200_000)
    url = fal.upload(data, "application/octet-stream", file_name="weights.bin", repository="fal")
    assert url.startswith("https://rest.fal.ai/files/") and url.endswith("/weights.bin")
    assert download(url).content == data


def test_101_mib_file_takes_the_multipart_path(
    fal: ModuleType, download, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts: list[int] = []
    real_upload_part = fal.client.MultipartUpload.upload_part

    def counted(self, part_number: int, data: bytes) -> None:  # noqa: ANN001 - the client's own signature
        parts.append(part_number)
        real_upload_part(self, part_number, data)

    monkeypatch.setattr(fal.client.MultipartUpload, "upload_part", counted)
    path = tmp_path / "reference.mp4"
    digest = random_file(path, 101 * MiB)
    url = fal.upload_file(path)
    assert sorted(parts) == list(range(1, 12))  # 10 MiB parts, sent 10 at a time
    answer = download(url)
    assert answer.headers["content-type"] == "video/mp4"
    assert len(answer.content) == 101 * MiB and hashlib.sha256(answer.content).hexdigest() == digest


def test_lifecycle_on_uploads_and_outputs(fal: ModuleType, stack: Stack, download, tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("kept for an hour")
    url = fal.upload_file(path, lifecycle=fal.client.StorageSettings(expires_in="1h"))
    assert expiry_of(stack, url) == pytest.approx(time.time() + 3600, abs=10)

    preference = {"X-Fal-Object-Lifecycle-Preference": json.dumps({"expiration_duration_seconds": 120})}
    result = fal.subscribe(APP, arguments=SMALL, headers=preference)
    video_url = result["video"]["url"]
    assert expiry_of(stack, video_url) == pytest.approx(time.time() + 120, abs=30)
    assert download(video_url).status_code == 200
    unexpiring = fal.subscribe(APP, arguments=SMALL)
    assert expiry_of(stack, unexpiring["video"]["url"]) is None


def test_uploaded_files_feed_real_requests(fal: ModuleType) -> None:
    """What uploads are for: the returned URLs as video_url and image_url of real requests."""
    video_url = fal.upload(mp4_bytes(gradient_frames(12, (48, 32)), fps=8), "video/mp4", "clip.mp4")
    image_url = fal.upload(png_bytes((64, 48)), "image/png", "first.png")
    common = {"prompt": "uploaded", "num_inference_steps": 2, "use_rife": False}
    remade = fal.subscribe(
        "fal-ai/cogvideox-5b/video-to-video",
        arguments=common | {"video_url": video_url, "video_size": {"width": 32, "height": 32}, "strength": 0.5},
    )
    animated = fal.subscribe(
        "fal-ai/cogvideox-5b/image-to-video",
        arguments=common | {"image_url": image_url, "video_size": {"width": 64, "height": 48}},
    )
    for result in (remade, animated):
        assert result["video"]["content_type"] == "video/mp4" and result["video"]["file_size"] > 0
