"""fal's upload routes and the public file route over HTTP, on real stacks with either backend:
presigned PUTs, multipart, CDN tokens, size limits, Host routing, lifecycle, Range, traversal."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from openreel.settings import Settings
from openreel.storage import Storage, make_storage
from openreel.storage.base import EXPIRY_KEY
from tests.conftest import API_KEY
from tests.s3server import BUCKET, S3Server
from tests.stack import Stack

MiB = 1024 * 1024
LIMIT = 6 * MiB  # room for one 5 MiB part (S3's minimum) plus a tail
AUTH = {"Authorization": f"Key {API_KEY}"}
LIFETIME = {"x-fal-object-lifecycle": json.dumps({"expiration_duration_seconds": 60})}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server.start()
    yield server
    server.stop()


def start_stack(directory: Path, models_dir: Path, env: dict[str, str]) -> Stack:
    """The API and Redis only: uploads need no GPU worker."""
    common = {"OPENREEL_API_KEYS": API_KEY, "OPENREEL_UPLOAD_MAX_BYTES": str(LIMIT)}
    return Stack(directory, models_dir, workers=0, env=common | env).start(wait_ready=False)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("uploads-local"), models_dir, {})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, s3_server: S3Server) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("uploads-s3"), models_dir, s3_server.env())
    yield stack
    stack.stop()


@pytest.fixture(params=["local", "s3"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")


def stack_storage(stack: Stack) -> Storage:
    """The stack's storage as its own processes build it (what the io-worker sweeps with)."""
    env = stack.child_env()
    fields = {k.removeprefix("OPENREEL_").lower(): v for k, v in env.items() if k.startswith("OPENREEL_")}
    return make_storage(Settings(**fields), redis.Redis.from_url(stack.redis_url))


def fetch(url: str) -> httpx.Response:
    """A plain download, as a browser or a model worker would do it (S3 URLs may redirect)."""
    return httpx.get(url, follow_redirects=True, timeout=30)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_url(upload_url: str, suffix: str) -> str:
    """``{origin}{path}/{suffix}{query}``, as the JS client derives part and complete URLs."""
    parts = urlsplit(upload_url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}/{suffix}?{parts.query}"


def test_presigned_put_needs_no_key(any_stack: Stack) -> None:
    data = os.urandom(3 * MiB)
    with any_stack.client() as client:
        assert client.post("/rest/storage/upload/initiate", json={}, headers={"Authorization": ""}).status_code == 401
        answer = client.post(
            "/rest/storage/upload/initiate?storage_type=gcs", json={"file_name": "clip.mp4", "content_type": "video/mp4"}
        )
    assert answer.status_code == 200, answer.text
    upload_url, file_url = answer.json()["upload_url"], answer.json()["file_url"]
    stored = httpx.put(upload_url, content=data, headers={"content-type": "video/mp4"})  # JS: no credentials
    assert stored.status_code == 200 and stored.json()["file_size"] == len(data)
    download = fetch(file_url)
    assert download.status_code == 200 and sha(download.content) == sha(data)
    assert download.headers["content-type"] == "video/mp4"
    # The Python client PUTs with its key: tolerated, and a retried PUT replaces the object.
    again = httpx.put(upload_url, content=b"second", headers=AUTH | {"content-type": "text/plain"})
    assert again.status_code == 200 and fetch(file_url).content == b"second"


def test_presigned_url_is_checked(local_stack: Stack) -> None:
    with local_stack.client() as client:
        upload_url = client.post("/rest/storage/upload/initiate", json={"file_name": "a.txt"}).json()["upload_url"]
    parts = urlsplit(upload_url)
    query = dict(pair.split("=") for pair in parts.query.split("&"))
    forged = {
        "other key": upload_url.replace(parts.path.split("/")[-2], "0" * 32),
        "later expiry": upload_url.replace(f"expires={query['expires']}", f"expires={int(query['expires']) + 99}"),
        "longer lifetime": upload_url.replace("lifetime=0", "lifetime=1"),
        "bad signature": upload_url.replace(query["signature"], "0" * 64),
        "non-ASCII signature": upload_url.replace(query["signature"], "%C2%B7" * 64),
    }
    for case, url in forged.items():
        answer = httpx.put(url, content=b"x")
        assert answer.status_code == 403, case
        assert answer.json() == {"detail": "The upload URL is invalid or has expired"} and answer.headers["x-fal-request-id"]
    answer = httpx.put(upload_url.split("?")[0], content=b"x")
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "expires"]


def test_rest_multipart_the_js_way(any_stack: Stack) -> None:
    data = os.urandom(5 * MiB + 1000)
    with any_stack.client() as client:
        answer = client.post(
            "/rest/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
            json={"file_name": "big.bin", "content_type": "application/octet-stream"},
        ).json()
    parts = []
    for number, chunk in enumerate((data[: 5 * MiB], data[5 * MiB :]), start=1):
        stored = httpx.put(part_url(answer["upload_url"], str(number)), content=chunk)
        assert stored.status_code == 200
        body = stored.json()
        assert body == {"partNumber": number, "etag": stored.headers["etag"]}
        parts.append(body)
    done = httpx.post(part_url(answer["upload_url"], "complete"), json={"parts": parts})
    assert done.status_code == 200, done.text
    assert sha(fetch(answer["file_url"]).content) == sha(data)
    again = httpx.put(part_url(answer["upload_url"], "3"), content=b"late")
    assert again.status_code == 404  # completed uploads take no more parts


def test_cdn_token_and_uploads(any_stack: Stack) -> None:
    with any_stack.client() as client:
        token = client.post("/rest/storage/auth/token?storage_type=fal-cdn-v3", json={}).json()
    assert token["token_type"] == "Bearer" and token["base_url"] == f"{any_stack.base_url}/cdn"
    expires_at = datetime.fromisoformat(token["expires_at"])
    assert token["expires_at"].endswith("+00:00") and expires_at > datetime.now(UTC)

    cdn = httpx.Client(base_url=token["base_url"], timeout=30)
    bearer = {"Authorization": f"Bearer {token['token']}"}
    for refused in ({}, AUTH, {"Authorization": "Bearer 1.abc"}):
        answer = cdn.post("/files/upload", content=b"x", headers=refused)
        assert answer.status_code == 401 and answer.json()["detail"].startswith("Missing or expired CDN token")

    small = cdn.post("/files/upload", content=b"hello", headers=bearer | {"x-fal-file-name": "hi.txt"})
    assert small.status_code == 200
    assert fetch(small.json()["access_url"]).text == "hello"
    unnamed = cdn.post("/files/upload", content=b"\x00", headers=bearer | {"content-type": "image/png"})
    assert urlsplit(unnamed.json()["access_url"]).path.endswith("/upload.png")

    data = os.urandom(5 * MiB + 7)
    created = cdn.post(
        "/files/upload/multipart", headers=bearer | {"x-fal-file-name": "m.bin", "content-type": "video/mp4"}
    ).json()
    access_url, upload_id = created["access_url"], created["uploadId"]
    assert access_url.startswith(f"{token['base_url']}/files/")
    parts = []
    for number, chunk in ((2, data[5 * MiB :]), (1, data[: 5 * MiB])):  # Python sends parts in parallel
        stored = cdn.put(f"{access_url}/multipart/{upload_id}/{number}", content=chunk, headers=bearer)
        parts.append({"partNumber": number, "etag": stored.headers["etag"]})
    elsewhere = access_url.rsplit("/", 1)[0] + "/other.bin"
    assert cdn.put(f"{elsewhere}/multipart/{upload_id}/3", content=b"x", headers=bearer).status_code == 404
    done = cdn.post(f"{access_url}/multipart/{upload_id}/complete", json={"parts": parts}, headers=bearer)
    assert done.status_code == 200, done.text
    download = fetch(access_url)
    assert sha(download.content) == sha(data) and download.headers["content-type"] == "video/mp4"


def test_upload_limit_is_a_413_and_stores_nothing(local_stack: Stack) -> None:
    files = local_stack.directory / "data" / "files"
    before = {p for p in files.rglob("*") if p.is_file()}
    with local_stack.client() as client:
        upload_url = client.post("/rest/storage/upload/initiate", json={}).json()["upload_url"]
        token = client.post("/rest/storage/auth/token", json={}).json()["token"]
        multipart = client.post("/rest/storage/upload/initiate-multipart", json={}).json()["upload_url"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: only counting the stream can tell
        for _ in range(7):
            yield b"x" * MiB

    too_big = b"x" * (LIMIT + 1)
    answers = [
        httpx.put(upload_url, content=too_big),
        httpx.put(upload_url, content=chunked()),
        httpx.post(f"{local_stack.base_url}/cdn/files/upload", content=chunked(), headers={"Authorization": f"Bearer {token}"}),
        httpx.put(part_url(multipart, "1"), content=too_big),
    ]
    httpx.put(part_url(multipart, "1"), content=b"x" * (4 * MiB)).raise_for_status()
    answers.append(httpx.put(part_url(multipart, "2"), content=b"x" * (3 * MiB)))  # 7 MiB in all
    for answer in answers:
        assert answer.status_code == 413, answer.text
        assert answer.json() == {"detail": f"The file is larger than the upload limit of {LIMIT} bytes"}
    after = {p for p in files.rglob("*") if p.is_file()}
    assert {p.relative_to(files).parts[0] for p in after - before} <= {".multipart"}  # only the accepted part


def test_fal_hosts_route_by_host_header(local_stack: Stack) -> None:
    """Recipe P2 sends fal's own host names; older Python clients use rest.alpha.fal.ai."""
    with local_stack.client() as client:
        for rest_host in ("rest.fal.ai", "rest.alpha.fal.ai"):
            token = client.post("/storage/auth/token", json={}, headers={"host": rest_host}).json()
            assert token["base_url"] == "http://v3.fal.media"
            initiated = client.post("/storage/upload/initiate", json={"file_name": "h.txt"}, headers={"host": rest_host})
            assert initiated.json()["upload_url"].startswith(f"http://{rest_host}/storage/upload/object/")
        cdn = {"host": "v3.fal.media", "Authorization": f"Bearer {token['token']}"}
        access_url = client.post("/files/upload", content=b"via v3", headers=cdn).json()["access_url"]
        assert access_url.startswith("http://v3.fal.media/files/")
        assert client.get(urlsplit(access_url).path, headers={"host": "v3.fal.media"}).text == "via v3"
        multipart = client.post("/files/upload/multipart", headers=cdn).json()
        part_path = f"{urlsplit(multipart['access_url']).path}/multipart/{multipart['uploadId']}/1"
        assert client.put(part_path, content=b"p", headers=cdn).headers["etag"]


def test_upload_lifecycle_expires_the_object(any_stack: Stack, request: pytest.FixtureRequest) -> None:
    storage = stack_storage(any_stack)
    with any_stack.client() as client:
        for bad in ("{not json", "[]", '{"expiration_duration_seconds": -5}', '{"expiration_duration_seconds": "1h"}'):
            refused = client.post("/rest/storage/upload/initiate", json={}, headers={"x-fal-object-lifecycle": bad})
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["header", "x-fal-object-lifecycle"]
        refused = client.post(
            "/queue/fal-ai/cogvideox-5b", json={"prompt": "p"}, headers={"x-fal-object-lifecycle-preference": "{"}
        )
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["header", "x-fal-object-lifecycle-preference"]
        answer = client.post("/rest/storage/upload/initiate", json={"file_name": "tmp.txt"}, headers=LIFETIME).json()
    httpx.put(answer["upload_url"], content=b"short-lived").raise_for_status()
    key = storage.key_from_url(answer["file_url"])
    assert key is not None
    assert storage.redis.zscore(EXPIRY_KEY, key) == pytest.approx(time.time() + 60, abs=5)
    if any_stack.env.get("OPENREEL_STORAGE") == "s3":
        s3 = request.getfixturevalue("s3_server").client()
        assert s3.head_object(Bucket=BUCKET, Key=key)["Expires"].timestamp() == pytest.approx(time.time() + 60, abs=5)
    assert fetch(answer["file_url"]).status_code == 200
    storage.sweep_expired(time.time() + 61)
    assert fetch(answer["file_url"]).status_code in (403, 404)  # S3 answers 403 or 404 for a missing key


@pytest.fixture(scope="module")
def stored_file(local_stack: Stack) -> tuple[str, bytes]:
    data = bytes(range(256)) * 40  # 10240 bytes
    with local_stack.client() as client:
        answer = client.post("/rest/storage/upload/initiate", json={"file_name": "seek.mp4"}).json()
    httpx.put(answer["upload_url"], content=data, headers={"content-type": "video/mp4"}).raise_for_status()
    return urlsplit(answer["file_url"]).path, data


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=10000-", 10000, 10239), ("bytes=-40", 10200, 10239), ("bytes=10200-99999", 10200, 10239)],
)
def test_range_requests(local_stack: Stack, stored_file: tuple[str, bytes], range_header: str, first: int, last: int) -> None:
    path, data = stored_file
    with local_stack.client() as client:
        answer = client.get(path, headers={"range": range_header})
    assert answer.status_code == 206
    assert answer.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert answer.headers["content-length"] == str(last - first + 1)
    assert answer.headers["content-type"] == "video/mp4"
    assert answer.content == data[first : last + 1]


def test_range_edge_cases(local_stack: Stack, stored_file: tuple[str, bytes]) -> None:
    path, data = stored_file
    with local_stack.client() as client:
        whole = client.get(path)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["x-content-type-options"] == "nosniff"
        head = client.head(path)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
        several = client.get(path, headers={"range": "bytes=0-1,100-101"})
        assert several.status_code == 206 and several.headers["content-type"].startswith("multipart/byteranges")
        for unsatisfiable in ("bytes=10240-", "bytes=99999-100000", "bytes=-0", "bytes=50-10", "bytes=abc"):
            answer = client.get(path, headers={"range": unsatisfiable})
            assert answer.status_code == 416, unsatisfiable
            assert answer.headers["content-range"] == f"bytes */{len(data)}"
            assert answer.json() == {"detail": "Range not satisfiable"} and answer.headers["x-fal-request-id"]
        ignored = client.get(path, headers={"range": "items=0-1"})  # unknown unit: RFC 9110 says ignore it
        assert ignored.status_code == 200 and ignored.content == data


def test_no_path_traversal(local_stack: Stack, stored_file: tuple[str, bytes], tmp_path: Path) -> None:
    path, _ = stored_file
    folder = path.split("/")[2]
    files = local_stack.directory / "data" / "files"
    (files / ".staging").mkdir(exist_ok=True)
    (files / ".staging" / "secret").write_text("not yours")
    attempts = [
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/..%2f..%2f..%2fetc%2fpasswd",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        f"/files/{folder}/..%2f..%2fredis%2fredis.port",
        f"/files/{folder}/.content-type",
        f"/files/{folder}/%2e%2e",
        "/files/.staging/secret",
        f"/files/{folder}/seek.mp4%00.txt",
        f"/files/{folder}/seek.mp4/",
        f"/files/{folder.upper()}/seek.mp4",
        f"/cdn/files/{folder}/..%2f..%2fredis%2fredis.port",
        "/cdn/files/%2e%2e%2f%2e%2e%2fredis/redis.port",
    ]
    connection = http.client.HTTPConnection("127.0.0.1", local_stack.port, timeout=10)
    for attempt in attempts:  # http.client sends the path as written; httpx would normalise it
        connection.request("GET", attempt)
        answer = connection.getresponse()
        body = answer.read()
        assert answer.status == 404, attempt
        assert json.loads(body) == {"detail": "File not found"} and answer.getheader("x-fal-request-id"), attempt
    connection.close()
