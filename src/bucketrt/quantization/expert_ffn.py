"""Switch's experts in int8: every ExpertFFN node becomes an ExpertFFNInt8 node.

onnxruntime.quantization quantizes MatMul and Gemm, but the experts' weights (most of a Switch
encoder's work) are inputs of bucketrt's ExpertFFN, which it does not know. This rewrite gives
them the same treatment ORT gives a MatMul's weights with QInt8 and per_channel: symmetric int8,
one scale per output channel (row of nn.Linear's [out, in] layout) and per expert, and the
activations quantized per token row at run time by the op (the catalogue's EXPERT_FFN_INT8).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bucketrt.errors import BucketrtError
from bucketrt.ops.catalogue import EXPERT_FFN, EXPERT_FFN_INT8
from bucketrt.ops.schema import DOMAIN

WEIGHT_TYPES = ("int8",)


def quantize_weights(w: np.ndarray, *, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes of stacked expert weights w [E, N, K] and their float32 scales [E, N]:
    one per output channel (per_channel) or one per expert, repeated over its channels. Codes lie in
    [-127, 127]; a channel of zeros gets scale 1."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=2) if per_channel else np.broadcast_to(np.abs(w).max(axis=(1, 2))[:, None], w.shape[:2])
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(w / scale[:, :, None]), -127, 127).astype(np.int8)
    return codes, np.ascontiguousarray(scale)


def quantize_expert_ffn(model: onnx.ModelProto, *, per_channel: bool = True, weight_type: str = "int8") -> list[str]:
    """Rewrites, in place, every ExpertFFN node of the main graph whose wi and wo are float32
    initializers into ExpertFFNInt8 with int8 initializers and their scales; returns the names of
    the rewritten nodes (others are left alone: weights computed in the graph, float16 exports).
    The float initializers go once no node reads them."""
    if weight_type not in WEIGHT_TYPES:
        raise BucketrtError(
            f"ExpertFFN weights cannot be quantized to {weight_type!r}: ExpertFFNInt8 takes int8 weights "
            "(uint8 activations times int8 weights is the product VNNI and AMX compute)",
            hint="use weight_type 'int8' for the experts",
        )
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    wi_index, wo_index = (i for i, t in enumerate(EXPERT_FFN.inputs) if t.name in ("wi", "wo"))
    rewritten: list[str] = []
    replaced: set[str] = set()
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type != EXPERT_FFN.name or len(node.input) != len(EXPERT_FFN.inputs):
            continue
        weights = [initializers.get(node.input[i]) for i in (wi_index, wo_index)]
        if any(w is None or w.data_type != onnx.TensorProto.FLOAT for w in weights):
            continue
        new_inputs = list(node.input[:wi_index])
        taken = {t.name for t in graph.initializer}
        for tensor in weights:
            codes, scale = quantize_weights(numpy_helper.to_array(tensor), per_channel=per_channel)
            for suffix, array in (("int8", codes), ("scale", scale)):
                name = _fresh(f"{tensor.name}_{suffix}", taken)
                graph.initializer.append(numpy_helper.from_array(array, name))
                new_inputs.append(name)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        activation = attrs.get("activation", EXPERT_FFN.attribute("activation").default)
        if isinstance(activation, bytes):
            activation = activation.decode()
        replacement = helper.make_node(
            EXPERT_FFN_INT8.name,
            new_inputs,
            list(node.output),
            name=node.name,
            domain=DOMAIN,
            **EXPERT_FFN_INT8.node_attributes({"activation": activation}),
        )
        replaced.update(t.name for t in weights)
        rewritten.append(node.name)
        node.CopyFrom(replacement)
    _drop_unread(graph, replaced)
    return rewritten


def _fresh(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _drop_unread(graph: onnx.GraphProto, replaced: set[str]) -> None:
    """Removes the replaced float weights that nothing reads any more (no node, graph output or subgraph)."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    gone = replaced - read - _subgraph_inputs(graph)
    if not gone:
        return
    kept = [t for t in graph.initializer if t.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Older IRs list initializers among the graph's inputs too.
    inputs = [i for i in graph.input if i.name not in gone]
    del graph.input[:]
    graph.input.extend(inputs)


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                for inner in sub.node:
                    names.update(inner.input)
                names |= _subgraph_inputs(sub)
    return names
