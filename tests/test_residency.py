"""One worker serving families whose weights do not fit on its device together: the residency
manager's accounting and moves, the queue order it drives, and both on the tiny preset through
the real queue (a mixed stream, swap counts, order of completions)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
import torch

from openreel.records import RecordStore, RequestRecord
from openreel.worker_registry import live_workers
from tests.generated_inputs import data_uri, gradient_frames, mp4_bytes
from tests.stack import Stack, wait_until
from workers.queue_order import Waiting, order
from workers.residency import MIB, Residency

CPU = torch.device("cpu")


def network(mib: float) -> torch.nn.Module:
    """A real module of ``mib`` MiB of float32 weights."""
    return torch.nn.Linear(int(mib * MIB) // 4, 1, bias=False)


def test_the_least_recently_used_pipeline_leaves_when_the_next_one_needs_the_room() -> None:
    text_encoder, vae, t2v, i2v, unet = network(2), network(1), network(3), network(3), network(4)
    residency = Residency(CPU, budget_bytes=10 * MIB)
    residency.register("t2v", "cogvideox", [text_encoder, vae, t2v, text_encoder])  # shared modules once
    residency.register("i2v", "cogvideox", [text_encoder, vae, i2v])
    residency.register("animatediff", "animatediff", [unet])
    assert residency.resident_bytes() == 13 * MIB  # everything loaded on the device, over budget

    moves = residency.acquire("t2v")  # i2v is least recent but shares 3 MiB with t2v: only its transformer goes
    assert [(m.pipeline, m.direction, m.nbytes) for m in moves] == [("i2v", "out", 3 * MIB)]
    assert residency.resident_bytes() == 10 * MIB
    assert residency.resident_families() == {"cogvideox", "animatediff"}

    moves = residency.acquire("i2v")  # animatediff is now least recent and goes first
    assert [(m.pipeline, m.direction, m.nbytes) for m in moves] == [
        ("animatediff", "out", 4 * MIB),
        ("i2v", "in", 3 * MIB),
    ]
    assert residency.report()["resident"] == ["i2v", "t2v"]

    moves = residency.acquire("animatediff")  # t2v is least recent: its own transformer, then i2v's
    assert [(m.pipeline, m.direction, m.nbytes) for m in moves] == [
        ("t2v", "out", 6 * MIB),
        ("animatediff", "in", 4 * MIB),
    ]
    assert residency.resident_families() == {"animatediff"}
    assert residency.acquire("animatediff") == []  # resident: nothing moves
    assert (residency.moves["in"], residency.moves["out"]) == (2, 3)


def test_parking_empties_the_device_and_registration_reads_where_modules_are() -> None:
    residency = Residency(CPU, budget_bytes=None)
    residency.register("a", "one", [network(1)])
    assert [m.direction for m in residency.park_all()] == ["out"]
    assert residency.resident_bytes() == 0 and residency.resident_families() == set()
    residency.register("b", "two", [network(1)])  # no budget: nothing is ever evicted
    residency.acquire("a")
    assert residency.resident_families() == {"one", "two"}
    assert residency.acquire("never-registered") == []  # a family that offloads by itself


def test_a_pipeline_larger_than_the_budget_still_runs_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    residency = Residency(CPU, budget_bytes=1 * MIB)
    residency.register("big", "one", [network(2)])
    residency.park_all()
    with caplog.at_level(logging.WARNING, "openreel.residency"):
        assert [m.direction for m in residency.acquire("big")] == ["in"]
    assert "over the 1.0 MiB residency budget" in caplog.text


def test_moved_weights_are_the_same_weights() -> None:
    module = network(0.25)
    before = module.weight.detach().clone()
    residency = Residency(CPU, budget_bytes=None)
    residency.register("a", "one", [module])
    residency.park_all()
    residency.acquire("a")
    assert torch.equal(module.weight, before)


def waiting(queue: str, family: str, enqueued_at: float | None, priority: int = 0) -> Waiting:
    return Waiting(queue, family, priority, enqueued_at)


def test_queue_order_prefers_resident_families_until_a_request_waits_too_long() -> None:
    queues = [
        waiting("animatediff", "animatediff", 100.0),
        waiting("cogvideox", "cogvideox", 105.0),
        waiting("video_as_prompt", "video_as_prompt", None),
        waiting("animatediff.low", "animatediff", 80.0, priority=1),
        waiting("cogvideox.low", "cogvideox", 90.0, priority=1),
    ]
    resident = {"cogvideox"}
    # Nothing has waited 60 s: the resident family first, low after every normal queue.
    assert order(queues, resident, now=130.0, max_wait_s=60) == [
        "cogvideox",
        "animatediff",
        "video_as_prompt",
        "cogvideox.low",
        "animatediff.low",
    ]
    # animatediff's oldest has waited 60 s: it goes first whatever the swap costs; low stays low.
    assert order(queues, resident, now=160.0, max_wait_s=60)[:2] == ["animatediff", "cogvideox"]
    # 0: strictly oldest first within a priority.
    assert order(queues, resident, now=130.0, max_wait_s=0) == [
        "animatediff",
        "cogvideox",
        "video_as_prompt",
        "animatediff.low",
        "cogvideox.low",
    ]


ANIMATEDIFF = "fal-ai/animatediff-v2v/turbo"
T2V = "fal-ai/cogvideox-5b"
T2V_INPUT = {"prompt": "a kite", "video_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "use_rife": False}
# CogVideoX text-to-video with RIFE is ~14 MiB on the tiny preset and AnimateDiff ~1 MiB:
# one at a time fits 15 MiB, both do not.
BUDGET_MIB = "15"


@pytest.fixture(scope="module")
def queued_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Any) -> Any:
    env = {"OPENREEL_ENDPOINTS": f"{T2V},{ANIMATEDIFF}", "OPENREEL_WARMUP": "false"}
    stack = Stack(tmp_path_factory.mktemp("residency"), models_dir, workers=0, env=env).start(wait_ready=False)
    yield stack
    stack.stop()


def run_mixed_stream(stack: Stack, max_wait_s: str) -> tuple[list[RequestRecord], dict[str, Any]]:
    """Queue A C A C A C (A: AnimateDiff, C: CogVideoX) before a worker exists, then start one;
    return the records in the order it started them and its registry entry once done."""
    clip = data_uri(mp4_bytes(gradient_frames(8, (32, 32), seed=2), fps=8), "video/mp4")
    animatediff_input = {"prompt": "paper", "video_url": clip, "num_inference_steps": 4, "select_every_nth_frame": 1}
    connection = redis.Redis.from_url(stack.redis_url)
    with stack.client() as http:
        ids = []
        for endpoint, payload in [(ANIMATEDIFF, animatediff_input), (T2V, T2V_INPUT)] * 3:
            response = http.post(f"/queue/{endpoint}", json=payload)
            assert response.status_code == 200, response.text
            ids.append(response.json()["request_id"])
    stack.env.update({"OPENREEL_RESIDENCY_BUDGET_MIB": BUDGET_MIB, "OPENREEL_RESIDENCY_MAX_WAIT_S": max_wait_s})
    worker = stack.start_worker()
    store = RecordStore(connection, retention_s=3600)

    def entry() -> dict[str, Any] | None:
        return next((w for w in live_workers(connection) if w["pid"] == worker.pid), None)

    def finished() -> list[RequestRecord]:
        return [record for i in ids if (record := store.get(i)) is not None and record.status == "COMPLETED"]

    try:
        wait_until(lambda: len(finished()) == len(ids), timeout_s=180, interval_s=0.2)
        wait_until(lambda: (entry() or {}).get("state") == "ready")  # published after the last run
        report = entry()
    finally:
        worker.terminate()
        worker.wait(30)
    records = sorted(finished(), key=lambda record: record.started_at or 0.0)
    assert all(r.error is None for r in records), [r.error for r in records]
    assert report is not None and report["residency_budget_bytes"] == 15 * MIB
    return records, report


# Families load in name order, each after the device is emptied: AnimateDiff moves out once
# before CogVideoX loads, and CogVideoX is resident when the worker starts serving.
LOAD_MOVES_OUT = 1


def test_a_worker_prefers_what_it_has_resident(queued_stack: Stack) -> None:
    """CogVideoX loaded last and is resident: its three requests first, then AnimateDiff's, for
    one swap where the arrival order would take six."""
    records, report = run_mixed_stream(queued_stack, max_wait_s="600")
    assert [r.endpoint for r in records] == [T2V] * 3 + [ANIMATEDIFF] * 3
    assert not any("swap" in r.output["timings"] for r in records[:3])  # type: ignore[index]
    assert (report["moves_in"], report["moves_out"] - LOAD_MOVES_OUT) == (1, 1)
    assert report["resident"] == [ANIMATEDIFF]


def test_a_request_that_waited_too_long_is_served_whatever_the_swap(queued_stack: Stack) -> None:
    """With a limit of 0 s every request has waited too long: arrival order, a swap each."""
    records, report = run_mixed_stream(queued_stack, max_wait_s="0")
    assert [r.endpoint for r in records] == [ANIMATEDIFF, T2V] * 3
    # Each CogVideoX request paid for bringing its pipeline back: in its timings and its logs.
    store = RecordStore(redis.Redis.from_url(queued_stack.redis_url), retention_s=3600)
    for record in records[1::2]:
        assert record.output["timings"]["swap"] >= 0  # type: ignore[index]
        logs = [line["message"] for line in store.logs(record.request_id)]
        assert any(line.startswith(f"moved {T2V} to cpu: 14.") for line in logs), logs
    assert (report["moves_in"], report["moves_out"] - LOAD_MOVES_OUT) == (6, 6)
    assert report["resident"] == [T2V]
