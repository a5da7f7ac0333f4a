"""Single-node ONNX models built straight from an op's spec.

The kernel tests and the benchmarks run them (bucketrt.library.run_op) to reach a native kernel
without an exporter:

    >>> from bucketrt.library import run_op
    >>> (hash,) = run_op(SIGN_HASH, {"mask": mask, "vector": x, "projection": p}, {"num_hash": 4, "hash_code_len": 8})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from .schema import FLOAT, OpSpec

OPSET = 20
# onnxruntime 1.31 refuses the IR version that onnx 1.23 writes by default (14).
IR_VERSION = 10

Shape = Sequence["int | str | None"]


def _elem_type(dtype: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _value_info(name: str, dtype: str, shape: Shape | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _elem_type(dtype), None if shape is None else list(shape))


def single_op_model(
    spec: OpSpec,
    attrs: Mapping[str, object],
    inputs: Mapping[str, tuple[str, Shape | None]] | None = None,
    *,
    opset: int = OPSET,
    ir_version: int = IR_VERSION,
) -> onnx.ModelProto:
    """A model with one `spec` node whose graph inputs/outputs are named after the spec's.

    `attrs` go onto the node as given (no defaults filled, nothing checked, so that bad attributes
    reach the kernel), with the routing attributes every emitter adds (`OpSpec.node_attributes`).
    `inputs` overrides an input's (dtype, shape); otherwise its dtype is the spec's (float tensors:
    the op's float type, which the overridden inputs fix, float32 by default) and its dims are the
    spec's symbols. Output dims are symbols, except those named like an
    int attribute, which take its value.
    """
    inputs = dict(inputs or {})
    unknown = set(inputs) - {t.name for t in spec.inputs}
    if unknown:
        raise ValueError(f"{spec.name}: no input(s) named {sorted(unknown)}")
    # The op's float type T: what the overridden inputs say (float32 by default).
    given = [inputs[t.name][0] for t in spec.inputs if t.dtype == FLOAT and t.name in inputs]
    float_type = next((d for d in given if d in spec.float_types), spec.float_types[0])
    graph_inputs = []
    for t in spec.inputs:
        dtype, shape = inputs.get(t.name, (t.concrete_dtype(float_type), t.dims))
        graph_inputs.append(_value_info(t.name, dtype, shape))
    int_attrs = {k: v for k, v in attrs.items() if isinstance(v, int) and not isinstance(v, bool)}
    graph_outputs = [
        _value_info(t.name, t.concrete_dtype(float_type), [int_attrs.get(d, d) for d in t.dims]) for t in spec.outputs
    ]
    node = helper.make_node(
        spec.name,
        [t.name for t in spec.inputs],
        [t.name for t in spec.outputs],
        name=spec.name,
        domain=spec.domain,
        **spec.node_attributes(dict(attrs)),
    )
    graph = helper.make_graph([node], f"{spec.name}_single", graph_inputs, graph_outputs)
    return helper.make_model(
        graph,
        producer_name="bucketrt",
        ir_version=ir_version,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(spec.domain, spec.version)],
    )


__all__ = ["IR_VERSION", "OPSET", "single_op_model"]
