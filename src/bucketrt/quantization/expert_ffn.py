"""Mixture-of-experts layers in int8: every ExpertFFN node (Switch) becomes an ExpertFFNInt8 node,
every TopKExperts node (the top-k MoE exports: Mixtral, Qwen-MoE, GPT-OSS, ...) a TopKExpertsInt8 one.

onnxruntime.quantization quantizes MatMul and Gemm, but the experts' weights (most of an MoE
model's work) are inputs of bucketrt's expert ops, which it does not know. This rewrite gives
them the same treatment ORT gives a MatMul's weights with QInt8 and per_channel: symmetric int8,
one scale per output channel (row of nn.Linear's [out, in] layout) and per expert, and the
activations quantized per token row at run time by the op (the catalogue's EXPERT_FFN_INT8 and
TOPK_EXPERTS_INT8). TopKExperts' biases stay float: they add to the dequantized sums.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bucketrt.errors import BucketrtError
from bucketrt.ops.catalogue import EXPERT_FFN, EXPERT_FFN_INT8, TOPK_EXPERTS, TOPK_EXPERTS_INT8
from bucketrt.ops.schema import DOMAIN

WEIGHT_TYPES = ("int8",)
# Each float expert op, its int8 op and the weights the rewrite quantizes: the int8 op takes the
# float op's inputs by name, each quantized weight as its int8 codes and `<weight>_scale`.
INT8_EXPERT_OPS = {
    EXPERT_FFN.name: (EXPERT_FFN, EXPERT_FFN_INT8, ("wi", "wo")),
    TOPK_EXPERTS.name: (TOPK_EXPERTS, TOPK_EXPERTS_INT8, ("gate_up", "down")),
}


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
    """Rewrites, in place, every ExpertFFN and TopKExperts node of the main graph whose weights (wi
    and wo; gate_up and down) are float32 initializers into its int8 op (INT8_EXPERT_OPS) with int8
    initializers and their scales; returns the names of the rewritten nodes (others are left alone:
    weights computed in the graph, float16 exports). The float initializers go once no node reads them."""
    if weight_type not in WEIGHT_TYPES:
        raise BucketrtError(
            f"expert weights cannot be quantized to {weight_type!r}: the int8 expert ops "
            f"({', '.join(int8.name for _, int8, _ in INT8_EXPERT_OPS.values())}) take int8 weights "
            "(uint8 activations times int8 weights is the product VNNI and AMX compute)",
            hint="use weight_type 'int8' for the experts",
        )
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    rewritten: list[str] = []
    replaced: set[str] = set()
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type not in INT8_EXPERT_OPS:
            continue
        spec, int8_spec, weight_names = INT8_EXPERT_OPS[node.op_type]
        if len(node.input) != len(spec.inputs):
            continue
        by_name = {t.name: value for t, value in zip(spec.inputs, node.input)}
        weights = [initializers.get(by_name[name]) for name in weight_names]
        if any(w is None or w.data_type != onnx.TensorProto.FLOAT for w in weights):
            continue
        taken = {t.name for t in graph.initializer}
        for name, tensor in zip(weight_names, weights):
            codes, scale = quantize_weights(numpy_helper.to_array(tensor), per_channel=per_channel)
            for key, suffix, array in ((name, "int8", codes), (f"{name}_scale", "scale", scale)):
                by_name[key] = _fresh(f"{tensor.name}_{suffix}", taken)
                graph.initializer.append(numpy_helper.from_array(array, by_name[key]))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {
            a.name: attrs[a.name].decode() if isinstance(attrs[a.name], bytes) else attrs[a.name]
            for a in int8_spec.attributes
            if a.name in attrs
        }
        replacement = helper.make_node(
            int8_spec.name,
            [by_name[t.name] for t in int8_spec.inputs],
            list(node.output),
            name=node.name,
            domain=DOMAIN,
            **int8_spec.node_attributes(attrs),
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
