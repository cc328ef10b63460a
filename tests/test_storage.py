"""Both storage backends through the one interface: the local directory, and S3 against moto's
real S3 protocol server (checked independently with boto3)."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from openreel.settings import Settings
from openreel.storage import LocalStorage, Storage, StorageError, TooLarge, UploadNotFound, make_storage
from openreel.storage.base import EXPIRY_KEY, UPLOADS_KEY
from tests.s3server import BUCKET, S3Server

MiB = 1024 * 1024
BASE = "http://api.test"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server.start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, redis_connection: redis.Redis) -> Storage:
    redis_connection.delete(EXPIRY_KEY, UPLOADS_KEY)
    env: dict[str, str] = {}
    if request.param == "s3":
        env = request.getfixturevalue("s3_server").env()
    fields = {key.removeprefix("OPENREEL_").lower(): value for key, value in env.items()}
    return make_storage(Settings(data_dir=tmp_path, upload_url_expiry_s=600, **fields), redis_connection)


def read(storage: Storage, key: str) -> bytes:
    with storage.open(key) as body:
        return body.read()


def download(storage: Storage, key: str) -> httpx.Response:
    """What a client gets from the URL: S3 serves it; local files are the API's to serve."""
    url = storage.url(key, BASE)
    if isinstance(storage, LocalStorage):
        assert url == f"{BASE}/files/{key}"
        path = storage.path_of(url.removeprefix(f"{BASE}/files/"))
        assert path is not None
        return httpx.Response(200, content=path.read_bytes(), headers={"content-type": storage.content_type(key)})
    return httpx.get(url)


def test_put_file_and_stream_round_trip(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00video" * 1000)
    key = storage.put_file(source, "my clip (1).mp4", "video/mp4")
    folder, name = key.split("/")
    assert len(folder) == 32 and name == "my_clip__1_.mp4"
    assert source.exists(), "the caller keeps its file"
    assert read(storage, key) == source.read_bytes()
    answer = download(storage, key)
    assert answer.content == source.read_bytes() and answer.headers["content-type"] == "video/mp4"

    data = bytes(range(256)) * (9 * 4096)  # 9 MiB: more than one S3 part of the streaming writer
    chunks = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    key, size = storage.put_stream(chunks, "../../etc/passwd", "application/x-thing", max_bytes=10 * MiB)
    assert size == len(data) and key.endswith("/passwd")
    assert read(storage, key) == data
    assert download(storage, key).headers["content-type"] == "application/x-thing"

    key, size = storage.put_stream(io.BytesIO(b"from a file object"), "a.txt", "text/plain", max_bytes=100)
    assert read(storage, key) == b"from a file object"
    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(FileNotFoundError):
        storage.open(key)


def test_a_stream_past_the_limit_stores_nothing(storage: Storage, s3_objects) -> None:
    before = s3_objects(storage)
    chunks = (b"x" * MiB for _ in range(12))
    with pytest.raises(TooLarge):
        storage.put_stream(chunks, "big.bin", "application/octet-stream", max_bytes=10 * MiB)
    assert s3_objects(storage) == before


@pytest.fixture
def s3_objects(request: pytest.FixtureRequest):
    """Object keys in the bucket (S3) or file paths under the root (local), outside the interface."""

    def listing(storage: Storage) -> set[str]:
        if isinstance(storage, LocalStorage):
            return {str(p.relative_to(storage.root)) for p in storage.root.rglob("*") if p.is_file()}
        s3 = request.getfixturevalue("s3_server").client()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        listed = {obj["Key"] for page in pages for obj in page.get("Contents", [])}
        uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        return listed | {f"upload:{u['Key']}" for u in uploads}

    return listing


def test_multipart_parts_in_any_order(storage: Storage, s3_objects) -> None:
    parts = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"tail"]
    upload = storage.create_multipart("movie.mov", "video/quicktime")
    etags = {}
    for number in (3, 1, 2):
        etags[number] = storage.put_part(upload.upload_id, number, [parts[number - 1]], max_bytes=20 * MiB)
    assert all(etag.startswith('"') and etag.endswith('"') for etag in etags.values())
    if not isinstance(storage, LocalStorage):
        assert etags[1] == f'"{hashlib.md5(parts[0]).hexdigest()}"'  # S3's own ETag, passed through
    with pytest.raises(StorageError, match="Part 2"):
        storage.complete_multipart(upload.upload_id, [(1, etags[1]), (2, etags[1])], max_bytes=20 * MiB)
    key, size = storage.complete_multipart(upload.upload_id, [(n, etags[n]) for n in (2, 3, 1)], max_bytes=20 * MiB)
    assert key == upload.key and size == sum(map(len, parts))
    assert read(storage, key) == b"".join(parts)
    assert download(storage, key).headers["content-type"] == "video/quicktime"
    with pytest.raises(UploadNotFound):
        storage.put_part(upload.upload_id, 4, [b"late"], max_bytes=20 * MiB)
    assert not any(name == f"upload:{key}" or upload.upload_id in name for name in s3_objects(storage))


def test_multipart_limit_counts_every_part(storage: Storage) -> None:
    upload = storage.create_multipart("x.bin", "application/octet-stream")
    storage.put_part(upload.upload_id, 1, [b"x" * (6 * MiB)], max_bytes=10 * MiB)
    with pytest.raises(TooLarge):
        storage.put_part(upload.upload_id, 2, [b"y" * (5 * MiB)], max_bytes=10 * MiB)
    # A repeated part replaces the earlier one, so it may use the space that one had.
    storage.put_part(upload.upload_id, 1, [b"z" * (9 * MiB)], max_bytes=10 * MiB)
    with pytest.raises(UploadNotFound):
        storage.put_part("not-an-upload", 1, [b""], max_bytes=10)


def test_expired_objects_and_abandoned_uploads_are_swept(
    storage: Storage, s3_objects, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    now = time.time()
    source = tmp_path / "out.mp4"
    source.write_bytes(b"frames")
    short = storage.put_file(source, "out.mp4", "video/mp4", expires_at=now + 60)
    long, _ = storage.put_stream([b"kept"], "kept.txt", "text/plain", max_bytes=10, expires_at=now + 3600)
    forever, _ = storage.put_stream([b"forever"], "forever.txt", "text/plain", max_bytes=10)
    abandoned = storage.create_multipart("half.bin", "application/octet-stream")
    storage.put_part(abandoned.upload_id, 1, [b"half"], max_bytes=10)
    if not isinstance(storage, LocalStorage):  # S3 also carries the expiry on the object itself
        head = request.getfixturevalue("s3_server").client().head_object(Bucket=BUCKET, Key=short)
        assert abs(head["Expires"].timestamp() - (now + 60)) < 2

    assert storage.sweep_expired(now + 30) == 0
    assert storage.sweep_expired(now + 601) == 2  # the short-lived object and the upload
    assert not storage.exists(short) and storage.exists(long) and storage.exists(forever)
    with pytest.raises(UploadNotFound):
        storage.get_upload(abandoned.upload_id)
    leftovers = s3_objects(storage)
    assert f"upload:{abandoned.key}" not in leftovers and not any(abandoned.upload_id in n for n in leftovers)
    assert storage.sweep_expired(now + 4000) == 1
    assert storage.exists(forever)


def test_own_urls_are_recognised(storage: Storage) -> None:
    key, _ = storage.put_stream([b"input"], "ref.mp4", "video/mp4", max_bytes=10)
    assert storage.key_from_url(storage.url(key, BASE)) == key
    # Local file URLs are handed out under whichever host the client used, CDN paths included.
    for url in (f"https://v3.fal.media/files/{key}", f"http://10.0.0.5:8000/cdn/files/{key}"):
        assert storage.key_from_url(url) == key
    folder, name = key.split("/")
    unknown = f"{'0' * 32}/{name}"
    for url in (
        f"https://elsewhere.example/files/{unknown}",  # our shape, but not stored here
        f"https://example.com/{name}",
        f"file:///files/{key}",
        "not a url at all",
        f"https://example.com/files/{folder}/..%2f{name}",
    ):
        assert storage.key_from_url(url) is None, url


def test_the_factory_picks_the_backend(tmp_path: Path, redis_connection: redis.Redis) -> None:
    assert isinstance(make_storage(Settings(data_dir=tmp_path), redis_connection), LocalStorage)
    assert "s3" in type(make_storage(Settings(storage="s3", s3_bucket="b"), redis_connection)).__module__
