"""The Video-As-Prompt transformer: frozen Wan2.1-I2V-14B plus a reference expert in some blocks.

The checkpoint ``ByteDance/Video-As-Prompt-Wan2.1-14B`` stores diffusers' Wan transformer under
its usual keys, plus a parallel copy of the network ("mixture of transformers") that reads the
reference video: ``patch_embedding_mot_ref``, ``condition_embedder_mot_ref`` and, in the blocks
its ``config.json`` lists in ``block_idx_with_mot_ref``, ``*_mot_ref`` twins of every block
module. The class is named as in that ``config.json`` so a saved tiny copy and the published
one describe themselves the same way.

In a block with an expert the two streams share one self-attention over target and reference
tokens together (each with its own projections, norms and rotary positions), and keep separate
cross-attention, feed-forward and modulation. Blocks without an expert are plain Wan blocks
that the reference stream skips. Attention runs through ``dispatch_attention_fn`` with the
backend and the context-parallel config of the block's ``attn1`` processor, so
``set_attention_backend`` and ``enable_parallelism`` reach it too.

Context parallelism (diffusers' Ulysses or ring attention) splits both token streams along the
sequence, each rank holding a slice of the target and a slice of the reference. The joint
attention then sees, across ranks, every target and every reference token once: attention does
not care in which order keys arrive, so the result is that of the unsplit model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelModelPlan, ContextParallelOutput
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanAttnProcessor,
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    WanTransformerBlock,
)
from diffusers.utils import apply_lora_scale
from torch import nn

Rotary = tuple[torch.Tensor, torch.Tensor]


def rotate(x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
    """Wan's rotary embedding on (B, S, heads, head_dim): channel pairs turned by the angles."""
    cos, sin = rotary
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos[..., 0::2] - x2 * sin[..., 1::2]
    out[..., 1::2] = x1 * sin[..., 1::2] + x2 * cos[..., 0::2]
    return out.type_as(x)


class ReferenceRotaryPosEmbed(WanRotaryPosEmbed):
    """Wan's 3D rotary positions with the reference clip placed *before* the target in time.

    The reference's F latent frames take temporal positions -F .. -1 while the target's start
    at 0; height and width positions are shared. The paper calls this the temporally biased
    position embedding: the model cannot read reference frame i as "target frame i".
    """

    def forward(self, hidden_states: torch.Tensor) -> Rotary:
        _, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        ppf, pph, ppw = num_frames // p_t, height // p_h, width // p_w
        positions = torch.arange(-ppf, 0, device=self.freqs_cos.device)
        time_cos, time_sin = get_1d_rotary_pos_embed(
            self.t_dim, positions, use_real=True, repeat_interleave_real=True, freqs_dtype=torch.float64
        )
        sizes = [self.t_dim, self.h_dim, self.w_dim]
        rotary = []
        for time, table in ((time_cos, self.freqs_cos), (time_sin, self.freqs_sin)):
            _, height_table, width_table = table.split(sizes, dim=1)
            grid = torch.cat(
                [
                    time.to(table).view(ppf, 1, 1, -1).expand(ppf, pph, ppw, -1),
                    height_table[:pph].view(1, pph, 1, -1).expand(ppf, pph, ppw, -1),
                    width_table[:ppw].view(1, 1, ppw, -1).expand(ppf, pph, ppw, -1),
                ],
                dim=-1,
            )
            rotary.append(grid.reshape(1, ppf * pph * ppw, 1, -1))
        return rotary[0], rotary[1]


class ReferenceExpertBlock(WanTransformerBlock):
    """A Wan block plus its reference expert (the ``*_mot_ref`` modules of the checkpoint)."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        qk_norm: str,
        cross_attn_norm: bool,
        eps: float,
        added_kv_proj_dim: int | None,
        expert_dim: int,
    ) -> None:
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim)
        head_dim = expert_dim // num_heads
        self.norm1_mot_ref = FP32LayerNorm(expert_dim, eps, elementwise_affine=False)
        self.attn1_mot_ref = WanAttention(
            dim=expert_dim, heads=num_heads, dim_head=head_dim, eps=eps, processor=WanAttnProcessor()
        )
        self.attn2_mot_ref = WanAttention(
            dim=expert_dim,
            heads=num_heads,
            dim_head=head_dim,
            eps=eps,
            added_kv_proj_dim=added_kv_proj_dim,
            cross_attention_dim_head=head_dim,
            processor=WanAttnProcessor(),
        )
        self.norm2_mot_ref = (
            FP32LayerNorm(expert_dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        )
        self.ffn_mot_ref = FeedForward(expert_dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        self.norm3_mot_ref = FP32LayerNorm(expert_dim, eps, elementwise_affine=False)
        self.scale_shift_table_mot_ref = nn.Parameter(torch.randn(1, 6, expert_dim) / expert_dim**0.5)

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: Rotary,
        reference: torch.Tensor,
        reference_context: torch.Tensor,
        reference_temb: torch.Tensor,
        reference_rotary: Rotary,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        target_mod = (self.scale_shift_table + temb.float()).chunk(6, dim=1)
        reference_mod = (self.scale_shift_table_mot_ref + reference_temb.float()).chunk(6, dim=1)

        # 1. One self-attention over both streams; each projects, normalises and rotates its own.
        target_in = self._modulate(self.norm1, hidden_states, target_mod[1], target_mod[0])
        reference_in = self._modulate(self.norm1_mot_ref, reference, reference_mod[1], reference_mod[0])
        target_qkv = self._qkv(self.attn1, target_in, rotary_emb)
        reference_qkv = self._qkv(self.attn1_mot_ref, reference_in, reference_rotary)
        joint = dispatch_attention_fn(
            *(torch.cat(pair, dim=1) for pair in zip(target_qkv, reference_qkv)),
            dropout_p=0.0,
            is_causal=False,
            backend=self.attn1.processor._attention_backend,
            parallel_config=self.attn1.processor._parallel_config,
        )
        joint = joint.flatten(2, 3).type_as(target_qkv[0])
        target_out, reference_out = joint.split([hidden_states.shape[1], reference.shape[1]], dim=1)
        hidden_states = self._gated(hidden_states, self._project_out(self.attn1, target_out), target_mod[2])
        reference = self._gated(reference, self._project_out(self.attn1_mot_ref, reference_out), reference_mod[2])

        # 2. Cross-attention: each stream reads its own caption and first-frame CLIP tokens.
        hidden_states = hidden_states + self.attn2(
            self.norm2(hidden_states.float()).type_as(hidden_states), encoder_hidden_states, None, None
        )
        reference = reference + self.attn2_mot_ref(
            self.norm2_mot_ref(reference.float()).type_as(reference), reference_context, None, None
        )

        # 3. Feed-forward, each with its own modulation.
        target_ff = self.ffn(self._modulate(self.norm3, hidden_states, target_mod[4], target_mod[3]))
        hidden_states = self._gated(hidden_states, target_ff.float(), target_mod[5])
        reference_ff = self.ffn_mot_ref(
            self._modulate(self.norm3_mot_ref, reference, reference_mod[4], reference_mod[3])
        )
        reference = self._gated(reference, reference_ff.float(), reference_mod[5])
        return hidden_states, reference

    @staticmethod
    def _modulate(norm: nn.Module, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return (norm(x.float()) * (1 + scale) + shift).type_as(x)

    @staticmethod
    def _gated(x: torch.Tensor, update: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return (x.float() + update * gate).type_as(x)

    @staticmethod
    def _qkv(attn: WanAttention, x: torch.Tensor, rotary: Rotary) -> tuple[torch.Tensor, ...]:
        query = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(attn.to_k(x)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(x).unflatten(2, (attn.heads, -1))
        return rotate(query, rotary), rotate(key, rotary), value

    @staticmethod
    def _project_out(attn: WanAttention, x: torch.Tensor) -> torch.Tensor:
        return attn.to_out[1](attn.to_out[0](x))


class WanTransformer3DMOTModel(WanTransformer3DModel):
    """Wan2.1 I2V transformer with the Video-As-Prompt reference expert; config fields and
    state-dict keys are those of the published checkpoint."""

    _no_split_modules = ["WanTransformerBlock", "ReferenceExpertBlock"]
    _repeated_blocks = ["WanTransformerBlock", "ReferenceExpertBlock"]
    _keep_in_fp32_modules = [
        *WanTransformer3DModel._keep_in_fp32_modules,
        "rope_mot_ref",
        "scale_shift_table_mot_ref",
        "norm1_mot_ref",
        "norm2_mot_ref",
        "norm3_mot_ref",
    ]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        block_idx_with_mot_ref: list[int] = (0, 10, 20),  # type: ignore[assignment]
        attention_head_dim_mot_ref: int | None = None,
        supported_effect_types: list[str] | None = None,
        num_ref_embeddings: int | None = None,
        reference_train_mode: str | None = None,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        expert_head_dim = attention_head_dim_mot_ref or attention_head_dim
        if expert_head_dim != attention_head_dim:
            # Target and reference queries meet in one attention, so their heads must match.
            raise ValueError(
                f"attention_head_dim_mot_ref={attention_head_dim_mot_ref} cannot share self-attention with "
                f"attention_head_dim={attention_head_dim}"
            )
        unknown = sorted(set(block_idx_with_mot_ref) - set(range(num_layers)))
        if unknown:
            raise ValueError(f"block_idx_with_mot_ref names blocks {unknown} of a {num_layers}-block model")
        inner_dim = num_attention_heads * attention_head_dim
        expert_dim = num_attention_heads * expert_head_dim

        self.rope_mot_ref = ReferenceRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len)
        self.patch_embedding_mot_ref = nn.Conv3d(in_channels, expert_dim, kernel_size=patch_size, stride=patch_size)
        self.condition_embedder_mot_ref = WanTimeTextImageEmbedding(
            dim=expert_dim,
            time_freq_dim=freq_dim,
            time_proj_dim=expert_dim * 6,
            text_embed_dim=text_dim,
            image_embed_dim=image_dim,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        for index in sorted(set(block_idx_with_mot_ref)):
            self.blocks[index] = ReferenceExpertBlock(
                inner_dim, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim, expert_dim
            )
        if reference_train_mode == "reference_independent":
            # Trained to also denoise the reference; inference never reads that output, but the
            # checkpoint carries these weights and a strict load needs a place for them.
            self.norm_out_mot_ref = FP32LayerNorm(expert_dim, eps, elementwise_affine=False)
            self.proj_out_mot_ref = nn.Linear(expert_dim, out_channels * math.prod(patch_size))
            self.scale_shift_table_mot_ref = nn.Parameter(torch.randn(1, 2, expert_dim) / expert_dim**0.5)
        # The stream is only needed up to the last block that reads it.
        self._last_expert_block = max(block_idx_with_mot_ref, default=-1)

    @property
    def _cp_plan(self) -> ContextParallelModelPlan:  # type: ignore[override]
        """Where diffusers splits and gathers the sequence: Wan's plan, plus the reference stream
        split where it first enters a block, and its rotary positions split alike."""

        def split_tokens() -> ContextParallelInput:
            return ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)

        def split_rotary() -> dict[int, ContextParallelInput]:
            return {i: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True) for i in (0, 1)}

        inputs: dict[str, dict[str, ContextParallelInput]] = {"blocks.0": {"hidden_states": split_tokens()}}
        if self._last_expert_block >= 0:
            first_expert = min(self.config.block_idx_with_mot_ref)
            inputs.setdefault(f"blocks.{first_expert}", {})["reference"] = split_tokens()
        return {
            "rope": split_rotary(),
            "rope_mot_ref": split_rotary(),
            **inputs,
            "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
        }

    @apply_lora_scale("attention_kwargs")
    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor,
        reference_hidden_states: torch.Tensor,
        reference_timestep: torch.Tensor,
        reference_encoder_hidden_states: torch.Tensor,
        reference_encoder_hidden_states_image: torch.Tensor,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor | Transformer2DModelOutput:
        """The target's velocity; the reference stream (same 36-channel layout as the target
        input, its own timestep, caption and CLIP tokens) only conditions it."""
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size

        rotary = self.rope(hidden_states)
        reference_rotary = self.rope_mot_ref(reference_hidden_states)
        hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
        reference = self.patch_embedding_mot_ref(reference_hidden_states).flatten(2).transpose(1, 2).contiguous()

        temb, timestep_proj, context, context_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image
        )
        _, reference_proj, reference_context, reference_image = self.condition_embedder_mot_ref(
            reference_timestep, reference_encoder_hidden_states, reference_encoder_hidden_states_image
        )
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        reference_proj = reference_proj.unflatten(1, (6, -1))
        context = torch.cat([context_image, context], dim=1)
        reference_context = torch.cat([reference_image, reference_context], dim=1)

        for index, block in enumerate(self.blocks):
            if isinstance(block, ReferenceExpertBlock):
                hidden_states, reference = block(
                    hidden_states,
                    context,
                    timestep_proj,
                    rotary,
                    reference,
                    reference_context,
                    reference_proj,
                    reference_rotary,
                )
                if index == self._last_expert_block:
                    del reference
            else:
                hidden_states = block(hidden_states, context, timestep_proj, rotary)

        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(
            batch_size, num_frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1
        )
        output = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)


def load_transformer(location: str, dtype: torch.dtype, subfolder: str | None = "transformer") -> WanTransformer3DMOTModel:
    """The transformer of ``location`` (a repo id or a directory), refusing any checkpoint whose
    keys are not exactly the model's: a missing expert weight would otherwise be silently
    random-initialised, and an extra one silently ignored."""
    model, info = WanTransformer3DMOTModel.from_pretrained(
        location, subfolder=subfolder, dtype=dtype, output_loading_info=True
    )
    problems = {name: sorted(info[name]) for name in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {name: keys for name, keys in problems.items() if keys}
    if problems:
        listed = "; ".join(f"{name}: {', '.join(map(str, keys[:8]))}" for name, keys in problems.items())
        raise ValueError(f"{location} does not match the Video-As-Prompt transformer's layout ({listed})")
    return model.eval()
