"""Where outputs and uploads live, and the URLs they are served at.

One interface (``Storage``), two backends: a local directory served by the API at ``/files/``,
and an S3-compatible bucket. Keys are ``<uuid hex>/<safe file name>``, so URLs cannot be guessed.
"""

from __future__ import annotations

import redis

from openreel.settings import Settings
from openreel.storage.base import Storage, StorageError, TooLarge, Upload, UploadNotFound, new_key, safe_file_name
from openreel.storage.local import LocalStorage

__all__ = [
    "LocalStorage",
    "Storage",
    "StorageError",
    "TooLarge",
    "Upload",
    "UploadNotFound",
    "make_storage",
    "new_key",
    "safe_file_name",
]


def make_storage(settings: Settings, connection: redis.Redis) -> Storage:
    if settings.storage == "s3":
        from openreel.storage.s3 import S3Storage  # boto3 loads only where S3 is used

        return S3Storage(settings, connection)
    return LocalStorage(settings.files_dir, connection, settings.upload_url_expiry_s)
