"""Which endpoints exist, which family (queue and worker code) serves each, and their schemas.

Torch-free: the API validates with these models; workers import the family's runner lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pydantic import BaseModel

from pipelines.cogvideox import schema as cogvideox


@dataclass(frozen=True)
class Endpoint:
    id: str
    family: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]


ENDPOINTS: dict[str, Endpoint] = {
    endpoint.id: endpoint
    for endpoint in (
        Endpoint("fal-ai/cogvideox-5b", "cogvideox", cogvideox.TextToVideoInput, cogvideox.TextToVideoOutput),
    )
}

# family -> "module:function" returning {endpoint_id: runner}; imported only inside workers.
FAMILY_LOADERS: dict[str, str] = {
    "cogvideox": "pipelines.cogvideox.runner:load_family",
}


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
    module_name, function_name = FAMILY_LOADERS[family].split(":")
    return getattr(importlib.import_module(module_name), function_name)(**kwargs)
