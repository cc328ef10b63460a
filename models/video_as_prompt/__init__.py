"""Video-As-Prompt's Mixture-of-Transformers model, written on diffusers' Wan building blocks."""

from models.video_as_prompt.transformer import WanTransformer3DMOTModel, load_transformer

__all__ = ["WanTransformer3DMOTModel", "load_transformer"]
