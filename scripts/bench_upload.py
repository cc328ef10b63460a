"""Upload throughput through the API, for the local and the S3 backend (moto's S3 server).

For each backend, a file (default 200 MiB of random bytes) is uploaded R times in each way the
fal clients upload:
  single     POST /rest/storage/upload/initiate, then one streamed PUT to the presigned URL
             (JS storage.upload up to 90 MiB, Python repository="fal");
  multipart  POST /rest/storage/upload/initiate-multipart, 10 MiB part PUTs, then complete
             (JS over 90 MiB sends parts one at a time; Python's CDN multipart sends 10 at a time,
             both are measured).
Timed from the first request to the last answer, so the object is fully in storage; MiB/s is the
median over the runs. For reference, the same file is also put straight into moto with boto3.

    python scripts/bench_upload.py [--mib 200] [--runs 3]

Starts its own servers (`openreel up` with no GPU worker, moto) on free loopback ports, using
the test harness; plain HTTP, so TLS costs are not included.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.s3server import BUCKET, S3Server  # noqa: E402
from tests.stack import Stack  # noqa: E402

PART = 10 * 1024 * 1024
MiB = 1024 * 1024


def random_file(path: Path, mib: int) -> None:
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MiB))


def single(client: httpx.Client, path: Path) -> None:
    upload_url = client.post("/rest/storage/upload/initiate", json={"file_name": path.name}).json()["upload_url"]
    with path.open("rb") as body:
        client.put(upload_url, content=body).raise_for_status()


def multipart(client: httpx.Client, path: Path, parallel: int) -> None:
    upload_url = client.post("/rest/storage/upload/initiate-multipart", json={"file_name": path.name}).json()[
        "upload_url"
    ]
    parts = urlsplit(upload_url)
    base, query = f"{parts.scheme}://{parts.netloc}{parts.path}", parts.query
    count = -(-path.stat().st_size // PART)

    def send(number: int) -> dict[str, object]:
        with path.open("rb") as source:
            source.seek((number - 1) * PART)
            answer = client.put(f"{base}/{number}?{query}", content=source.read(PART))
        answer.raise_for_status()
        return answer.json()

    with ThreadPoolExecutor(parallel) as pool:
        sent = list(pool.map(send, range(1, count + 1)))
    client.post(f"{base}/complete?{query}", json={"parts": sent}).raise_for_status()


def rate(mib: int, runs: int, upload) -> float:  # noqa: ANN001 - any of the upload functions above
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        upload()
        seconds.append(time.perf_counter() - started)
    return mib / statistics.median(seconds)


def bench_backend(name: str, stack: Stack, path: Path, mib: int, runs: int) -> dict[str, float]:
    stack.start(wait_ready=False)
    try:
        with httpx.Client(base_url=stack.base_url, timeout=600) as client:
            return {
                f"{name} single": rate(mib, runs, lambda: single(client, path)),
                f"{name} multipart x1": rate(mib, runs, lambda: multipart(client, path, 1)),
                f"{name} multipart x10": rate(mib, runs, lambda: multipart(client, path, 10)),
            }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        root = Path(tmp)
        path = root / "upload.bin"
        random_file(path, args.mib)
        s3 = S3Server.start()
        try:
            results = bench_backend("local", Stack(root / "local", root / "models", workers=0), path, args.mib, args.runs)
            s3_stack = Stack(root / "s3", root / "models", workers=0, env=s3.env())
            results |= bench_backend("s3", s3_stack, path, args.mib, args.runs)
            direct = s3.client()
            results["boto3 straight to moto (reference)"] = rate(
                args.mib, args.runs, lambda: direct.upload_file(str(path), BUCKET, "reference.bin")
            )
        finally:
            s3.stop()
    print(f"{args.mib} MiB file, median of {args.runs} runs; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    for label, mib_s in results.items():
        print(f"  {label:40s} {mib_s:8.1f} MiB/s")


if __name__ == "__main__":
    main()
