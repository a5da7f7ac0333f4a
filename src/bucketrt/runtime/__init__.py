"""Running bucketrt exports with ONNX Runtime beyond a single forward pass (generation)."""

from .generate import Seq2SeqGenerator

__all__ = ["Seq2SeqGenerator"]
