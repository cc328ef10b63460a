"""Model weights: where each Hugging Face repo comes from under the "tiny" and "full" presets."""
