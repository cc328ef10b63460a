"""What ``openreel status``, ``openreel requests ...`` and ``openreel keys list`` print.

Each command reads or changes Redis directly, so it works from any host that reaches the
deployment's Redis, with or without an API process. Every report is a plain dict first:
``--json`` prints it as it is, otherwise it is laid out for a terminal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis
from rq import Queue

from openreel import queues, worker_registry
from openreel.records import RecordStore, RequestRecord
from openreel.webhooks import WEBHOOK_QUEUE

RECENT_FAILURES_SHOWN = 10


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return [f"{indent}(none)"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _gib(value: int) -> str:
    return f"{value / 1024**3:.1f}"


# --- status --------------------------------------------------------------------------------
def status_report(connection: redis.Redis, store: RecordStore, families: list[str]) -> dict[str, Any]:
    names = {queues.queue_name(f, p) for f in families for p in queues.PRIORITIES} | {WEBHOOK_QUEUE}
    names |= {queue.name for queue in Queue.all(connection=connection)}
    return {
        "queues": {name: Queue(name, connection=connection).count for name in sorted(names)},
        "workers": worker_registry.live_workers(connection),
        "recent_failures": store.recent_failures(RECENT_FAILURES_SHOWN),
    }


def render_status(report: dict[str, Any], now: float) -> str:
    lines = ["queues"]
    lines += _table([[name, f"{depth} waiting"] for name, depth in report["queues"].items()])
    lines += ["", f"workers ({len(report['workers'])})"]
    rows = []
    for worker in report["workers"]:
        since = worker.get("state_since")
        state = worker.get("state", "?") + (f" {now - since:.0f} s" if since else "")
        doing = worker.get("request_id") or worker.get("error") or ", ".join(worker.get("endpoints", []))
        gpu = ""
        if "gpu_memory_total_bytes" in worker:
            gpu = f"GPU {_gib(worker['gpu_memory_bytes'])}/{_gib(worker['gpu_memory_total_bytes'])} GiB"
        name = worker.get("name", "?") + (f" ({worker['group']['ranks']} ranks)" if "group" in worker else "")
        rows.append([name, state, doing, gpu])
    lines += _table(rows)
    lines += ["", "recent failures"]
    lines += _table(
        [
            [_when(f.get("finished_at")), f["request_id"], f["endpoint"], f"{f['error_type']}: {f['message']}"]
            for f in report["recent_failures"]
        ]
    )
    return "\n".join(lines)


# --- requests ------------------------------------------------------------------------------
def request_report(store: RecordStore, record: RequestRecord, log_lines: int) -> dict[str, Any]:
    logs = store.logs(record.request_id)
    waited = ran = None
    if record.started_at is not None:
        waited = round(max(0.0, record.started_at - record.created_at), 3)
        if record.finished_at is not None:
            ran = round(record.finished_at - record.started_at, 3)
    return {
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "queue": queues.queue_name(record.family, record.priority),
        "status": record.status,
        "worker": record.worker,
        "attempts": record.attempts,
        "cancel_requested": record.cancel_requested,
        "submitted_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "queue_wait_s": waited,
        "run_s": ran,
        "stage_timings_s": (record.output or {}).get("timings"),
        "error": record.error.model_dump() if record.error else None,
        "log_count": len(logs),
        "logs": logs[-log_lines:] if log_lines > 0 else [],
    }


def render_request(report: dict[str, Any]) -> str:
    fields = [
        ("request", report["request_id"]),
        ("endpoint", f"{report['endpoint']} (queue {report['queue']})"),
        ("status", report["status"] + (" (cancel requested)" if report["cancel_requested"] else "")),
        ("worker", f"{report['worker'] or '-'} (attempt {report['attempts']})"),
        ("submitted", _when(report["submitted_at"])),
        ("started", _when(report["started_at"]) + _seconds(" after ", report["queue_wait_s"])),
        ("finished", _when(report["finished_at"]) + _seconds(", ran ", report["run_s"])),
    ]
    if report["stage_timings_s"]:
        stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in report["stage_timings_s"].items())
        fields.append(("stages", stages))
    if report["error"]:
        error = report["error"]
        fields.append(("error", f"{error['error_type']} (HTTP {error['status_code']}): {_detail(error['detail'])}"))
    lines = [f"{name:<10} {value}" for name, value in fields]
    lines += ["", f"logs (last {len(report['logs'])} of {report['log_count']})"]
    lines += [f"  {line['timestamp']} {line['level']:<5} {line['message']}" for line in report["logs"]]
    return "\n".join(lines)


def _detail(detail: Any) -> str:
    """fal's detail: a message, or validation entries shown as ``field: message``."""
    if isinstance(detail, str):
        return detail
    entries = []
    for item in detail:
        where = ".".join(str(part) for part in item.get("loc", []) if part != "body")
        entries.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    return "; ".join(entries)


def _seconds(prefix: str, value: float | None) -> str:
    return f"{prefix}{value:.2f} s" if value is not None else ""


CANCEL_MESSAGES = {
    "cancelled": "cancelled: it had not started",
    "requested": "cancellation requested: it stops at its next step",
    "completed": "already completed",
    "missing": "no such request",
}


def cancel_request(connection: redis.Redis, store: RecordStore, record: RequestRecord) -> tuple[bool, str]:
    """(whether it was cancelled or will stop, what to print)."""
    outcome = queues.cancel(connection, store, record)
    return outcome in ("cancelled", "requested"), CANCEL_MESSAGES[outcome]


# --- keys ----------------------------------------------------------------------------------
def render_keys(keys: list[dict[str, Any]]) -> str:
    rows = [[key["id"], _when(key.get("created_at")), key.get("name") or ""] for key in keys]
    return "\n".join(_table([["id", "created", "name"], *rows], indent=""))
