"""Types that fal's endpoint pages share (``File``, ``ImageSize``), mirrored field for field, and
the seed a request without one gets."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

ImageSizePreset = Literal["square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"]

# fal's standard table for the named sizes (width, height).
IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}


def seed_for(requested: int | None) -> int:
    """The client's seed, or a fresh one drawn as fal does: any non-negative 31-bit integer."""
    return requested if requested is not None else secrets.randbelow(2**31)


class ImageSize(BaseModel):
    width: int = Field(512, description="The width of the generated image.")
    height: int = Field(512, description="The height of the generated image.")


class File(BaseModel):
    url: str = Field(..., description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(None, description="The mime type of the file.")
    file_name: str | None = Field(
        None, description="The name of the file. It will be auto-generated if not provided."
    )
    file_size: int | None = Field(None, description="The size of the file in bytes.")


def resolve_size(size: ImageSize | str) -> tuple[int, int]:
    """(width, height) of an ``ImageSize`` or a named preset."""
    if isinstance(size, str):
        return IMAGE_SIZE_PRESETS[size]
    return size.width, size.height


def field_examples(**examples: Any) -> Callable[[dict[str, Any]], None]:
    """A model's ``json_schema_extra`` giving its fields the examples of fal's endpoint page: they
    differ between endpoints whose models inherit the field (every CogVideoX prompt has its own)."""

    def add(schema: dict[str, Any]) -> None:
        for name, value in examples.items():
            schema["properties"][name]["examples"] = [value]

    return add
