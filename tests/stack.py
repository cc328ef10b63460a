"""Real openreel processes for tests: ``openreel up`` (API + embedded Redis + workers) and extra
workers, on 127.0.0.1 ports chosen at start, stopped when the test is done."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openreel.redis_server import free_port

# Short beats so a killed worker's job is re-queued within seconds, not the production 30 s;
# webhook retries 1, 1 and 2 s apart instead of spread over 2 hours.
FAST_WORKER_ENV = {
    "OPENREEL_HEARTBEAT_S": "0.5",
    "OPENREEL_HEARTBEAT_TTL_S": "3",
    "OPENREEL_MAINTENANCE_S": "1",
    "OPENREEL_POLL_INTERVAL_S": "0.05",
    "OPENREEL_WEBHOOK_MAX_ATTEMPTS": "4",
    "OPENREEL_WEBHOOK_RETRY_WINDOW_S": "3",
}


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for loopback and the fal host names (for Host-header routing)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    names = ["localhost", "fal.run", "queue.fal.run", "rest.fal.ai", "rest.alpha.fal.ai", "v3.fal.media"]
    alt_names = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificate(directory / "cert.pem", directory / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Stack:
    directory: Path
    models_dir: Path
    workers: int = 1
    tls: Certificate | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    extra_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        port = (self.directory / "data" / "redis" / "redis.port").read_text()
        return f"redis://127.0.0.1:{port}/0"

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENREEL_", "FAL_"))}
        env.update(FAST_WORKER_ENV)
        env.update(
            {
                "OPENREEL_DATA_DIR": str(self.directory / "data"),
                "OPENREEL_MODEL_CACHE_DIR": str(self.models_dir),
                "OPENREEL_MODELS": "tiny",
                "OPENREEL_PORT": str(self.port),
                "OPENREEL_WORKERS": str(self.workers),
                "HF_HUB_OFFLINE": "1",
            }
        )
        if self.tls:
            env.update({"OPENREEL_TLS_CERT": str(self.tls.cert), "OPENREEL_TLS_KEY": str(self.tls.key)})
        env.update(self.env)
        return env

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client needs to trust this stack's certificate."""
        return ssl.create_default_context(cafile=str(self.tls.cert)) if self.tls else True

    def client(self) -> httpx.Client:
        keys = self.env.get("OPENREEL_API_KEYS")
        headers = {"Authorization": f"Key {keys.split(',')[0]}"} if keys else {}
        return httpx.Client(base_url=self.base_url, verify=self.verify, timeout=30, headers=headers)

    def start(self, wait_ready: bool = True, timeout_s: float = 180) -> Stack:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = open(self.directory / "up.log", "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openreel.cli", "up"], env=self.child_env(), stdout=log, stderr=log
        )
        self.wait(ready=wait_ready, timeout_s=timeout_s)
        return self

    def wait(self, ready: bool = True, timeout_s: float = 180) -> None:
        """Until the API answers (and, with ``ready``, /health says every endpoint has a worker)."""
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"openreel up exited:\n{self.log_tail()}")
                try:
                    status = client.get("/health").status_code
                    if status == 200 or not ready:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"stack not ready after {timeout_s} s:\n{self.log_tail()}")

    def start_worker(self, ranks: int = 1, **torchrun_flags: str) -> subprocess.Popen[bytes]:
        """One worker; with ``ranks`` > 1 a worker group, started by torchrun as operators start it."""
        env = self.child_env() | {"OPENREEL_REDIS_URL": self.redis_url}
        command = [sys.executable, "-m", "openreel.cli", "worker"]
        if ranks > 1:
            flags = [f"--{name.replace('_', '-')}={value}" for name, value in torchrun_flags.items()]
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                       *flags, "-m", "openreel.cli", "worker"]
        log = open(self.directory / "worker.log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        self.extra_workers.append(process)
        return process

    def log_tail(self, chars: int = 4000) -> str:
        text = ""
        for name in ("up.log", "worker.log"):
            path = self.directory / name
            if path.exists():
                text += f"--- {name}\n{path.read_text(errors='replace')[-chars:]}"
        return text

    def stop(self) -> None:
        for process in [*self.extra_workers, self.process]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in [*self.extra_workers, self.process]:
            if process is None:
                continue
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 60, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval_s)
