"""Objects in an S3-compatible bucket (AWS, MinIO, ...), through boto3.

Streams are sent as S3 multipart uploads of ``PART_SIZE`` buffers, a few in flight while the
next is read, so memory stays bounded whatever the size and no temporary file is needed.
Client-side multipart parts map one to one onto S3 parts. Objects with an expiry also get S3's
``Expires`` metadata; the deletion itself is the sweep's (S3 treats ``Expires`` as a caching hint).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import boto3
import redis
from botocore.config import Config
from botocore.exceptions import ClientError

from openreel.settings import Settings
from openreel.storage.base import Storage, StorageError, Upload

PART_SIZE = 8 * 1024 * 1024  # above S3's 5 MiB minimum for every part but the last
# Parts sent while the next one is read from the client: memory stays at (this + 1) x PART_SIZE.
PARALLEL_PARTS = 4
SPOOL_MEMORY = 16 * 1024 * 1024  # a client part larger than this is spooled to disk


class S3Storage(Storage):
    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        super().__init__(connection, settings.upload_url_expiry_s)
        # Custom endpoints (MinIO, moto) rarely have per-bucket DNS names: address by path there.
        addressing = {"addressing_style": "path"} if settings.s3_endpoint_url else {}
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=Config(signature_version="s3v4", s3=addressing),
        )
        self.bucket = settings.s3_bucket
        self.public_base_url = settings.s3_public_base_url
        self.presign_expiry_s = settings.s3_presign_expiry_s
        self.scratch = settings.data_dir / "tmp"

    def url(self, key: str, base_url: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{quote(key)}"
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_expiry_s
        )

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                return False
            raise
        return True

    def _object_args(self, content_type: str, expires_at: float | None) -> dict[str, Any]:
        args: dict[str, Any] = {"ContentType": content_type}
        if expires_at is not None:
            args["Expires"] = datetime.fromtimestamp(expires_at, UTC)
        return args

    def _write_file(self, key: str, path: Path, content_type: str, expires_at: float | None) -> None:
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=self._object_args(content_type, expires_at))

    def _write_stream(self, key: str, chunks: Iterable[bytes], content_type: str, expires_at: float | None) -> None:
        args = self._object_args(content_type, expires_at)
        buffer = bytearray()
        upload_id: str | None = None
        parts: dict[int, Future[str]] = {}
        with ThreadPoolExecutor(PARALLEL_PARTS) as pool:

            def send(data: bytes) -> None:
                _throttle(list(parts.values()), PARALLEL_PARTS)
                number = len(parts) + 1
                parts[number] = pool.submit(self._send_part, key, upload_id, number, data)

            try:
                for chunk in chunks:
                    buffer += chunk
                    while len(buffer) >= PART_SIZE:
                        if upload_id is None:
                            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **args)[
                                "UploadId"
                            ]
                        send(bytes(buffer[:PART_SIZE]))
                        del buffer[:PART_SIZE]
                if upload_id is None:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(buffer), **args)
                    return
                if buffer:
                    send(bytes(buffer))
                listed = [{"PartNumber": number, "ETag": etag.result()} for number, etag in parts.items()]
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
                )
            except BaseException:
                if upload_id is not None:
                    for future in parts.values():
                        future.cancel()
                    wait(parts.values())
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                raise

    def _send_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        return answer["ETag"]

    def _remove(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def _begin_multipart(self, key: str, content_type: str, expires_at: float | None) -> str:
        answer = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, **self._object_args(content_type, expires_at)
        )
        return answer["UploadId"]

    def _write_part(self, upload: Upload, part_number: int, chunks: Iterable[bytes]) -> str:
        # S3 needs each part's length up front; a client's chunked body does not say it.
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=self.scratch) as spool:
            for chunk in chunks:
                spool.write(chunk)
            size = spool.tell()
            spool.seek(0)
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=upload.key,
                UploadId=upload.backend_id,
                PartNumber=part_number,
                Body=spool,
                ContentLength=size,
            )
        return answer["ETag"]

    def _join_parts(self, upload: Upload, parts: list[tuple[int, str]]) -> None:
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=upload.key,
                UploadId=upload.backend_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
            )
        except ClientError as error:
            if _code(error) == "EntityTooSmall":
                raise StorageError("Every part but the last must be at least 5 MiB") from None
            raise

    def _drop_parts(self, upload: Upload) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload.key, UploadId=upload.backend_id)
        except ClientError as error:
            if _code(error) != "NoSuchUpload":
                raise


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _throttle(futures: list[Future[str]], limit: int) -> None:
    """Wait until fewer than ``limit`` parts are in flight; a failed part raises here, at once."""
    while True:
        for future in futures:
            if future.done():
                future.result()
        running = [future for future in futures if not future.done()]
        if len(running) < limit:
            return
        wait(running, return_when=FIRST_COMPLETED)
