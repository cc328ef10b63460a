"""A real S3 protocol endpoint for tests and benchmarks: moto's standalone server on a free
loopback port, in its own process, with one bucket."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import boto3
import httpx

from openreel.redis_server import free_port

BUCKET = "openreel-test"
CREDENTIALS = {"OPENREEL_S3_ACCESS_KEY_ID": "test-key", "OPENREEL_S3_SECRET_ACCESS_KEY": "test-secret"}


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    endpoint_url: str

    @classmethod
    def start(cls, timeout_s: float = 30) -> S3Server:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(process, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(f"{server.endpoint_url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        server.client().create_bucket(Bucket=BUCKET)
        return server

    def env(self) -> dict[str, str]:
        """The settings that point openreel at this server."""
        return {
            "OPENREEL_STORAGE": "s3",
            "OPENREEL_S3_ENDPOINT_URL": self.endpoint_url,
            "OPENREEL_S3_BUCKET": BUCKET,
            **CREDENTIALS,
        }

    def client(self):  # noqa: ANN201 - boto3 clients have no importable type
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["OPENREEL_S3_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["OPENREEL_S3_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
