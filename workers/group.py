"""A worker group: the processes torchrun starts over N GPUs of one host, serving one request at a
time with the transformer's token sequence split across them (diffusers' context parallelism,
Ulysses attention).

Rank 0 is an ordinary worker: it takes requests from the queue, records progress and outcome
and writes the output. The other ranks (followers) never touch Redis or storage; each request
reaches them as an ``Order`` from rank 0, and they run the same runner code on the same inputs
so that every rank enters the same collectives in the same order.

A rank that left a request early while the others went on into attention would hang them, so
whatever can end a request early is decided by rank 0 and shared:
- the inputs rank 0 fetched travel to the followers, and so does a failure to fetch them;
- cancellation is agreed at the end of each denoising step, the only checkpoint every rank
  passes alike (the per-stage checks of a single worker are off in a group);
- a request closes with a handshake: a rank that does not arrive within
  ``OPENREEL_GROUP_TIMEOUT_S`` means the group is broken, and rank 0 exits so that torchrun
  restarts all of it (``--max-restarts``).

Three process groups: the default one (NCCL on GPUs, gloo on CPU) carries diffusers'
attention collectives; ``orders`` (gloo, no practical timeout) is where followers wait between
requests; ``lockstep`` (gloo, the group timeout) carries everything inside a request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from unittest import mock

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig
from PIL import Image

from openreel.settings import Settings
from workers.decoding import Video
from workers.inputs import InputResolver, Loc

log = logging.getLogger("openreel.group")

# Followers wait for the next request for as long as the queue stays empty.
ORDER_WAIT = timedelta(days=365)


@dataclass(frozen=True)
class Order:
    """One request, as rank 0 validated it (with its seed drawn, so every rank samples alike)."""

    request_id: str
    endpoint_id: str
    payload: dict[str, Any]


class Splittable(Protocol):
    """A runner whose family can run in a group (``registry.CONTEXT_PARALLEL_FAMILIES``)."""

    def split_sequence(self, config: ContextParallelConfig) -> None: ...


class GroupBroken(RuntimeError):
    """A rank did not close a request with the others: the group must be restarted whole."""


class LeaderFailed(Exception):
    """Raised on a follower where rank 0 failed to provide an input: every rank leaves the request."""


class Group:
    def __init__(self, settings: Settings) -> None:
        self.rank = int(os.environ["RANK"])
        self.size = int(os.environ["WORLD_SIZE"])
        cuda = settings.device != "cpu" and torch.cuda.is_available()
        if cuda:
            # "cuda" and "auto" then name this rank's GPU for the loading code and the residency.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", self.rank)))
        self.backend = "nccl" if cuda else "gloo"
        timeout = timedelta(seconds=settings.group_timeout_s)
        dist.init_process_group(
            self.backend, store=self._store(timeout), rank=self.rank, world_size=self.size, timeout=timeout
        )
        self._orders = dist.new_group(backend="gloo", timeout=ORDER_WAIT)
        self._lockstep = dist.new_group(backend="gloo", timeout=timeout)
        self._open: Order | None = None
        log.info("rank %d of %d joined the group (%s)", self.rank, self.size, self.backend)

    def _store(self, timeout: timedelta) -> dist.Store:
        """The rendezvous store under a prefix of this restart. torchrun keeps one store across
        ``--max-restarts``, and without the prefix a restarted group reads its dead ranks'
        addresses and never connects (seen with gloo on torch 2.13)."""
        agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            self.size,
            is_master=self.leader and not agent_hosts_it,
            timeout=timeout,
        )
        return dist.PrefixStore(f"openreel/restart_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def _context_parallel(self) -> ContextParallelConfig:
        """Ulysses attention over every rank. On NCCL any sequence length and head count is
        split (``ulysses_anything``); gloo cannot gather unequal pieces, so a CPU group needs
        both to divide by its size."""
        return ContextParallelConfig(ulysses_degree=self.size, ulysses_anything=self.backend == "nccl")

    def split(self, runner: Splittable) -> None:
        """Split ``runner``'s transformer across the ranks; every rank must do it, in the same order."""
        with self._device_count_for_cpu():
            runner.split_sequence(self._context_parallel())

    @contextmanager
    def _device_count_for_cpu(self) -> Iterator[None]:
        """diffusers places rank r on accelerator ``r % device_count``, which divides by zero on a
        CPU-only torch; a CPU rank's one device is the CPU itself."""
        if self.backend == "gloo" and torch.accelerator.device_count() == 0:
            with mock.patch.object(torch.accelerator, "device_count", lambda: 1):
                yield
        else:
            yield

    # --- between requests ------------------------------------------------------------------
    def announce(self, order: Order | None) -> None:
        """Rank 0: the next request for every follower, or ``None``: the group is stopping."""
        self._broadcast(order, self._orders)
        self._open = order

    def next_order(self) -> Order | None:
        """A follower: wait for rank 0's next request; ``None`` when the group stops."""
        order = self._broadcast(None, self._orders)
        self._open = order
        return order

    # --- inside a request --------------------------------------------------------------------
    def share(self, value: Any = None) -> Any:
        """Rank 0's ``value`` on every rank."""
        return self._broadcast(value, self._lockstep)

    def agree_cancel(self, wanted: bool) -> bool:
        """Rank 0's decision whether to stop the request here, on every rank."""
        flag = torch.tensor([1 if wanted else 0], dtype=torch.int32)
        dist.broadcast(flag, src=0, group=self._lockstep)
        return bool(flag.item())

    def close_request(self, outcome: str) -> list[str]:
        """Every rank's outcome of the open request, once all have finished it; a no-op when no
        request was announced (rank 0 refused it before the followers heard of it).

        Raises ``GroupBroken`` when a rank does not arrive within the group timeout."""
        order, self._open = self._open, None
        if order is None:
            return [outcome]
        outcomes: list[Any] = [None] * self.size
        try:
            dist.all_gather_object(outcomes, outcome, group=self._lockstep)
        except RuntimeError as error:  # gloo's timeout, or a rank's process gone
            raise GroupBroken(f"request {order.request_id}: the group did not finish it together ({error})") from error
        if outcomes[0] == "ok" and set(outcomes) != {"ok"}:
            log.warning("request %s succeeded on rank 0 but not on every rank: %s", order.request_id, outcomes)
        return outcomes

    def leave(self) -> None:
        dist.destroy_process_group()

    @staticmethod
    def _broadcast(value: Any, group: dist.ProcessGroup) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0, group=group)
        return box[0]


class SharedInputs:
    """A request's input files as rank 0 resolved them, on every rank: one download, the same
    frames everywhere, and a failure shared too, so every rank leaves the request at the same
    point. Rank 0 passes its ``InputResolver``; followers pass ``None``. The files a group reads
    by path (``file``) are on rank 0's disk: a group runs on one host."""

    def __init__(self, group: Group, resolver: InputResolver | None) -> None:
        self.group, self.resolver = group, resolver

    def file(self, url: str, loc: Loc) -> Any:
        return self._shared("file", url, loc)

    def video(self, url: str, loc: Loc) -> Video:
        return self._shared("video", url, loc)

    def image(self, url: str, loc: Loc) -> Image.Image:
        return self._shared("image", url, loc)

    def _shared(self, kind: str, url: str, loc: Loc) -> Any:
        if self.resolver is None:
            failure, value = self.group.share()
            if failure is not None:
                raise LeaderFailed(f"rank 0 could not read {list(loc)}: {failure}")
            return value
        try:
            value = getattr(self.resolver, kind)(url, loc)
        except Exception as error:
            self.group.share((f"{type(error).__name__}: {error}", None))
            raise
        self.group.share((None, value))
        return value

