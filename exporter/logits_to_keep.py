"""An optional `logits_to_keep` input for a causal LM's step: the LM head over the last positions only.

Generation reads the last position's logits; a prompt's step computed them at every position, and
at a mid-size vocabulary (32k) the LM head is the largest single matmul of a long prefill (two
thirds of the dense work of mixtral-mid's 1024-token prompt) and its logits the largest tensor
([batch, prompt, vocab]). transformers' forward takes `logits_to_keep` for this (its greedy
`generate` passes 1), with the same meaning as here: the logits of the last `logits_to_keep`
positions, every position at 0.

The input is an initializer of value 0 that is also a graph input (ONNX IR 4 and later), so that
a consumer that does not feed it (Optimum's convention, `bucketrt check`, Triton configurations,
TensorRT, which reads it as the constant 0) gets every position, as before; ONNX Runtime lists it
among the session's overridable initializers, and bucketrt's generation loop feeds 1 to the
prompt's step.

It is added to the traced graph rather than traced: a slice by a value fed at run time is a
data-dependent shape, which torch.export can only carry as an unbacked size.

Where the last decoder layer's attention is a MaskedAttention node (the MoE exports), the slice goes
further up, as llama.cpp does with its output rows: the kept positions are the only queries of the
last layer's attention, and the residual stream is cut to them there, so that its output
projection, its MLP (the experts) and the final norm run over the kept positions alone. Only the
keys and values of every position are needed from the last layer (the cache), and those come
before its attention. Everything between that attention and the head must compute each position on
its own (the ops below, each checked); where anything else is found the slice stays before the
head. With every position (0, not fed) the graph computes what it did; with fewer, the last
layer's products have fewer rows, which can change their float rounding (not their semantics).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from bucketrt.ops.catalogue import MASKED_ATTENTION, TOPK_EXPERTS, TOPK_EXPERTS_INT8
from bucketrt.ops.schema import DOMAIN
from bucketrt.runtime.decoding import LOGITS_TO_KEEP as NAME  # the name the generation loop feeds

KEPT = "kept_positions"  # the symbolic dim of the kept positions

# Between the LM head's matmul and the logits output, transformers' heads only scale, soft-cap or
# cast each logit (Granite's division by logits_scaling, Gemma-style tanh capping): ops that map
# every position on its own, so that slicing before the matmul slices the logits.
_ELEMENTWISE = {"Mul", "Div", "Add", "Sub", "Tanh", "Cast", "Identity"}


def _lm_head(logits):
    """The MatMul node whose output becomes `logits` through elementwise ops only, or None."""
    value = logits
    while True:
        node = value.producer()
        if node is None:
            return None
        if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
            return node
        if node.op_type not in _ELEMENTWISE or node.domain not in ("", "ai.onnx"):
            return None
        # The one input that varies by position (the others are constants: scales, caps).
        varying = [v for v in node.inputs if v is not None and not _constant(v)]
        if len(varying) != 1:
            return None
        value = varying[0]


# Ops that compute each position on its own, whatever the other rows are: elementwise ones (their
# other inputs constants or position-free, broadcast), those that read only the last axis (checked
# per node), MatMul and Gemm by a constant, Reshape (its shape rebuilt where computed), and
# bucketrt's per-token expert ops.
_POINTWISE = _ELEMENTWISE | {
    "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Erf", "Sigmoid", "Relu", "Softplus",
    "Max", "Min", "Clip", "Where", "Equal", "Less", "Greater", "Not", "And", "Or",
}  # fmt: skip
# Ops along one axis, with the default where the attribute may be left out (Concat's is required):
# per position where that axis is the last.
_ALONG_AXIS = {"Softmax": -1, "LogSoftmax": -1, "TopK": -1, "LayerNormalization": -1, "RMSNormalization": -1,
               "ArgMax": 0, "ArgMin": 0, "GatherElements": 0, "ScatterElements": 0, "Concat": None}  # fmt: skip
# Shapes read from the region's own values, and tensors made of them, follow its rows.
_SHAPE_FOLLOWING = {"Shape", "ConstantOfShape"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare"}
_PER_TOKEN = {TOPK_EXPERTS.name, TOPK_EXPERTS_INT8.name}
# MaskedAttention's inputs: query [B, H, S, D] and mask [B, S, T] are cut on their query axis; the
# keys, values and sinks are every position's.
_ATTENTION_QUERY_AXES = {0: 2, 3: 1}


def _constant(value) -> bool:
    producer = value.producer()
    return (
        value.const_value is not None
        or value.is_initializer()
        or (producer is not None and producer.op_type == "Constant")
    )


def _last_axis_only(node) -> bool:
    """Whether `node` (a reduction or an op of _ALONG_AXIS) works along its input's last axis only."""
    shape = node.inputs[0].shape
    if shape is None:
        return False
    rank = len(shape)
    if node.op_type in _REDUCE:
        attr = node.attributes.get("axes")
        if attr is not None:
            axes = list(attr.as_ints())
        elif len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].const_value is not None:
            axes = node.inputs[1].const_value.numpy().reshape(-1).tolist()
        else:
            return False  # every axis
        return bool(axes) and all(a % rank == rank - 1 for a in axes)
    attr = node.attributes.get("axis")
    axis = attr.as_int() if attr is not None else _ALONG_AXIS[node.op_type]
    return axis is not None and axis % rank == rank - 1


def _pointwise(node, seq: str, region: set) -> bool:
    """Whether `node` computes each position (row) of its region input on its own; `seq` is the
    sequence length's symbol, `region` the nodes being cut."""
    op = node.op_type
    if node.domain == DOMAIN:
        return op in _PER_TOKEN
    if node.domain not in ("", "ai.onnx"):
        return False
    if op in _POINTWISE or op in _SHAPE_FOLLOWING or op == "Reshape":
        return True
    if op == "MatMul":
        return _constant(node.inputs[1])
    if op == "Gemm":
        trans_a = node.attributes.get("transA")
        return (trans_a is None or trans_a.as_int() == 0) and _constant(node.inputs[1])
    if op in _REDUCE or op in _ALONG_AXIS:
        return _last_axis_only(node)
    if op in ("Unsqueeze", "Squeeze"):  # a trailing axis only
        data, axes = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        if data.shape is None or axes is None or axes.const_value is None:
            return False
        rank = len(data.shape) + (1 if op == "Unsqueeze" else 0)
        return all(a % rank == rank - 1 for a in axes.const_value.numpy().reshape(-1).tolist())
    if op == "Expand":  # to a shape of the region's own, or a constant one that keeps the rows
        data, shape = node.inputs
        if shape.producer() in region:
            return True
        if shape.const_value is None or data.shape is None:
            return False
        target = shape.const_value.numpy().reshape(-1).tolist()
        if len(target) > len(data.shape):
            return False
        aligned = zip(reversed(data.shape), reversed(target))
        return all(t == 1 for d, t in aligned if _mentions(d, seq))
    return False


def _mentions(dim, symbol: str) -> bool:
    return not isinstance(dim, int) and re.search(rf"\b{re.escape(symbol)}\b", str(dim)) is not None


@dataclasses.dataclass
class _Cut:
    """Where the last layer's attention and what follows it can run over the kept positions only:
    the region's nodes in graph order, the values to slice and their uses, and the Reshapes whose
    computed shape named the sequence length."""

    region: list
    slices: dict = dataclasses.field(default_factory=dict)  # (value, axis) -> [(node, input index)]
    reshapes: list = dataclasses.field(default_factory=list)


def _find_cut(graph, head, seq: str):
    """The cut for `head`'s input (the final hidden states, sequence symbol `seq`), or None where the
    graph has no MaskedAttention or something between its last one and the head is not per position."""
    import onnx_ir as ir

    nodes = list(graph)
    attentions = [n for n in nodes if n.domain == DOMAIN and n.op_type == MASKED_ATTENTION.name]
    if not attentions:
        return None
    root, hidden = attentions[-1], head.inputs[0]
    ancestors, stack = set(), [hidden.producer()]
    while stack:
        node = stack.pop()
        if node is None or node in ancestors:
            continue
        ancestors.add(node)
        stack.extend(v.producer() for v in node.inputs if v is not None)
    if root not in ancestors:
        return None
    # The region: the attention and every node after it on the way to the head. None of its values
    # may be read elsewhere (a graph output, another head), but the head's input by the head.
    region, stack = {root}, [root]
    while stack:
        node = stack.pop()
        for value in node.outputs:
            if value.is_graph_output():
                return None
            for use in value.uses():
                if value is hidden and use.node is head:
                    continue
                if use.node not in ancestors:
                    return None
                if use.node not in region:
                    region.add(use.node)
                    stack.append(use.node)
    cut = _Cut(region=[n for n in nodes if n in region])
    for node in cut.region:
        if node is not root and not _pointwise(node, seq, region):
            return None
        for index, value in enumerate(node.inputs):
            if value is None or value.producer() in region or _constant(value):
                continue
            if node is root:
                if index in _ATTENTION_QUERY_AXES:
                    cut.slices.setdefault((value, _ATTENTION_QUERY_AXES[index]), []).append((node, index))
                continue  # keys, values, sinks
            if node.op_type == "Reshape" and index == 1:
                cut.reshapes.append(node)
                continue
            if value.shape is None:
                return None
            axes = [i for i, d in enumerate(value.shape) if _mentions(d, seq)]
            if not axes:
                # The same for every position (broadcast), but for a computed shape or index,
                # which could hold the sequence length.
                if value.dtype in (ir.DataType.INT64, ir.DataType.INT32) and len(value.shape) <= 1:
                    return None
                continue
            if len(axes) != 1 or str(value.shape[axes[0]]) != seq:
                return None
            cut.slices.setdefault((value, axes[0]), []).append((node, index))
    return cut


def _hoist(graph, head, start, end, constant) -> bool:
    """Cuts the last layer at its attention (module docstring); True when done."""
    import onnx_ir as ir

    hidden = head.inputs[0]
    if hidden.shape is None or len(hidden.shape) != 3 or isinstance(hidden.shape[1], int):
        return False
    seq = str(hidden.shape[1])
    cut = _find_cut(graph, head, seq)
    if cut is None:
        return False
    # Each computed Reshape shape again, the sequence length as -1 and each other symbolic dim read
    # from a graph input that carries it.
    shapes = {}
    for node in cut.reshapes:
        out = node.outputs[0].shape
        if out is None or sum(_mentions(d, seq) for d in out) > 1:
            return False
        pieces = []
        for dim in out:
            if isinstance(dim, int) or _mentions(dim, seq):
                pieces.append(("const", dim if isinstance(dim, int) else -1))
                continue
            carrier = next(
                (
                    (v, j)
                    for v in graph.inputs
                    if v.shape is not None
                    for j, d in enumerate(v.shape)
                    if str(d) == str(dim)
                ),
                None,
            )
            if carrier is None:
                return False
            pieces.append(("input", carrier))
        shapes[node] = pieces
    order = {n: i for i, n in enumerate(graph)}
    for (value, axis), uses in cut.slices.items():
        sliced = ir.node(
            "Slice",
            [value, start, end, constant(f"logits_to_keep_axis{axis}", [axis])],
            name=f"logits_to_keep_{value.name}",
        )
        out = sliced.outputs[0]
        out.name, out.type = f"{value.name}_kept", value.type
        out.shape = ir.Shape([KEPT if i == axis else d for i, d in enumerate(value.shape)])
        graph.insert_before(min((n for n, _ in uses), key=order.__getitem__), [sliced])
        for node, index in uses:
            node.replace_input_with(index, out)
    for node, pieces in shapes.items():
        parts, new = [], []
        for i, (kind, what) in enumerate(pieces):
            if kind == "const":
                parts.append(constant(f"{node.name}_kept_dim{i}", [what]))
            else:
                source, j = what
                shape_node = ir.node(
                    "Shape", [source], attributes={"start": j, "end": j + 1}, name=f"{node.name}_kept_dim{i}"
                )
                new.append(shape_node)
                parts.append(shape_node.outputs[0])
        concat = ir.node("Concat", parts, attributes={"axis": 0}, name=f"{node.name}_kept_shape")
        new.append(concat)
        graph.insert_before(node, new)
        node.replace_input_with(1, concat.outputs[0])
    pattern = re.compile(rf"\b{re.escape(seq)}\b")
    for node in cut.region:
        for value in node.outputs:
            if value.shape is not None:
                value.shape = ir.Shape([d if isinstance(d, int) else pattern.sub(KEPT, str(d)) for d in value.shape])
    return True


def add_logits_to_keep(model) -> bool:
    """Adds the optional `logits_to_keep` input (int64 scalar, default 0) to an onnx_ir model whose
    `logits` output [batch, sequence, vocab] comes from an LM head matmul; True when added, False
    when the graph has no such head (then its logits are every position's, as without it)."""
    import onnx_ir as ir

    graph = model.graph
    logits = next((v for v in graph.outputs if v.name == "logits"), None)
    head = _lm_head(logits) if logits is not None else None
    if head is None:
        return False
    keep = ir.Value(
        name=NAME,
        type=ir.TensorType(ir.DataType.INT64),
        shape=ir.Shape([]),
        const_value=ir.tensor(np.array(0, dtype=np.int64), name=NAME),
    )
    graph.inputs.append(keep)
    graph.register_initializer(keep)

    made = {}

    def constant(name: str, values: list[int]):
        if name in made:
            return made[name]
        value = made[name] = ir.Value(name=name, const_value=ir.tensor(np.array(values, dtype=np.int64), name=name))
        value.type, value.shape = ir.TensorType(ir.DataType.INT64), ir.Shape([len(values)])
        graph.register_initializer(value)
        return value

    # hidden[:, -k:] as transformers slices it: from -0 = 0 (every position); a k beyond the
    # sequence clamps to its start.
    negated = ir.node("Neg", [keep], name="logits_to_keep_neg")
    start = ir.node(
        "Unsqueeze", [negated.outputs[0], constant("logits_to_keep_start_axes", [0])], name="logits_to_keep_start"
    )
    end = constant("logits_to_keep_end", [np.iinfo(np.int64).max])
    graph.insert_before(next(iter(graph)), [negated, start])
    if not _hoist(graph, head, start.outputs[0], end, constant):
        hidden = head.inputs[0]
        kept = ir.node(
            "Slice", [hidden, start.outputs[0], end, constant("logits_to_keep_axis1", [1])], name="logits_to_keep_slice"
        )
        kept.outputs[0].name = "logits_to_keep_hidden"
        kept.outputs[0].type = hidden.type
        if hidden.shape is not None and len(hidden.shape) == 3:
            kept.outputs[0].shape = ir.Shape([hidden.shape[0], KEPT, hidden.shape[2]])
        graph.insert_before(head, [kept])
        head.replace_input_with(0, kept.outputs[0])
    # The output's sequence axis is now the kept positions (the full length when not fed).
    if logits.shape is not None and len(logits.shape) == 3:
        logits.shape = ir.Shape([logits.shape[0], KEPT, logits.shape[2]])
    return True
