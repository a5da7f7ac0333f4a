"""Running bucketrt exports with ONNX Runtime beyond a single forward pass (generation)."""

from .causal_lm import greedy_generate

__all__ = ["greedy_generate"]
