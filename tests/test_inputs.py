"""The input resolver against real servers, real storage and real ffmpeg-encoded files: sources,
the SSRF guard on every hop, size and time limits, content sniffing, video limits, the cache,
and a bad input ending as a 422 in the request's result."""

from __future__ import annotations

import base64
import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
import redis
from PIL import Image

from openreel import queues
from openreel.records import RequestRecord
from openreel.settings import Settings
from openreel.storage import make_storage
from pipelines.registry import ENDPOINTS
from tests.http_servers import Reply, ScriptedServer
from workers.context import InputError, Progress
from workers.inputs import InputResolver
from workers.outputs import encode_mp4
from workers.runtime import Runtime


def encode_video(path: Path, frames: int = 10, size: tuple[int, int] = (64, 48), fps: int = 8) -> bytes:
    width, height = size
    shades = (np.arange(frames)[:, None, None, None] * 20 % 256).astype(np.uint8)
    encode_mp4(np.broadcast_to(shades, (frames, height, width, 3)), fps, path)
    return path.read_bytes()


def encode_image(kind: str = "PNG", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 10)).save(buffer, kind)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("media")
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    audio, webm = directory / "a.m4a", directory / "v.webm"
    quiet = ["-y", "-loglevel", "error", "-f", "lavfi", "-i"]
    subprocess.run([ffmpeg, *quiet, "sine=duration=1", str(audio)], check=True)
    test_pattern = "testsrc=size=32x24:rate=10:duration=1"
    subprocess.run([ffmpeg, *quiet, test_pattern, "-c:v", "libvpx-vp9", str(webm)], check=True)
    mp4 = encode_video(directory / "v.mp4")
    return {
        "mp4": mp4,
        "webm": webm.read_bytes(),
        "m4a": audio.read_bytes(),
        "png": encode_image("PNG"),
        "jpeg": encode_image("JPEG"),
        "long": encode_video(directory / "long.mp4", frames=40, fps=8),  # 5 s
        "wide": encode_video(directory / "wide.mp4", frames=2, size=(320, 16)),
        "truncated_mp4": mp4[: len(mp4) // 3],
    }


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer().start()
    yield running
    running.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        fetch_allow=["127.0.0.1"],
        fetch_max_bytes=200_000,
        data_uri_max_bytes=100_000,
        fetch_read_timeout_s=1.0,
        fetch_max_redirects=2,
        input_video_max_seconds=4,
        input_video_max_side=256,
        input_video_max_frames=30,
    )


class Logged:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def progress(self) -> Progress:
        return Progress(log=self.lines.append, cancelled=lambda: False)


def resolver(settings: Settings, redis_connection: redis.Redis, logged: Logged | None = None) -> InputResolver:
    return InputResolver(settings, make_storage(settings, redis_connection), (logged or Logged()).progress())


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(InputError) as caught:
        call(*args)
    (detail,) = caught.value.detail
    assert detail["loc"][:2] == ["body", "video_url"] or detail["loc"][:2] == ["body", "image_url"]
    return detail["msg"]


# --- sources -------------------------------------------------------------------------------
def test_a_fetched_video_becomes_frames_and_fps(
    settings: Settings, redis_connection: redis.Redis, server: ScriptedServer, media: dict[str, bytes]
) -> None:
    logged = Logged()
    url = server.route("/clip", Reply(200, media["mp4"], {"content-type": "application/octet-stream"}))
    video = resolver(settings, redis_connection, logged).video(url, ["video_url"])
    assert video.frames.shape == (10, 48, 64, 3) and video.frames.dtype == np.uint8 and video.fps == 8
    assert logged.lines[0] == "downloading inputs"
    assert logged.lines[1].startswith("video_url: 0.0 MiB downloaded")


def test_webm_and_jpeg_named_wrongly_are_still_recognised(
    settings: Settings, redis_connection: redis.Redis, server: ScriptedServer, media: dict[str, bytes]
) -> None:
    inputs = resolver(settings, redis_connection)
    webm = server.route("/picture.png", Reply(200, media["webm"], {"content-type": "image/png"}))
    jpeg = server.route("/movie.mp4", Reply(200, media["jpeg"], {"content-type": "video/mp4"}))
    assert inputs.video(webm, ["video_url"]).frames.shape == (10, 24, 32, 3)
    assert inputs.image(jpeg, ["image_url"]).size == (40, 30)


def test_data_uris_are_decoded_within_their_cap(
    settings: Settings, redis_connection: redis.Redis, media: dict[str, bytes]
) -> None:
    inputs = resolver(settings, redis_connection)
    uri = "data:image/png;base64," + base64.b64encode(media["png"]).decode()
    assert inputs.image(uri, ["image_url"]).size == (40, 30)
    assert inputs.file("data:text/plain,hello%20there", ["loras", 0, "path"]).read_bytes() == b"hello there"
    big = "data:video/mp4;base64," + base64.b64encode(b"\0" * 150_000).decode()
    assert "100000-byte limit" in refused(inputs.video, big, ["video_url"])
    assert "base64 data is invalid" in refused(inputs.video, "data:video/mp4;base64,@@@@", ["video_url"])
    assert "no comma" in refused(inputs.video, "data:video/mp4;base64", ["video_url"])


def test_own_storage_urls_are_read_from_storage_not_fetched(
    settings: Settings, redis_connection: redis.Redis, media: dict[str, bytes], tmp_path: Path
) -> None:
    storage = make_storage(settings, redis_connection)
    source = tmp_path / "upload.mp4"
    source.write_bytes(media["mp4"])
    key = storage.put_file(source, "upload.mp4", "video/mp4")
    # The API is on a loopback address the guard refuses: only a storage read can succeed.
    url = storage.url(key, "http://127.0.0.9:1")
    logged = Logged()
    assert resolver(settings, redis_connection, logged).video(url, ["video_url"]).frames.shape[0] == 10
    assert "read from storage" in logged.lines[1]
    storage.delete(key)
    assert "not allowed" in refused(resolver(settings, redis_connection).video, url, ["video_url"])


def test_unsupported_schemes_are_refused(settings: Settings, redis_connection: redis.Redis) -> None:
    inputs = resolver(settings, redis_connection)
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/a.mp4", "gopher://127.0.0.1:70/", "/etc/passwd"):
        assert "Unsupported URL" in refused(inputs.video, url, ["video_url"])


# --- the guard, redirects, limits ----------------------------------------------------------
def test_a_redirect_chain_ending_at_a_refused_address_is_not_followed(
    settings: Settings, redis_connection: redis.Redis, server: ScriptedServer, media: dict[str, bytes]
) -> None:
    internal = ScriptedServer(host="127.0.0.2").start()
    try:
        internal.route("/admin", Reply(200, media["mp4"]))
        server.route("/one", Reply(302, headers={"location": "/two"}))
        server.route("/two", Reply(301, headers={"location": internal.url("/admin")}))
        message = refused(resolver(settings, redis_connection).video, server.url("/one"), ["video_url"])
        assert "not allowed" in message and "127.0.0.2: loopback address" in message
        assert internal.hits == [] and len(server.hits_on("/two")) == 1
    finally:
        internal.stop()


def test_metadata_and_private_addresses_are_refused_without_fetch_allow(
    redis_connection: redis.Redis, tmp_path: Path, server: ScriptedServer, media: dict[str, bytes]
) -> None:
    inputs = resolver(Settings(data_dir=tmp_path), redis_connection)
    server.route("/clip", Reply(200, media["mp4"]))
    for url in (server.url("/clip"), "http://169.254.169.254/latest/meta-data/", "http://[::ffff:10.0.0.1]/x"):
        assert "not allowed" in refused(inputs.video, url, ["video_url"])
    assert server.hits == []


def test_redirect_limit(settings: Settings, redis_connection: redis.Redis, server: ScriptedServer) -> None:
    for hop in range(4):
        server.route(f"/r{hop}", Reply(302, headers={"location": f"/r{hop + 1}"}))
    assert "more than 2 redirects" in refused(resolver(settings, redis_connection).video, server.url("/r0"), ["video_url"])


def test_size_cap_with_and_without_content_length(
    settings: Settings, redis_connection: redis.Redis, server: ScriptedServer
) -> None:
    inputs = resolver(settings, redis_connection)
    declared = server.route("/declared", Reply(200, b"\0" * 300_000))
    streamed = server.route("/streamed", Reply(200, b"\0" * 300_000, chunked=True))
    for url in (declared, streamed):
        assert "200000-byte limit" in refused(inputs.video, url, ["video_url"])
    assert list((settings.data_dir / "inputs" / "partial").iterdir()) == []
    assert list((settings.data_dir / "inputs" / "blobs").iterdir()) == []


def test_read_timeout_and_http_errors(settings: Settings, redis_connection: redis.Redis, server: ScriptedServer) -> None:
    inputs = resolver(settings, redis_connection)
    slow = server.route("/slow", Reply(200, b"late", delay_s=2.5))
    assert "timed out" in refused(inputs.video, slow, ["video_url"])
    assert "HTTP 404" in refused(inputs.video, server.url("/missing"), ["video_url"])


# --- sniffing and video limits -------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "method", "field", "expected"),
    [
        ("png", "video", "video_url", "not a video"),
        ("jpeg", "video", "video_url", "not a video"),
        ("m4a", "video", "video_url", "could not be decoded"),
        ("truncated_mp4", "video", "video_url", "could not be decoded"),
        ("mp4", "image", "image_url", "not an image"),
        ("webm", "image", "image_url", "not an image"),
    ],
)
def test_content_is_sniffed_from_the_bytes(
    settings: Settings,
    redis_connection: redis.Redis,
    server: ScriptedServer,
    media: dict[str, bytes],
    kind: str,
    method: str,
    field: str,
    expected: str,
) -> None:
    # Name and Content-Type claim the right kind; only the bytes tell.
    name, content_type = ("clip.mp4", "video/mp4") if field == "video_url" else ("photo.png", "image/png")
    url = server.route(f"/{name}", Reply(200, media[kind], {"content-type": content_type}))
    assert expected in refused(getattr(resolver(settings, redis_connection), method), url, [field])


def test_video_and_image_limits(settings: Settings, redis_connection: redis.Redis, media: dict[str, bytes]) -> None:
    inputs = resolver(settings, redis_connection)

    def data(kind: str) -> str:
        return "data:application/octet-stream;base64," + base64.b64encode(media[kind]).decode()

    assert "lasts 5.0 s; the limit is 4 s" in refused(inputs.video, data("long"), ["video_url"])
    assert "320x16; the largest side allowed is 256" in refused(inputs.video, data("wide"), ["video_url"])
    few_frames = settings.model_copy(update={"input_video_max_frames": 5})
    assert "more than 5 frames" in refused(resolver(few_frames, redis_connection).video, data("mp4"), ["video_url"])
    small = settings.model_copy(update={"input_video_max_side": 32})
    message = refused(resolver(small, redis_connection).image, data("png"), ["image_url"])
    assert "40x30; the largest side allowed is 32" in message


# --- the cache -----------------------------------------------------------------------------
def test_a_file_used_twice_is_fetched_once(
    settings: Settings, redis_connection: redis.Redis, server: ScriptedServer, media: dict[str, bytes]
) -> None:
    first = server.route("/lora.safetensors", Reply(200, b"weights" * 1000))
    mirror = server.route("/mirror/lora.safetensors", Reply(200, b"weights" * 1000))
    paths = [resolver(settings, redis_connection).file(url, ["loras", 0, "path"]) for url in (first, first, mirror)]
    assert len(server.hits_on("/lora.safetensors")) == 1
    assert len({path for path in paths}) == 1  # same content, same cached file
    assert len(list((settings.data_dir / "inputs" / "blobs").iterdir())) == 1


# --- through the worker runtime ------------------------------------------------------------
class VideoUrlRunner:
    """Fault injection: a runner that reads the request's prompt as a video_url."""

    endpoint_id = "fal-ai/cogvideox-5b"

    def run(self, request: Any, ctx: Any) -> Any:
        ctx.inputs.video(request.prompt, ["video_url"])
        raise AssertionError("a PNG must not decode as a video")


def test_a_non_video_ends_the_request_with_a_422_naming_the_field(
    settings: Settings, redis_connection: redis.Redis, server: ScriptedServer, media: dict[str, bytes]
) -> None:
    runners = {VideoUrlRunner.endpoint_id: VideoUrlRunner()}
    runtime = Runtime(settings, redis_connection, runners, "test-worker")  # type: ignore[arg-type]
    endpoint = ENDPOINTS[VideoUrlRunner.endpoint_id]
    record = RequestRecord(
        request_id=f"inputs-{time.time_ns()}", endpoint=endpoint.id, app=endpoint.id, family=endpoint.family,
        input={"prompt": server.route("/fake.mp4", Reply(200, media["png"]))}, created_at=time.time(),
        files_base_url="http://127.0.0.1:1",
    )  # fmt: skip
    queues.submit(redis_connection, runtime.store, record, job_timeout_s=60, max_retries=0)
    runtime.execute(record.request_id)
    done = runtime.store.get(record.request_id)
    assert done is not None and done.status == "COMPLETED" and done.error is not None
    assert done.error.status_code == 422 and done.error.detail[0]["loc"] == ["body", "video_url"]
    assert "downloading inputs" in [line["message"] for line in runtime.store.logs(record.request_id)]

