"""Serving bucketrt exports on NVIDIA Triton Inference Server: model repositories (`bucketrt triton`)."""

from .repository import BACKENDS, KINDS, ModelEntry, TensorSpec, build_config, config_text, write_repository

__all__ = ["BACKENDS", "KINDS", "ModelEntry", "TensorSpec", "build_config", "config_text", "write_repository"]
