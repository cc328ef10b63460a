"""Weighted, chunked CLIP text embeddings for Stable Diffusion 1.5 pipelines.

CLIP reads 77 positions: a start token, 75 prompt tokens, an end token (then padding). A longer
prompt is split into 75-token chunks, each encoded on its own and concatenated along the
sequence, as the AUTOMATIC1111 web UI does; the UNet's cross-attention takes any length, so
nothing is cut. Weights scale each token's embedding, and the chunk is then rescaled to keep its
mean, so a weight shifts emphasis between tokens instead of the whole prompt's magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pipelines.prompt_weights import parse_prompt


@dataclass
class Chunk:
    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


class ClipPromptEncoder:
    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.length = tokenizer.model_max_length
        self.chunk_tokens = self.length - 2

    def chunks(self, prompt: str) -> list[Chunk]:
        """The prompt's tokens and weights in chunks of at most 75; ``BREAK`` starts a new one."""
        chunks: list[Chunk] = []
        for part in parse_prompt(prompt):
            current = Chunk()
            chunks.append(current)
            for run in part:
                for token in self.tokenizer(run.text, add_special_tokens=False, verbose=False).input_ids:
                    if len(current.ids) == self.chunk_tokens:
                        current = Chunk()
                        chunks.append(current)
                    current.ids.append(token)
                    current.weights.append(run.weight)
        return chunks

    def encode_pair(self, prompt: str, negative_prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 77 x chunks, width) embeddings of both prompts. The shorter one is padded with empty
        chunks: classifier-free guidance needs both sequences of one length."""
        positive, negative = self.chunks(prompt), self.chunks(negative_prompt)
        count = max(len(positive), len(negative))
        positive += [Chunk() for _ in range(count - len(positive))]
        negative += [Chunk() for _ in range(count - len(negative))]
        return self.encode(positive, device), self.encode(negative, device)

    def encode(self, chunks: list[Chunk], device: torch.device) -> torch.Tensor:
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids, weights = [], []
        for chunk in chunks:
            padding = self.chunk_tokens - len(chunk.ids)
            ids.append([tokenizer.bos_token_id, *chunk.ids, tokenizer.eos_token_id] + [pad] * padding)
            weights.append([1.0, *chunk.weights, 1.0] + [1.0] * padding)
        id_tensor = torch.tensor(ids, device=device)
        hidden = self.text_encoder(id_tensor)[0]  # (chunks, 77, width), the last hidden state
        scale = torch.tensor(weights, device=device, dtype=hidden.dtype).unsqueeze(-1)
        weighted = hidden * scale
        # Per chunk, the mean the unweighted embeddings had. A mean near zero next to the values
        # (an untrained final norm without bias) says nothing worth restoring, and dividing by it
        # would blow the embeddings up.
        before, after = hidden.mean(dim=(1, 2), keepdim=True), weighted.mean(dim=(1, 2), keepdim=True)
        meaningful = after.abs() > 1e-3 * weighted.abs().mean(dim=(1, 2), keepdim=True)
        weighted = torch.where(meaningful, weighted * before / after, weighted)
        return weighted.reshape(1, -1, hidden.shape[-1])
