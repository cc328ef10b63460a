"""Which GPU each worker of 'openreel up' gets (``OPENREEL_GPUS``), and whether torchrun made
this process one rank of a worker group.

Torch-free: 'openreel up' runs the API in the same process, and the API never imports torch, so
the GPUs are listed the way CUDA itself would be told about them: ``CUDA_VISIBLE_DEVICES`` when
the launcher already has one, else ``nvidia-smi``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def launched_as_group() -> bool:
    """True in a process torchrun started with more than one rank (workers/group.py)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries; none without NVIDIA GPUs."""
    given = os.environ.get(VISIBLE_DEVICES)
    if given is not None:
        return [entry.strip() for entry in given.split(",") if entry.strip()]
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return []
    try:
        listing = subprocess.run(
            [nvidia_smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []  # a driver that does not answer serves no worker
    return [line.strip() for line in listing.splitlines() if line.strip()]


def worker_devices(gpus: str | None, workers: int, visible: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker to start; None leaves the worker's environment as it is.

    ``gpus`` unset: ``workers`` workers sharing whatever they see. ``all``: one worker per visible
    GPU, or ``workers`` of them where there is none (a CPU host runs the same command). A list is
    honoured as given, one worker per entry; a worker given an index this host lacks sees no GPU,
    and its ``cuda`` is false in ``/health`` and ``openreel status``.
    """
    if gpus is None:
        return [None] * workers
    if gpus == "all":
        return list(visible) if visible else [None] * workers
    return list(gpus.split(","))
