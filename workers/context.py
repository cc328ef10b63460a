"""What a pipeline runner gets for one request: progress/cancel reporting, input files and the
output writer.

Every runner reports through the same ``Progress`` object, so log lines, stage timings and
cancellation behave identically for all endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.fal_types import File

if TYPE_CHECKING:
    from PIL import Image

    from workers.decoding import Video  # whose module imports InputError from here


class RequestCancelled(Exception):
    """Raised inside the pipeline to stop GPU work at the next step boundary."""


class InputError(Exception):
    """A request that passed schema validation but cannot be served (a 422 in fal's shape)."""

    request_error_type = "invalid_input"
    """The request's ``error_type``; ``error_type`` below is that of the detail entry."""

    def __init__(self, loc: list[str | int], msg: str, error_type: str = "value_error") -> None:
        super().__init__(msg)
        self.detail = [{"loc": ["body", *loc], "msg": msg, "type": error_type}]


class ContentPolicyViolation(InputError):
    """The output was flagged by a content checker: fal's 422 ``content_policy_violation``."""

    request_error_type = "content_policy_violation"

    def __init__(self, msg: str) -> None:
        super().__init__([], msg, self.request_error_type)


@dataclass
class Progress:
    """The one progress/cancel adapter: stages, per-step callbacks, timings.

    ``log`` publishes a line to the request's status logs; ``cancelled`` answers whether the
    user asked to cancel. Raising (rather than setting the pipeline's ``interrupt`` flag) is
    deliberate: diffusers still runs the VAE decode, the memory peak, after an interrupt.
    A worker group (workers/group.py) checks at denoising steps only (``cancel_at_stages``
    off): those are the checkpoints all its ranks pass alike.
    """

    log: Callable[[str], None]
    cancelled: Callable[[], bool]
    clock: Callable[[], float] = time.perf_counter
    cancel_at_stages: bool = True
    _timings: dict[str, float] = field(default_factory=dict)
    _stage: str | None = None
    _stage_started: float = 0.0

    def stage(self, name: str) -> None:
        """Close the current stage and open ``name``; a cancel request stops here too."""
        self._close_stage()
        if self.cancel_at_stages:
            self.check_cancelled()
        self._stage, self._stage_started = name, self.clock()
        self.log(name)

    def record(self, stage: str, seconds: float) -> None:
        """Time this request spent outside the runner's own stages (weights moved to the device)."""
        key = stage.replace(" ", "_")
        self._timings[key] = self._timings.get(key, 0.0) + seconds

    def finish(self) -> dict[str, float]:
        """Close the last stage and return seconds per stage."""
        self._close_stage()
        return dict(self._timings)

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise RequestCancelled("Request was cancelled")

    def step_callback(self, total_steps: int) -> Callable[..., dict[str, Any]]:
        """A diffusers ``callback_on_step_end`` that logs ``step i/N`` and honours cancellation."""

        def on_step_end(pipe: object, step: int, timestep: object, callback_kwargs: dict[str, Any]) -> dict:
            self.log(f"step {step + 1}/{total_steps}")
            self.check_cancelled()
            return callback_kwargs

        return on_step_end

    def _close_stage(self) -> None:
        if self._stage is not None:
            key = self._stage.replace(" ", "_")
            self._timings[key] = self._timings.get(key, 0.0) + self.clock() - self._stage_started
            self._stage = None


class Inputs(Protocol):
    """Where a runner gets its input files: ``workers.inputs.InputResolver``, or in a worker
    group ``workers.group.SharedInputs``. ``loc`` names the field for a 422."""

    def file(self, url: str, loc: Sequence[str | int]) -> Path: ...

    def video(self, url: str, loc: Sequence[str | int]) -> Video: ...

    def image(self, url: str, loc: Sequence[str | int]) -> Image.Image: ...


@dataclass
class JobContext:
    """Per-request handles passed to ``Runner.run``."""

    request_id: str
    progress: Progress
    write_video: Callable[..., File]
    """``write_video(frames, fps, file_name="output.mp4") -> File``: frames are uint8 (F, H, W, 3)."""
    inputs: Inputs | None = None
    """File inputs. Always set by the runtime; runner unit tests that pass no files may leave it out."""
