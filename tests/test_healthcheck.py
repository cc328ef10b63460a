"""The image's HEALTHCHECK (openreel.healthcheck): each role's check, against a real API app and
a real Redis, in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvicorn
from rq import Queue, Worker

from openreel import healthcheck, worker_registry
from openreel.redis_server import free_port
from openreel.settings import Settings
from openreel.webhooks import WEBHOOK_QUEUE
from server.app import create_app
from tests.stack import Certificate

HOST = "deploy-test-host"  # a container's host name; other hosts' workers must not count


def redis_url(connection: redis.Redis) -> str:
    return f"redis://127.0.0.1:{connection.connection_pool.connection_kwargs['port']}/0"


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["/opt/openreel/bin/python", "/opt/openreel/bin/openreel", "api"], "api"),
        (["python", "-m", "openreel.cli", "io-worker", "--redis-url", "redis://r"], "io-worker"),
        (["/sbin/docker-init", "--", "openreel", "worker", "--endpoints", "fal-ai/cogvideox-5b"], "worker"),
        (["torchrun", "--standalone", "--nproc-per-node=2", "--no-python", "openreel", "worker"], "worker"),
        (["openreel", "fetch-weights"], None),
        (["bash"], None),
    ],
)
def test_role_comes_from_the_container_command(argv: list[str], role: str | None) -> None:
    assert healthcheck.role_from_command(argv) == role


def test_the_main_process_command_is_read_from_proc(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cmdline").write_bytes(b"/opt/openreel/bin/python\0/opt/openreel/bin/openreel\0worker\0")
    assert healthcheck.main_process_command(tmp_path) == ["/opt/openreel/bin/python", "/opt/openreel/bin/openreel", "worker"]


def test_a_one_off_command_is_healthy_and_an_unknown_role_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cmdline").write_bytes(b"openreel\0fetch-weights\0")
    assert healthcheck.main([], proc=tmp_path) == 0
    assert "nothing to check" in capsys.readouterr().out
    assert healthcheck.main(["reticulate"]) == 1
    assert "unknown role" in capsys.readouterr().out


@pytest.fixture
def api(redis_connection: redis.Redis, tmp_path: Path, certificate: Certificate) -> Iterator[Settings]:
    """The real API app over HTTPS with keys, as in the container; yields the settings a
    container's health check would read (bound to every address)."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path, api_keys=["k"], port=port, tls_cert=certificate.cert, tls_key=certificate.key
    )
    config = uvicorn.Config(
        create_app(settings, redis_url(redis_connection)),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(certificate.cert),
        ssl_keyfile=str(certificate.key),
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield settings.model_copy(update={"host": "0.0.0.0"})
    server.should_exit = True
    thread.join(10)


def test_api_is_healthy_while_it_answers_without_a_key(api: Settings) -> None:
    message = healthcheck.check("api", api)
    assert message.endswith(f"https://127.0.0.1:{api.port}{healthcheck.LIVE_PATH}: HTTP 200")


def test_api_that_does_not_answer_is_unhealthy() -> None:
    settings = Settings(host="0.0.0.0", port=free_port())
    with pytest.raises(healthcheck.Unhealthy, match="ConnectError"):
        healthcheck.check("api", settings)


def test_worker_is_healthy_once_serving_on_this_host(redis_connection: redis.Redis) -> None:
    with pytest.raises(healthcheck.Unhealthy, match="no live worker of host"):
        healthcheck.check_worker(redis_connection, HOST)
    info = {"name": f"{HOST}.1", "host": HOST, "state": "loading", "endpoints": []}
    elsewhere = {"name": "other.1", "host": "other-host", "state": "ready", "endpoints": []}
    worker_registry.announce(redis_connection, elsewhere["name"], elsewhere, ttl_s=30)
    worker_registry.announce(redis_connection, info["name"], info, ttl_s=30)
    try:
        with pytest.raises(healthcheck.Unhealthy, match="is loading"):
            healthcheck.check_worker(redis_connection, HOST)
        for state in ("ready", "busy"):
            worker_registry.announce(redis_connection, info["name"], info | {"state": state}, ttl_s=30)
            assert healthcheck.check_worker(redis_connection, HOST) == f"worker {HOST}.1 is {state}"
    finally:
        worker_registry.withdraw(redis_connection, info["name"])
        worker_registry.withdraw(redis_connection, elsewhere["name"])


def test_io_worker_is_healthy_while_registered_on_the_webhooks_queue(redis_connection: redis.Redis) -> None:
    with pytest.raises(healthcheck.Unhealthy, match="no RQ worker of host"):
        healthcheck.check_io_worker(redis_connection, HOST)
    other_queue = Worker([Queue("elsewhere", connection=redis_connection)], connection=redis_connection)
    webhooks = Worker([Queue(WEBHOOK_QUEUE, connection=redis_connection)], connection=redis_connection)
    for worker in (other_queue, webhooks):
        worker.hostname = HOST
    other_queue.register_birth()
    try:
        with pytest.raises(healthcheck.Unhealthy):
            healthcheck.check_io_worker(redis_connection, HOST)
        webhooks.register_birth()
        assert healthcheck.check_io_worker(redis_connection, HOST).startswith(f"io-worker {webhooks.name} is ")
    finally:
        for worker in (other_queue, webhooks):
            worker.register_death()


def test_redis_down_makes_workers_unhealthy() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(healthcheck.Unhealthy, match="Redis"):
        healthcheck.check("worker", settings)
