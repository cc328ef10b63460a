"""Load on one API process, as scripts/bench_load.py applies it (a smaller run): many clients
submitting and polling every 100 ms get no errors, and each finished request's Redis cost is
measured. The full 1,000-submission run is the ``slow`` variant."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


def bench_load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "scripts" / "bench_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("load"), models_dir, workers=0).start(wait_ready=False)
    yield stack
    stack.stop()


def load(api: Stack, submissions: int, concurrency: int, polls: int) -> dict[str, float]:
    bench = bench_load()
    result = asyncio.run(bench.run_load(api.base_url, api.redis_url, submissions, concurrency, cancel_after=polls))
    figures = result.figures()
    print(bench._fmt(figures))
    assert result.errors == []
    assert figures["completed"] == submissions
    assert figures["status_calls"] >= submissions * polls
    for name in ("submit_p99_ms", "status_p99_ms"):
        assert math.isfinite(figures[name]) and figures[name] > 0
    # A finished request's record, logs and job hash: kilobytes, not the megabytes of a leak.
    assert 0 < figures["redis_kib_per_request"] < 64
    return figures


def test_many_polling_clients_get_no_errors(api: Stack) -> None:
    load(api, submissions=150, concurrency=25, polls=5)


@pytest.mark.slow
def test_a_thousand_submissions_from_fifty_clients(api: Stack) -> None:
    load(api, submissions=1000, concurrency=50, polls=20)
