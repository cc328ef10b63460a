"""A worker group's ranks other than 0: run every request rank 0 announces, alongside it, and
leave the request's record and output to rank 0 (see workers/group.py).

A follower never touches Redis or storage. It runs the runner's own code on the inputs rank 0
shares, so it enters the same collectives in the same order, and stops where the output would
be written.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import torch

from openreel.settings import Settings
from workers.context import JobContext, Progress, RequestCancelled
from workers.group import Group, Order, SharedInputs
from workers.runtime import Runner, parse_request, release_memory

log = logging.getLogger("openreel.group")


class OutputLeftToLeader(Exception):
    """Raised where a follower's run reaches its output: rank 0 alone writes it."""


def hand_over(*args: Any, **kwargs: Any) -> Any:
    raise OutputLeftToLeader


def follow(group: Group, settings: Settings, runners: dict[str, Runner]) -> None:
    """Serve rank 0's orders until it announces the end. Stop signals are left to rank 0, which
    finishes the request in hand and then tells every follower to stop."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.SIG_IGN)
    log.info("rank %d following rank 0", group.rank)
    while (order := group.next_order()) is not None:
        group.close_request(run_order(group, settings, runners, order))
    log.info("rank %d: rank 0 stopped the group", group.rank)


def run_order(group: Group, settings: Settings, runners: dict[str, Runner], order: Order) -> str:
    """This rank's part of one request; the outcome is only compared with rank 0's."""
    progress = Progress(
        log=lambda line: log.debug("%s: %s", order.request_id, line),
        cancelled=lambda: group.agree_cancel(False),
        cancel_at_stages=False,
    )
    ctx = JobContext(order.request_id, progress, write_video=hand_over, inputs=SharedInputs(group, None))
    try:
        request = parse_request(order.endpoint_id, order.payload, settings)
        with torch.inference_mode():
            runners[order.endpoint_id].run(request, ctx)
    except OutputLeftToLeader:
        return "ok"
    except RequestCancelled:
        return "cancelled"
    except Exception as error:  # noqa: BLE001 - rank 0 records the request's outcome; the group goes on
        log.info("request %s ended on rank %d with %s: %s", order.request_id, group.rank, type(error).__name__, error)
        release_memory()
        return type(error).__name__
    return "ok"
