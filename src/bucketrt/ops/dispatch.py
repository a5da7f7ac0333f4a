"""How model code reaches an op: `call` runs its PyTorch reference when eager and emits a
`bucketrt::<Op>` node when exporting (or, under `standard_ops`, its standard-op lowering);
`intercept` lets a check see (and replace) eager results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .lowering import LOWERINGS
from .reference import REFERENCES
from .schema import OpSpec

__all__ = ["call", "intercept", "lowering_ops", "standard_ops"]

_TORCH_DTYPES = {"int32": torch.int32, "float32": torch.float32, "float16": torch.float16}
_DTYPE_NAMES = {v: k for k, v in _TORCH_DTYPES.items()}

# (spec, inputs, attrs, result) -> result; see `intercept`.
Interceptor = Callable[[OpSpec, tuple, dict, torch.Tensor], torch.Tensor]
_interceptors: list[Interceptor] = []
_standard_ops: list[bool] = []


@contextmanager
def standard_ops() -> Iterator[None]:
    """Within the block, an export traces each op's standard-op lowering (lowering.py) instead of
    emitting a `bucketrt::<Op>` node: the graph needs no bucketrt library to run."""
    _standard_ops.append(True)
    try:
        yield
    finally:
        _standard_ops.pop()


def lowering_ops() -> bool:
    """Whether `call` traces standard-op lowerings now (inside `standard_ops`): model code that has
    a cheaper standard formulation of its own may take it there."""
    return bool(_standard_ops)


@contextmanager
def intercept(fn: Interceptor) -> Iterator[None]:
    """Within the block, every eager op result passes through `fn`, which may replace it.

    Cross-backend checks use this to run the PyTorch reference on another backend's hash codes.
    """
    _interceptors.append(fn)
    try:
        yield
    finally:
        _interceptors.remove(fn)


def call(spec: OpSpec, *inputs: torch.Tensor, **attrs):
    """Runs an op: the PyTorch reference when eager, a `bucketrt::<Op>` node when exporting.

    This is the only way model code reaches an op, so exported graphs and eager runs agree by
    construction on inputs, attributes and output shapes.
    """
    attrs = spec.resolve_attributes(attrs)
    if not torch.onnx.is_in_onnx_export():
        result = REFERENCES[spec.name](*inputs, **attrs)
        for fn in _interceptors:
            result = fn(spec, inputs, attrs, result)
        return result
    if _standard_ops:
        if spec.name not in LOWERINGS:
            raise NotImplementedError(f"{spec.name} has no standard-op lowering yet (bucketrt.ops.lowering)")
        return LOWERINGS[spec.name](*inputs, **attrs)
    # Output dims come from the first input that carries each symbol, or from an attribute.
    env: dict = {k: v for k, v in attrs.items() if isinstance(v, int)}
    for tensor, tspec in zip(inputs, spec.inputs):
        for sym, size in zip(tspec.dims, tensor.shape):
            env.setdefault(sym, size)
    # Output dtypes follow the op's float type T, which the inputs fix.
    names = [_DTYPE_NAMES.get(t.dtype, str(t.dtype)) for t in inputs]
    dtypes = [_TORCH_DTYPES[dtype] for dtype in spec.output_dtypes(names)]
    shapes = [[env[d] for d in out.dims] for out in spec.outputs]
    node_attrs = spec.node_attributes(attrs)  # with plugin_version/plugin_namespace for TensorRT
    if len(spec.outputs) == 1:
        return torch.onnx.ops.symbolic(
            f"{spec.domain}::{spec.name}",
            list(inputs),
            node_attrs,
            dtype=dtypes[0],
            shape=shapes[0],
            version=spec.version,
        )
    # One node with every output (not one node per output: the op computes them together).
    return tuple(
        torch.onnx.ops.symbolic_multi_out(
            f"{spec.domain}::{spec.name}", list(inputs), node_attrs, dtypes=dtypes, shapes=shapes, version=spec.version
        )
    )
