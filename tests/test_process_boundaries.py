"""What each process refuses or keeps out: torch stays out of the API; unsafe settings stop startup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from openreel.cli import check_exposure
from openreel.redis_server import EmbeddedRedis
from openreel.settings import Settings
from tests.stack import Stack, wait_until


def test_the_api_never_imports_torch() -> None:
    code = "import sys, server.app, openreel.cli; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]


def openreel(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENREEL_")}
    return subprocess.run(
        [sys.executable, "-m", "openreel.cli", *args],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_exposed_address_without_keys_is_refused(tmp_path: Path) -> None:
    result = openreel("up", "--host", "0.0.0.0", "--workers", "0", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "refusing to bind 0.0.0.0 without API keys" in result.stderr
    assert not (tmp_path / "redis" / "redis.port").exists()  # the embedded Redis was stopped again


def test_half_a_tls_pair_is_refused(tmp_path: Path) -> None:
    result = openreel("api", "--tls-cert", str(tmp_path / "cert.pem"), "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode != 0 and "tls_cert and tls_key must be given together" in result.stderr
    with pytest.raises(ValidationError):
        Settings(heartbeat_s=10, heartbeat_ttl_s=5)


def test_every_setting_has_a_documented_env_variable() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"OPENREEL_{name.upper()} needs a description with unit and default"
    env = Settings(api_keys=["a", "b"], endpoints=["cogvideox"]).as_env()
    assert Settings.model_validate({k.removeprefix("OPENREEL_").lower(): v for k, v in env.items()}).api_keys == [
        "a",
        "b",
    ]


def test_keys_created_on_the_command_line_open_an_exposed_api(tmp_path: Path) -> None:
    created = openreel("keys", "create", "--name", "ci", "--data-dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert len(key.split(":")) == 2
    # The key is stored as a hash only.
    aof = b"".join(p.read_bytes() for p in (tmp_path / "redis").rglob("*") if p.is_file())
    assert key.encode() not in aof and key.split(":")[1].encode() not in aof
    embedded = EmbeddedRedis(tmp_path / "redis")
    try:
        check_exposure(Settings(host="0.0.0.0", data_dir=tmp_path), embedded.start())
    finally:
        embedded.stop()


def test_ctrl_c_stops_the_whole_stack(tmp_path: Path, models_dir: Path) -> None:
    stack = Stack(tmp_path, models_dir, workers=1).start()
    children = subprocess.run(
        ["pgrep", "-P", str(stack.process.pid)], capture_output=True, text=True  # type: ignore[union-attr]
    ).stdout.split()
    assert len(children) >= 2  # redis-server and the worker
    stack.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
    stack.process.wait(60)  # type: ignore[union-attr]

    def gone(pid: str) -> bool:
        return not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]

    wait_until(lambda: all(gone(pid) for pid in children), timeout_s=30)


def test_the_settings_reference_is_generated_from_the_code() -> None:
    script = Path(__file__).parents[1] / "scripts" / "gen_settings_doc.py"
    assert subprocess.run([sys.executable, str(script), "--check"]).returncode == 0, "run scripts/gen_settings_doc.py"
