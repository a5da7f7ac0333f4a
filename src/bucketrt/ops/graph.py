"""Single-node ONNX models built straight from an op's spec, and a helper that runs one in ONNX Runtime.

The kernel tests and the benchmarks use these to reach a native kernel without an exporter:

    >>> from bucketrt.ops.graph import run_op
    >>> (hash,) = run_op(SIGN_HASH, {"mask": mask, "vector": x, "projection": p}, {"num_hash": 4, "hash_code_len": 8})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from .spec import FLOAT, OpSpec

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


def op_session(
    spec: OpSpec,
    attrs: Mapping[str, object],
    inputs: Mapping[str, tuple[str, Shape | None]] | None = None,
    providers: Sequence[str] | None = None,
    intra_op_num_threads: int | None = None,
):
    """An onnxruntime.InferenceSession over `single_op_model(spec, attrs, inputs)` with bucketrt's ops."""
    import onnxruntime as ort

    import bucketrt

    model = single_op_model(spec, attrs, inputs)
    return ort.InferenceSession(
        model.SerializeToString(),
        sess_options=bucketrt.session_options(intra_op_num_threads),
        providers=list(providers or ["CPUExecutionProvider"]),
    )


def run_op(
    spec: OpSpec,
    inputs: Mapping[str, np.ndarray],
    attrs: Mapping[str, object],
    providers: Sequence[str] | None = None,
    intra_op_num_threads: int | None = None,
) -> list[np.ndarray]:
    """Runs `spec` once on numpy `inputs` (by input name) through ONNX Runtime; returns its outputs.

    The graph declares each input with the array's own dtype and shape, so that whatever is wrong
    with them reaches the kernel's checks rather than ORT's input feeding.
    """
    missing = [t.name for t in spec.inputs if t.name not in inputs]
    if missing:
        raise ValueError(f"{spec.name}: missing input(s) {missing}")
    arrays = {name: np.asarray(a) for name, a in inputs.items()}
    meta = {name: (str(a.dtype), list(a.shape)) for name, a in arrays.items()}
    session = op_session(spec, attrs, meta, providers, intra_op_num_threads)
    return session.run(None, arrays)


__all__ = ["IR_VERSION", "OPSET", "op_session", "run_op", "single_op_model"]
