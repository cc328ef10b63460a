"""A worker group (torchrun over several devices, one request at a time with the sequence split
across them) on CPU: the gloo backend, two processes, the tiny Video-As-Prompt preset.

The transformer split by diffusers' context parallelism must compute what the whole one does;
through the queue, the group must serve like a single worker (the same frames for the same
seed), leave a request together when it is cancelled or its input is bad, and give back a
request whose rank died, restarting under torchrun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import redis
import torch
import torch.multiprocessing as mp

from models.tiny.video_as_prompt import TRANSFORMER_CONFIG
from openreel.records import RecordStore
from openreel.redis_server import free_port
from openreel.worker_registry import live_workers
from pipelines.video_as_prompt.schema import VideoAsPromptInput
from tests.stack import Stack, wait_until
from tests.test_video_as_prompt_endpoint import BASE, ENDPOINT, MAX_PIXELS
from workers.context import Progress, RequestCancelled
from workers.decoding import VideoLimits, read_video
from workers.runtime import with_seed

RANKS = 2
STEPS = 30  # long enough to cancel between steps


# --- the split transformer ------------------------------------------------------------------


class _Model:
    """The transformer alone, in the place of a runner."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def split_sequence(self, config: Any) -> None:
        self.model.enable_parallelism(config=config)


def _split_forward(rank: int, port: int, expert_blocks: list[int], results: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(RANKS)
    )
    from models.video_as_prompt.transformer import WanTransformer3DMOTModel
    from openreel.settings import Settings
    from workers.group import Group

    group = Group(Settings(device="cpu"))
    torch.manual_seed(0)  # the same weights on every rank, as loading one checkpoint gives
    model = WanTransformer3DMOTModel(**{**TRANSFORMER_CONFIG, "block_idx_with_mot_ref": expert_blocks}).eval()
    noise = torch.Generator().manual_seed(1)
    target, reference = (torch.randn(1, 36, 3, 8, 10, generator=noise) for _ in range(2))
    inputs = dict(
        hidden_states=target,
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=noise),
        encoder_hidden_states_image=torch.randn(1, 17, 8, generator=noise),
        reference_hidden_states=reference,
        reference_timestep=torch.tensor([1.0]),
        reference_encoder_hidden_states=torch.randn(1, 512, 32, generator=noise),
        reference_encoder_hidden_states_image=torch.randn(1, 17, 8, generator=noise),
        return_dict=False,
    )
    with torch.no_grad():
        whole = model(**inputs)[0]
    tokens_seen: list[int] = []
    for block in model.blocks:  # (the split itself is a hook around block 0's forward)
        block.norm1.register_forward_pre_hook(lambda module, args: tokens_seen.append(args[0].shape[1]))
    group.split(_Model(model))
    with torch.no_grad():
        split = model(**inputs)[0]
    torch.save({"whole": whole, "split": split, "tokens_seen": tokens_seen}, results / f"rank{rank}.pt")
    group.leave()


@pytest.mark.parametrize("expert_blocks", [[0, 2], [1, 2]], ids=["expert-in-block-0", "expert-from-block-1"])
def test_split_transformer_computes_what_the_whole_one_does(tmp_path: Path, expert_blocks: list[int]) -> None:
    mp.spawn(_split_forward, args=(free_port(), expert_blocks, tmp_path), nprocs=RANKS)
    for rank in range(RANKS):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        # 3 latent frames of 4 x 5 patches: 60 target tokens, 30 on each rank in every block.
        assert result["tokens_seen"] == [60 // RANKS] * TRANSFORMER_CONFIG["num_layers"]
        assert result["split"].shape == result["whole"].shape
        torch.testing.assert_close(result["split"], result["whole"], rtol=1e-5, atol=1e-5)


# --- the group through the queue --------------------------------------------------------------

GROUP_ENV = {
    "OPENREEL_ENDPOINTS": ENDPOINT,
    "OPENREEL_VIDEO_AS_PROMPT_STEPS": str(STEPS),
    "OPENREEL_VIDEO_AS_PROMPT_MAX_PIXELS": str(MAX_PIXELS),
}


def _submit(client: httpx.Client, **overrides: Any) -> str:
    response = client.post(f"/queue/{ENDPOINT}", json={**BASE, **overrides})
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def _status(client: httpx.Client, request_id: str) -> dict[str, Any]:
    return client.get(f"/queue/{ENDPOINT}/requests/{request_id}/status", params={"logs": 1}).json()


def _logged(client: httpx.Client, request_id: str, line: str) -> bool:
    return any(entry["message"] == line for entry in _status(client, request_id)["logs"] or [])


def _result(client: httpx.Client, request_id: str, timeout_s: float = 120) -> httpx.Response:
    wait_until(lambda: _status(client, request_id)["status"] == "COMPLETED", timeout_s=timeout_s)
    return client.get(f"/queue/{ENDPOINT}/requests/{request_id}")


def _frames(client: httpx.Client, response: httpx.Response, directory: Path) -> np.ndarray:
    assert response.status_code == 200, response.text
    path = directory / f"{time.monotonic_ns()}.mp4"
    path.write_bytes(client.get(response.json()["video"]["url"]).content)
    return read_video(path, ["video"], VideoLimits(max_seconds=60, max_side=4096, max_frames=1000)).frames


def _group_ready(client: httpx.Client, workers: list[dict[str, Any]]) -> bool:
    return [(w.get("group"), w["state"]) for w in workers] == [({"ranks": RANKS, "backend": "gloo"}, "ready")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """API, Redis and storage; workers are started by the tests."""
    stack = Stack(tmp_path_factory.mktemp("group"), models_dir, workers=0, env=GROUP_ENV).start(wait_ready=False)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def single_worker_frames(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The reference request served by one ordinary worker, which then stops."""
    worker = stack.start_worker()
    try:
        with stack.client() as client:
            return _frames(client, _result(client, _submit(client)), tmp_path_factory.mktemp("single"))
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(30)


@pytest.fixture(scope="module")
def group(stack: Stack, single_worker_frames: np.ndarray) -> Iterator[psutil.Process]:
    """torchrun and its two ranks, restarting the group once if it breaks."""
    launcher = stack.start_worker(ranks=RANKS, max_restarts="1")
    connection = redis.Redis.from_url(stack.redis_url)
    with stack.client() as client:
        wait_until(lambda: _group_ready(client, live_workers(connection)), timeout_s=120, interval_s=0.2)
    yield psutil.Process(launcher.pid)


def test_the_group_gives_the_frames_a_single_worker_gives(
    stack: Stack, group: psutil.Process, single_worker_frames: np.ndarray, tmp_path: Path
) -> None:
    with stack.client() as client:
        request_id = _submit(client)
        frames = _frames(client, _result(client, request_id), tmp_path)
        logs = [entry["message"] for entry in _status(client, request_id)["logs"]]
    assert frames.shape == single_worker_frames.shape
    # The split attention sums in another order (differences near 1e-7 before the VAE); the
    # frames then differ by an 8-bit rounding at most, before and after H.264.
    difference = np.abs(frames.astype(int) - single_worker_frames.astype(int))
    assert difference.mean() < 0.5 and difference.max() <= 8, (difference.mean(), difference.max())
    assert f"step {STEPS}/{STEPS}" in logs and logs.count("downloading inputs") == 1
    status = subprocess.run(
        [sys.executable, "-m", "openreel.cli", "status", "--redis-url", stack.redis_url],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert f"({RANKS} ranks)" in status, status


def test_a_cancel_mid_denoising_ends_the_request_on_every_rank(stack: Stack, group: psutil.Process) -> None:
    with stack.client() as client:
        request_id = _submit(client)
        wait_until(lambda: _logged(client, request_id, f"step 2/{STEPS}"), timeout_s=60, interval_s=0.02)
        assert client.put(f"/queue/{ENDPOINT}/requests/{request_id}/cancel").status_code == 202
        answer = _result(client, request_id)
        assert answer.status_code == 499 and answer.json()["error_type"] == "request_cancelled", answer.text
        assert not _logged(client, request_id, f"step {STEPS}/{STEPS}")
        # Every rank left at the same step: the next request runs to the end.
        assert _result(client, _submit(client, seed=4)).status_code == 200


def test_an_input_rank_0_cannot_read_ends_the_request_on_every_rank(stack: Stack, group: psutil.Process) -> None:
    with stack.client() as client:
        broken = "data:video/mp4;base64," + "AAAAIGZ0eXBpc29t" * 8
        answer = _result(client, _submit(client, video_url=broken))
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "video_url"]
        assert _result(client, _submit(client, seed=5)).status_code == 200


def test_a_lost_rank_gives_its_request_back_and_torchrun_restarts_the_group(
    stack: Stack, group: psutil.Process
) -> None:
    connection = redis.Redis.from_url(stack.redis_url)
    (leader,) = live_workers(connection)
    follower = next(rank for rank in group.children() if rank.pid != leader["pid"])
    with stack.client() as client:
        request_id = _submit(client, seed=6)
        wait_until(lambda: _logged(client, request_id, f"step 2/{STEPS}"), timeout_s=60, interval_s=0.02)
        follower.send_signal(signal.SIGKILL)
        answer = _result(client, request_id, timeout_s=180)
        assert answer.status_code == 200, answer.text
        logs = [entry["message"] for entry in _status(client, request_id)["logs"]]
        assert "worker lost; request re-queued" in logs
        record = RecordStore(connection, retention_s=3600).get(request_id)
        assert record is not None and record.attempts == 2
        # The broken rank 0 may still show as failed until its heartbeat TTL runs out.
        (restarted,) = [w for w in live_workers(connection) if w["state"] != "failed"]
        assert restarted["pid"] != leader["pid"] and restarted["group"]["ranks"] == RANKS


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"OPENREEL_ENDPOINTS": "fal-ai/video-as-prompt,cogvideox"}, "fal-ai/cogvideox-5b, fal-ai/cogvideox-5b/"),
        ({"OPENREEL_ENDPOINTS": "fal-ai/video-as-prompt", "OPENREEL_DEVICE": "cuda:1"}, "every rank of the worker"),
    ],
)
def test_a_group_refuses_what_it_cannot_serve_before_loading_anything(env: dict[str, str], reason: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENREEL_")}
    # What torchrun sets; the refusal comes before any rank looks for the others.
    ranks = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "openreel.cli", "worker"],
        env=clean | ranks | env | {"OPENREEL_REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.startswith("openreel: ") and reason in done.stderr, done.stderr


# --- the pieces rank 0 shares -----------------------------------------------------------------


def test_a_request_without_seed_gets_one_before_the_ranks_see_it() -> None:
    given = {**BASE, "seed": None}
    drawn = with_seed(VideoAsPromptInput, given)
    assert isinstance(drawn["seed"], int) and given["seed"] is None
    assert with_seed(VideoAsPromptInput, BASE) is BASE


def test_a_group_checks_for_cancellation_at_steps_only() -> None:
    asked: list[str] = []
    progress = Progress(log=asked.append, cancelled=lambda: True, cancel_at_stages=False)
    progress.stage("encoding prompt")  # passes: the ranks do not all pass stages alike
    with pytest.raises(RequestCancelled):
        progress.step_callback(2)(None, 0, None, {})
    alone = Progress(log=asked.append, cancelled=lambda: True)
    with pytest.raises(RequestCancelled):
        alone.stage("encoding prompt")
