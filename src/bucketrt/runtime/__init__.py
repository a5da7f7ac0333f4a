"""Small runtime helpers over ONNX Runtime sessions of bucketrt exports."""

from .generate import greedy_generate

__all__ = ["greedy_generate"]
