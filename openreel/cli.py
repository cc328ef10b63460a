"""``openreel``: start the stack or its parts, watch and steer a running one, manage API keys,
fetch or build weights.

Every flag overrides the ``OPENREEL_*`` variable of the same name (see openreel.settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from openreel import logging_setup
from openreel.child_process import die_with_parent
from openreel.gpus import VISIBLE_DEVICES, launched_as_group, visible_gpus, worker_devices
from openreel.redis_server import EmbeddedRedis, running_url
from openreel.settings import Settings, child_env, load_settings
from pipelines.bench import add_arguments as add_bench_arguments
from pipelines.bench import run as run_bench

if TYPE_CHECKING:
    import redis

log = logging.getLogger("openreel")

WORKER_RESTART_DELAY_S = 2.0


class StartupError(Exception):
    """A refusal to start, with the reason the user needs."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", choices=["tiny", "full"], help="weight preset (OPENREEL_MODELS)")
    parser.add_argument("--data-dir", type=Path, help="data directory (OPENREEL_DATA_DIR)")
    parser.add_argument("--redis-url", help="shared Redis (OPENREEL_REDIS_URL)")


def _add_api(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (OPENREEL_HOST)")
    parser.add_argument("--port", type=int, help="bind port (OPENREEL_PORT)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate for HTTPS (OPENREEL_TLS_CERT)")
    parser.add_argument("--tls-key", type=Path, help="PEM key for HTTPS (OPENREEL_TLS_KEY)")


def _add_endpoints(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoints", type=lambda text: text.split(","), help="endpoint ids or families (OPENREEL_ENDPOINTS)"
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON, for scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openreel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="API + workers + embedded Redis + local storage, in the foreground")
    _add_common(up)
    _add_api(up)
    _add_endpoints(up)
    up.add_argument("--workers", type=int, help="worker processes (OPENREEL_WORKERS)")
    up.add_argument("--gpus", help="one worker per GPU: 'all' or indexes such as 0,1 (OPENREEL_GPUS)")

    api = commands.add_parser("api", help="the HTTP API alone, against a shared Redis")
    _add_common(api)
    _add_api(api)
    _add_endpoints(api)

    worker = commands.add_parser("worker", help="one worker, against a shared Redis")
    _add_common(worker)
    _add_endpoints(worker)

    io_worker = commands.add_parser("io-worker", help="webhook delivery and storage sweeps, against a shared Redis")
    _add_common(io_worker)

    status = commands.add_parser("status", help="queues, workers and recent failures of a running deployment")
    _add_common(status)
    _add_json(status)

    requests = commands.add_parser("requests", help="look at or cancel one request")
    request_commands = requests.add_subparsers(dest="requests_command", required=True)
    show = request_commands.add_parser("show", help="status, endpoint, timings, error and the last log lines")
    show.add_argument("--logs", type=int, default=20, help="log lines shown, the last ones (default 20)")
    _add_json(show)
    cancel = request_commands.add_parser("cancel", help="cancel a queued or running request")
    for request_command in (show, cancel):
        request_command.add_argument("request_id")
        _add_common(request_command)

    keys = commands.add_parser("keys", help="API keys kept (hashed) in Redis")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", default="default", help="a label for the key")
    listing = key_commands.add_parser("list", help="ids, names and creation times of stored keys (never the keys)")
    _add_json(listing)
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key", help="the key, or its id as 'keys list' shows it")
    for key_command in (create, listing, revoke):
        _add_common(key_command)

    tiny = commands.add_parser("make-tiny-models", help="generate the tiny random-weight repos offline")
    tiny.add_argument("directory", type=Path)

    fetch = commands.add_parser(
        "fetch-weights", help="download the full preset's weights into the Hugging Face cache (needs internet)"
    )
    _add_endpoints(fetch)

    bench = commands.add_parser(
        "bench", help="time stock diffusers against openreel's runner, stage by stage (docs/performance.md)"
    )
    add_bench_arguments(bench)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    fields = set(Settings.model_fields)
    return load_settings(**{k: v for k, v in vars(args).items() if k in fields})


def shared_redis_url(settings: Settings) -> str:
    """The configured Redis, else the embedded one an 'openreel up' on this data dir runs."""
    url = settings.redis_url or running_url(settings.redis_dir)
    if url is None:
        raise StartupError(
            "no Redis: set OPENREEL_REDIS_URL (or --redis-url), or run 'openreel up' on this data dir first"
        )
    return url


def check_exposure(settings: Settings, redis_url: str) -> None:
    """Refuse to serve a non-loopback address with no API key: anyone could spend the GPUs."""
    import redis

    from openreel import api_keys

    if settings.binds_loopback_only() or settings.api_keys:
        return
    if api_keys.stored_key_count(redis.Redis.from_url(redis_url)) == 0:
        raise StartupError(
            f"refusing to bind {settings.host} without API keys: set OPENREEL_API_KEYS or run "
            "'openreel keys create', or bind 127.0.0.1"
        )


def serve_api(settings: Settings, redis_url: str) -> None:
    import uvicorn

    from server.app import create_app

    check_exposure(settings, redis_url)
    if not settings.api_keys and settings.binds_loopback_only():
        log.warning("no API keys configured: serving loopback (%s) only, without authentication", settings.host)
    scheme = "https" if settings.tls_cert else "http"
    log.info("API on %s://%s:%s", scheme, settings.host, settings.port)
    uvicorn.run(
        create_app(settings, redis_url),
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through openreel's handler, in its format
        timeout_graceful_shutdown=5,
    )


class WorkerSupervisor:
    """Keeps one worker per entry of ``devices`` and one io-worker running; one that dies is
    replaced (its job is re-queued by RQ). A worker with a device sees only that GPU
    (``CUDA_VISIBLE_DEVICES``), and so does its replacement."""

    def __init__(self, settings: Settings, devices: list[str | None]) -> None:
        env = child_env(settings)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.commands: list[tuple[str, dict[str, str]]] = [("io-worker", env)] + [
            ("worker", env if device is None else env | {VISIBLE_DEVICES: device}) for device in devices
        ]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        command, env = self.commands[index]
        return subprocess.Popen([sys.executable, "-m", "openreel.cli", command], env=env, preexec_fn=die_with_parent)

    def start(self) -> None:
        self.processes = [self._spawn(index) for index in range(len(self.commands))]
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(WORKER_RESTART_DELAY_S):
            for index, process in enumerate(self.processes):
                if process.poll() is not None and not self.stopping.is_set():
                    command, code = self.commands[index][0], process.returncode
                    log.warning("%s pid %s exited with %s; starting a replacement", command, process.pid, code)
                    self.processes[index] = self._spawn(index)

    def stop(self, grace_s: float = 10.0) -> None:
        self.stopping.set()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # RQ: warm shutdown (finish the step, then exit)
        deadline = time.monotonic() + grace_s
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_up(settings: Settings) -> None:
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.redis_dir)
        redis_url = embedded.start()
        log.info("embedded Redis at %s (data in %s)", redis_url, settings.redis_dir)
    if settings.models == "tiny":
        log.warning("'tiny' preset: random weights, outputs are noise; use --models full on a GPU host")
    devices = worker_devices(settings.gpus, settings.workers, visible_gpus() if settings.gpus == "all" else [])
    if settings.gpus is not None:
        log.info("workers on GPUs: %s", ", ".join(device or "none (no GPU found)" for device in devices))
    supervisor = WorkerSupervisor(settings.model_copy(update={"redis_url": redis_url}), devices)
    try:
        check_exposure(settings, redis_url)
        supervisor.start()
        serve_api(settings, redis_url)
    finally:
        supervisor.stop()
        if embedded is not None:
            embedded.stop()


def run_keys(args: argparse.Namespace, settings: Settings) -> None:
    import redis

    from openreel import api_keys

    embedded = None
    url = settings.redis_url or running_url(settings.redis_dir)
    if url is None:  # no stack running: open the data dir's Redis just for this change
        embedded = EmbeddedRedis(settings.redis_dir)
        url = embedded.start()
    try:
        connection = redis.Redis.from_url(url)
        if args.keys_command == "create":
            print(api_keys.create_key(connection, args.name))
        elif args.keys_command == "list":
            from openreel.operator_cli import render_keys

            keys = api_keys.list_keys(connection)
            print(json.dumps(keys, indent=2) if args.json else render_keys(keys))
        elif not api_keys.revoke_key(connection, args.key):
            raise StartupError("no such key")
    finally:
        if embedded is not None:
            embedded.stop()


def deployment_redis(settings: Settings) -> redis.Redis:
    """The running deployment's Redis, for the commands that inspect or steer it."""
    import redis

    connection = redis.Redis.from_url(shared_redis_url(settings), socket_connect_timeout=5)
    try:
        connection.ping()
    except redis.RedisError as error:
        raise StartupError(f"cannot reach Redis: {error}") from None
    return connection


def run_status(args: argparse.Namespace, settings: Settings) -> None:
    from openreel import operator_cli
    from openreel.records import RecordStore
    from pipelines.registry import select

    connection = deployment_redis(settings)
    families = sorted({endpoint.family for endpoint in select(settings.endpoints)})
    report = operator_cli.status_report(connection, RecordStore(connection, settings.retention_s), families)
    print(json.dumps(report, indent=2) if args.json else operator_cli.render_status(report, time.time()))


def run_requests(args: argparse.Namespace, settings: Settings) -> None:
    from openreel import operator_cli
    from openreel.records import RecordStore
    from openreel.webhooks import WebhookQueue

    connection = deployment_redis(settings)
    # A cancel completes a queued request, and completing sends its webhook.
    store = RecordStore(connection, settings.retention_s, WebhookQueue(connection, settings))
    record = store.get(args.request_id)
    if record is None:
        raise StartupError(f"no request {args.request_id} (unknown, or past its retention)")
    if args.requests_command == "show":
        report = operator_cli.request_report(store, record, args.logs)
        print(json.dumps(report, indent=2) if args.json else operator_cli.render_request(report))
        return
    cancelled, message = operator_cli.cancel_request(connection, store, record)
    if not cancelled:
        raise StartupError(message)
    print(message)


def refuse_unsafe_group(settings: Settings) -> None:
    """A worker group splits every request across its ranks' GPUs: refuse, before any weights
    load, endpoints it cannot split and a device that would put every rank on one GPU."""
    from pipelines.registry import check_context_parallel, select

    if settings.device.startswith("cuda:"):
        raise StartupError(
            f"OPENREEL_DEVICE={settings.device} would put every rank of the worker group on one GPU; "
            "leave it at auto (or cuda): each rank takes the GPU of its LOCAL_RANK"
        )
    try:
        check_context_parallel([endpoint.id for endpoint in select(settings.endpoints)])
    except ValueError as error:
        raise StartupError(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        logging_setup.configure(settings.log_format, settings.log_level, args.command)
        if args.command == "make-tiny-models":
            from models.presets import make_all_tiny

            make_all_tiny(args.directory)
        elif args.command == "fetch-weights":
            from models.fetch import fetch_weights
            from pipelines.registry import select

            try:
                fetch_weights(select(settings.endpoints), settings=settings)
            except Exception as error:  # noqa: BLE001 - hub and network errors end the command with their reason
                raise StartupError(f"fetch-weights failed: {error}") from error
        elif args.command == "up":
            run_up(settings)
        elif args.command == "api":
            serve_api(settings, shared_redis_url(settings))
        elif args.command == "worker":
            if launched_as_group():
                refuse_unsafe_group(settings)
            from workers.worker import run_worker

            run_worker(settings, shared_redis_url(settings))
        elif args.command == "io-worker":
            from openreel.io_worker import run_io_worker

            run_io_worker(settings, shared_redis_url(settings))
        elif args.command == "keys":
            run_keys(args, settings)
        elif args.command == "status":
            run_status(args, settings)
        elif args.command == "requests":
            run_requests(args, settings)
        elif args.command == "bench":
            run_bench(args)
    except (StartupError, ValidationError) as error:
        sys.exit(f"openreel: {error}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
