"""`openreel up --gpus`: one worker per GPU, each seeing only its own (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from openreel.gpus import visible_gpus, worker_devices
from openreel.settings import Settings
from openreel.worker_registry import live_workers
from tests.stack import Stack, wait_until


def test_all_means_one_worker_per_visible_gpu_and_the_workers_count_without_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    assert worker_devices("all", 1, visible_gpus()) == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CUDA's way of saying "no GPU"
    assert visible_gpus() == []
    assert worker_devices("all", 3, visible_gpus()) == [None, None, None]


def test_a_list_is_honoured_as_given_and_unset_keeps_the_workers_count() -> None:
    assert worker_devices("3,1", 1, ["0", "1"]) == ["3", "1"]
    assert worker_devices(None, 2, ["0", "1"]) == [None, None]


@pytest.mark.parametrize("value", ["gpu0", "0,,1", "-1", "0;1"])
def test_gpus_other_than_all_or_indexes_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="gpus must be"):
        Settings(gpus=value)
    assert Settings(gpus=" 1, 0").gpus == "1,0"
    assert Settings(gpus="").gpus is None


def environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


def test_up_starts_one_worker_per_listed_gpu_with_only_that_gpu_visible(make_stack: Any) -> None:
    env = {"OPENREEL_GPUS": "1,0", "OPENREEL_ENDPOINTS": "fal-ai/cogvideox-5b", "OPENREEL_WARMUP": "false"}
    stack: Stack = make_stack(workers=5, env=env).start()
    connection = redis.Redis.from_url(stack.redis_url)
    wait_until(lambda: len(live_workers(connection)) == 2, timeout_s=120)
    workers = live_workers(connection)
    assert sorted(worker["cuda_visible_devices"] for worker in workers) == ["0", "1"]
    for worker in workers:
        assert environ(worker["pid"])["CUDA_VISIBLE_DEVICES"] == worker["cuda_visible_devices"]
