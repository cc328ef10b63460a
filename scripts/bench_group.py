"""What a worker group's coordination costs per request and per step, on whatever runs it.

A group's ranks agree on every denoising step (rank 0's cancel decision), receive each request
(rank 0's order) and its input files, and close each request with a handshake
(workers/group.py). This times those over the group's own channels, without a model: what the
group adds to a request beyond the split attention itself.

    python scripts/bench_group.py [--ranks 2] [--steps 500] [--frames 49]

Starts itself under torchrun (``--standalone``); on CPU the channels are gloo, as on GPU hosts
(only the attention collectives use NCCL there).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

from openreel.settings import Settings


def measure(args: argparse.Namespace) -> None:
    from workers.group import Group, Order

    group = Group(Settings(device="cpu"))
    started = time.perf_counter()
    for _ in range(args.steps):
        group.agree_cancel(False)
    agree_ms = (time.perf_counter() - started) / args.steps * 1e3

    # The reference clip of an 832x480 request, as decoded frames.
    clip = np.zeros((args.frames, 480, 832, 3), np.uint8) if group.leader else None
    rounds = 5
    started = time.perf_counter()
    for _ in range(rounds):
        group.share(clip)
    share_ms = (time.perf_counter() - started) / rounds * 1e3

    order = Order("bench", "fal-ai/video-as-prompt", {"prompt": "a prompt of some length " * 20, "seed": 1})
    rounds = 100
    started = time.perf_counter()
    for _ in range(rounds):
        if group.leader:
            group.announce(order)
        else:
            group.next_order()
        group.close_request("ok")
    order_ms = (time.perf_counter() - started) / rounds * 1e3
    if group.leader:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; {group.size} ranks")
        print(f"cancel agreement per denoising step: {agree_ms:.3f} ms (mean of {args.steps})")
        print(f"sharing a {args.frames}x480x832 RGB clip: {share_ms:.0f} ms")
        print(f"announcing a request and closing it: {order_ms:.2f} ms")
    group.leave()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--frames", type=int, default=49)
    args = parser.parse_args()
    if "WORLD_SIZE" in os.environ:
        measure(args)
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.ranks}",
               __file__, f"--steps={args.steps}", f"--frames={args.frames}"]
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
