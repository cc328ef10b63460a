"""The attention syntax of the AUTOMATIC1111 web UI, which fal's AnimateDiff prompts use.

``(text)`` weighs text 1.1 times, ``[text]`` 1/1.1 times, ``(text:1.5)`` 1.5 times; groups nest
and their weights multiply. ``\\(`` and friends are literal brackets; a bracket that closes
nothing is literal too, and a group left open runs to the end of the prompt. ``BREAK`` starts a
new 75-token chunk. diffusers tokenizes all of this literally, so without this parse
``(worst quality:1.2)`` would reach CLIP as text, brackets and digits included.

Torch-free: the result is text with weights; ``pipelines.clip_prompts`` turns it into embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUND_WEIGHT = 1.1
SQUARE_WEIGHT = 1 / 1.1
_OPENER = {")": "(", "]": "["}

_TOKEN = re.compile(
    r"""
    \\(?P<escaped>[\\()\[\]])                                   # a literal bracket or backslash
  | (?P<open>[(\[])
  | :\s*(?P<weight>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)           # the end of (text:1.5)
  | (?P<close>[)\]])
  | (?P<brk>\bBREAK\b)
  | (?P<text>(?:(?!\bBREAK\b)[^\\()\[\]:])+|[:\\])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Weighted:
    text: str
    weight: float


def parse_prompt(prompt: str) -> list[list[Weighted]]:
    """The prompt as parts (split at ``BREAK``) of text runs with their weights, adjacent runs of
    equal weight merged. Every part is kept, even an empty one, so ``BREAK`` placement holds."""
    parts: list[list[list]] = [[]]  # runs as [text, weight] so closing groups can scale them
    open_groups: list[tuple[str, int, int]] = []  # (bracket, part index, first run index)

    def scale_from(part: int, first: int, factor: float) -> None:
        for index, runs in enumerate(parts[part:], start=part):
            for run in runs[first if index == part else 0 :]:
                run[1] *= factor

    for match in _TOKEN.finditer(prompt):
        kind = match.lastgroup
        if kind == "open":
            open_groups.append((match["open"], len(parts) - 1, len(parts[-1])))
        elif kind == "weight" and open_groups and open_groups[-1][0] == "(":
            _, part, first = open_groups.pop()
            scale_from(part, first, float(match["weight"]))
        elif kind == "close" and open_groups and open_groups[-1][0] == _OPENER[match["close"]]:
            bracket, part, first = open_groups.pop()
            scale_from(part, first, ROUND_WEIGHT if bracket == "(" else SQUARE_WEIGHT)
        elif kind == "brk":
            parts.append([])
        else:
            literal = match["escaped"] or match["text"] or match.group(0)
            parts[-1].append([literal, 1.0])
    for bracket, part, first in reversed(open_groups):
        scale_from(part, first, ROUND_WEIGHT if bracket == "(" else SQUARE_WEIGHT)
    return [_merged(runs) for runs in parts]


def _merged(runs: list[list]) -> list[Weighted]:
    merged: list[Weighted] = []
    for text, weight in runs:
        if merged and merged[-1].weight == weight:
            merged[-1] = Weighted(merged[-1].text + text, weight)
        else:
            merged.append(Weighted(text, weight))
    return [run for run in merged if run.text]
