"""Running bucketrt exports with ONNX Runtime beyond a single forward pass (generation)."""

from .causal_lm import greedy_generate
from .generate import Seq2SeqGenerator

__all__ = ["Seq2SeqGenerator", "greedy_generate"]
