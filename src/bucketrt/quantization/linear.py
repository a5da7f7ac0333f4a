"""The linear layers of a model that decodes step by step, in int8 through bucketrt's LinearInt8.

A decoding step runs each linear layer on a row or a few: the work is reading the weights, once
each step. ONNX Runtime's int8 MatMul (what quantize_dynamic writes) streams them at a fraction of
the memory's speed there (docs/benchmarks.md: the int8 GPT-OSS's LM head, 33 MB at about 20 GB/s),
where LinearInt8 reads them through the int8 experts' kernel, from huge pages. So in a component
that takes a key/value cache (`past_key_values.*` inputs) and already calls bucketrt's ops (the
caller's test: a standard-op export stays standard), every MatMul with a constant float32
weight and a [batch, length, in] input becomes a LinearInt8 node: symmetric int8 weights with one
scale per output channel (or one per layer), as the experts' (`expert_ffn.quantize_weights`), and
the bias folded in where the MatMul's only reader adds one. The other components, and the linear
layers of another form, go through quantize_dynamic as before.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bucketrt.ops.catalogue import LINEAR_INT8
from bucketrt.ops.schema import DOMAIN

from .expert_ffn import _drop_unread, _fresh, quantize_weights

CACHE_PREFIX = "past_key_values."


def decodes_with_cache(model: onnx.ModelProto) -> bool:
    """Whether the graph takes a key/value cache: a decoder's step-by-step component."""
    return any(i.name.startswith(CACHE_PREFIX) for i in model.graph.input)


def _rank(model: onnx.ModelProto, name: str) -> int | None:
    for info in (*model.graph.value_info, *model.graph.input):
        if info.name == name and info.type.tensor_type.HasField("shape"):
            return len(info.type.tensor_type.shape.dim)
    return None


def int8_linear_nodes(model: onnx.ModelProto, candidates) -> list[str]:
    """Of the named MatMul/Gemm nodes, those LinearInt8 takes, in graph order: a MatMul whose weight
    (second input) is a float32 [in, out] initializer and whose input is known to be of rank 3."""
    wanted = set(candidates)
    weights = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.name not in wanted or node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        w = weights.get(node.input[1])
        if w is None or w.data_type != onnx.TensorProto.FLOAT or len(w.dims) != 2:
            continue
        if _rank(model, node.input[0]) == 3:
            out.append(node.name)
    return out


def _fold_bias(node, graph, initializers, readers, outputs) -> tuple[str | None, str, onnx.NodeProto | None]:
    """(bias initializer, the layer's output, the Add to remove) where the MatMul's output is read by
    one Add alone (not a graph output) whose other input is a float32 [out] initializer; else (None,
    the MatMul's output, None)."""
    output = node.output[0]
    width = initializers[node.input[1]].dims[1]
    reads = readers.get(output, [])
    if output in outputs or len(reads) != 1 or reads[0].op_type != "Add" or reads[0].domain not in ("", "ai.onnx"):
        return None, output, None
    add = reads[0]
    other = add.input[1] if add.input[0] == output else add.input[0]
    bias = initializers.get(other)
    if bias is None or bias.data_type != onnx.TensorProto.FLOAT or list(bias.dims) != [width]:
        return None, output, None
    return other, add.output[0], add


def quantize_linear_layers(model: onnx.ModelProto, names, *, per_channel: bool = True) -> list[str]:
    """Rewrites, in place, the named MatMul nodes (int8_linear_nodes' choice) into LinearInt8 nodes,
    with int8 weights and their scales; a bias is folded in where the MatMul's output is read by one
    Add alone (not a graph output) whose other input is a float32 [out] initializer. Layers that read
    the same input (an attention's q, k and v projections) become one LinearInt8 node over their
    weights side by side and a Split: the row is quantized once and the weights read in one pass,
    with the same bits as apart (each output is its own row's sums). A lone layer's node keeps the
    MatMul's name; a group's is named after its first layer, with "+" and the others' names.
    Returns the rewritten layers' names, in graph order."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    taken = set(initializers)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    wanted = set(names)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    groups: dict[str, list[onnx.NodeProto]] = {}  # the layers by the input they read, in graph order
    for node in graph.node:
        if node.name in wanted:
            # Split takes its sizes as an input from opset 13; before, each layer stays alone.
            groups.setdefault(node.input[0] if opset >= 13 else node.name, []).append(node)
    rewritten, replaced, removed = [], set(), []
    for members in groups.values():
        codes, scales, biases, layer_outputs = [], [], [], []
        for node in members:
            tensor = initializers[node.input[1]]
            weight = numpy_helper.to_array(tensor).T  # MatMul's [in, out] as nn.Linear's [out, in]
            code, scale = quantize_weights(weight[None], per_channel=per_channel)
            bias_name, output, add = _fold_bias(node, graph, initializers, readers, outputs)
            bias = (
                np.zeros(weight.shape[0], np.float32)
                if bias_name is None
                else numpy_helper.to_array(initializers[bias_name])
            )
            codes.append(code[0])
            scales.append(scale[0])
            biases.append((bias_name, bias))
            layer_outputs.append(output)
            replaced.add(tensor.name)
            if add is not None:
                removed.append(add)
        first = members[0]
        stem = initializers[first.input[1]].name
        if len(members) == 1 and biases[0][0] is not None:
            bias_name = biases[0][0]
        else:
            bias_name = _fresh(f"{stem}_bias", taken)
            graph.initializer.append(numpy_helper.from_array(np.concatenate([b for _, b in biases]), bias_name))
        codes_name, scale_name = _fresh(f"{stem}_int8", taken), _fresh(f"{stem}_scale", taken)
        graph.initializer.append(numpy_helper.from_array(np.concatenate(codes), codes_name))
        graph.initializer.append(numpy_helper.from_array(np.concatenate(scales), scale_name))
        node_name = "+".join(n.name for n in members)
        joined = layer_outputs[0] if len(members) == 1 else _fresh(f"{node_name}_out", taken)
        linear = helper.make_node(
            LINEAR_INT8.name,
            [first.input[0], codes_name, scale_name, bias_name],
            [joined],
            name=node_name,
            domain=DOMAIN,
            **LINEAR_INT8.node_attributes({}),
        )
        position = list(graph.node).index(first)
        graph.node.insert(position, linear)
        if len(members) > 1:
            widths = _fresh(f"{node_name}_widths", taken)
            graph.initializer.append(numpy_helper.from_array(np.array([c.shape[0] for c in codes], np.int64), widths))
            split = helper.make_node("Split", [joined, widths], layer_outputs, name=f"{node_name}_split", axis=-1)
            graph.node.insert(position + 1, split)
        removed.extend(members)
        rewritten.extend(n.name for n in members)
    for node in removed:
        graph.node.remove(node)
    _drop_unread(graph, replaced)
    order = {name: i for i, name in enumerate(names)}
    return sorted(rewritten, key=lambda name: order[name])
