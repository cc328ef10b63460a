"""Logging for every openreel process: one handler on the root logger, the request id on each line.

A line logged while a request is handled (an API call, a worker job, a webhook try) carries
that request's id, so one ``grep``, or one query in a log store, follows a request across the
API, the worker that ran it and the io-worker that delivered its webhook. Lines are JSON
objects when stderr is not a terminal (containers, log shippers) and plain text on a terminal;
``OPENREEL_LOG_FORMAT`` overrides the guess.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["auto", "json", "text"]

# What the current thread or task works for: a mapping whose "request_id" may be filled in late.
_request: ContextVar[Mapping[str, Any] | None] = ContextVar("openreel_request", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


def current_request_id() -> str | None:
    request = _request.get()
    return request.get("request_id") if request is not None else None


@contextmanager
def request_scope(state: Mapping[str, Any]) -> Iterator[None]:
    """Tag lines with ``state["request_id"]`` as it is when each line is logged. The API enters
    this per HTTP call with the call's state, into which a route writes the id once it knows it
    (a submit only after it made one)."""
    token = _request.set(state)
    try:
        yield
    finally:
        _request.reset(token)


def request_context(request_id: str) -> AbstractContextManager[None]:
    """Tag every line logged in this thread or task with ``request_id`` until the block ends."""
    return request_scope({"request_id": request_id})


class RequestIdFilter(logging.Filter):
    """Puts the current request id on each record; sits on the handler, so it also sees the
    records of third-party loggers (RQ, uvicorn) that propagate to the root."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``process`` names the openreel command that wrote it."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "process": self.process,
            "pid": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each line rather than at setup: a caller that swaps
    it (pytest's capture around an in-process ``openreel`` call) must not leave the handler
    writing into a closed stream."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def use_json(log_format: LogFormat) -> bool:
    if log_format == "auto":
        return not sys.stderr.isatty()
    return log_format == "json"


def configure(log_format: LogFormat, level: str, process: str) -> None:
    """Replace the root logger's handlers with one stderr handler in the chosen format."""
    handler = StderrHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter(process) if use_json(log_format) else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # library warnings too, in the same format, not raw on stderr
    # httpx logs every webhook try and download at INFO, next to openreel's own line about it.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
