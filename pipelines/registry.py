"""Which endpoints exist, which family (queue and worker code) serves each, and their schemas.

Torch-free: the API validates with these models; workers import the family's runner lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pydantic import BaseModel

from pipelines.animatediff import ANIMATELCM_FILES, ANIMATELCM_REPO, BASE_FILES, DEFAULT_BASE_REPO
from pipelines.animatediff import schema as animatediff
from pipelines.cogvideox import I2V_REPO, RIFE_FILE, RIFE_REPO, T2V_REPO
from pipelines.cogvideox import schema as cogvideox
from pipelines.video_as_prompt import REPO as VIDEO_AS_PROMPT_REPO
from pipelines.video_as_prompt import SAFETY_CHECKER_REPO
from pipelines.video_as_prompt import schema as video_as_prompt


@dataclass(frozen=True)
class Weights:
    """A Hugging Face repo the ``full`` preset loads: whole, or only the files ``patterns`` match."""

    repo: str
    patterns: tuple[str, ...] | None = None
    setting: str | None = None
    """The ``Settings`` field that may name another repo in its place."""


@dataclass(frozen=True)
class Endpoint:
    id: str
    family: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    weights: tuple[Weights, ...] = ()


COGVIDEOX_WEIGHTS = (Weights(T2V_REPO), Weights(RIFE_REPO, (RIFE_FILE,)))

ENDPOINTS: dict[str, Endpoint] = {
    endpoint.id: endpoint
    for endpoint in (
        Endpoint(
            "fal-ai/cogvideox-5b", "cogvideox", cogvideox.TextToVideoInput, cogvideox.CogVideoXOutput, COGVIDEOX_WEIGHTS
        ),
        Endpoint(
            "fal-ai/cogvideox-5b/image-to-video",
            "cogvideox",
            cogvideox.ImageToVideoInput,
            cogvideox.CogVideoXOutput,
            (*COGVIDEOX_WEIGHTS, Weights(I2V_REPO, ("transformer/*",))),
        ),
        Endpoint(
            "fal-ai/cogvideox-5b/video-to-video",
            "cogvideox",
            cogvideox.VideoToVideoInput,
            cogvideox.CogVideoXOutput,
            COGVIDEOX_WEIGHTS,
        ),
        Endpoint(
            "fal-ai/animatediff-v2v/turbo",
            "animatediff",
            animatediff.AnimateDiffV2VTurboInput,
            animatediff.AnimateDiffOutput,
            (
                Weights(DEFAULT_BASE_REPO, BASE_FILES, setting="animatediff_base_model"),
                Weights(ANIMATELCM_REPO, ANIMATELCM_FILES),
            ),
        ),
        Endpoint(
            "fal-ai/video-as-prompt",
            "video_as_prompt",
            video_as_prompt.VideoAsPromptInput,
            video_as_prompt.VideoAsPromptOutput,
            (Weights(VIDEO_AS_PROMPT_REPO), Weights(SAFETY_CHECKER_REPO, ("*.json", "model.safetensors"))),
        ),
    )
}

# family -> "module:function" returning {endpoint_id: runner}; imported only inside workers.
FAMILY_LOADERS: dict[str, str] = {
    "cogvideox": "pipelines.cogvideox.runner:load_family",
    "animatediff": "pipelines.animatediff.runner:load_family",
    "video_as_prompt": "pipelines.video_as_prompt.runner:load_family",
}


# Families whose transformer diffusers can split along the sequence (context parallelism), so
# that a worker group started by torchrun can serve them: Wan's, hence Video-As-Prompt's.
# CogVideoX and AnimateDiff's UNet have no context-parallel plan in diffusers.
CONTEXT_PARALLEL_FAMILIES = frozenset({"video_as_prompt"})


def check_context_parallel(endpoint_ids: list[str]) -> None:
    """Refuse a worker group for endpoints it cannot split, before any weights load."""
    unsplittable = sorted(e for e in endpoint_ids if ENDPOINTS[e].family not in CONTEXT_PARALLEL_FAMILIES)
    if unsplittable:
        splittable = sorted(e.id for e in ENDPOINTS.values() if e.family in CONTEXT_PARALLEL_FAMILIES)
        raise ValueError(
            f"a worker group (torchrun with several ranks) splits each request across its GPUs, which "
            f"{', '.join(unsplittable)} cannot do; set OPENREEL_ENDPOINTS to {', '.join(splittable)} for the "
            f"group and serve the others from single-GPU workers"
        )


def families() -> list[str]:
    return sorted({endpoint.family for endpoint in ENDPOINTS.values()})


def select(names: list[str]) -> list[Endpoint]:
    """Endpoints named by id or by family; every endpoint when ``names`` is empty."""
    if not names:
        return list(ENDPOINTS.values())
    chosen: dict[str, Endpoint] = {}
    for name in names:
        matches = [e for e in ENDPOINTS.values() if name in (e.id, e.family)]
        if not matches:
            known = ", ".join(sorted(ENDPOINTS) + families())
            raise ValueError(f"unknown endpoint or family {name!r}; known: {known}")
        chosen.update((e.id, e) for e in matches)
    return list(chosen.values())


def load_family(family: str, **kwargs: object) -> dict[str, object]:
    """The family's runners; ``kwargs`` are ``settings`` and the ``endpoints`` to serve."""
    module_name, function_name = FAMILY_LOADERS[family].split(":")
    return getattr(importlib.import_module(module_name), function_name)(**kwargs)
