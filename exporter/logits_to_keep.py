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
"""

from __future__ import annotations

import numpy as np

from bucketrt.runtime.decoding import LOGITS_TO_KEEP as NAME  # the name the generation loop feeds

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
        varying = [v for v in node.inputs if v is not None and v.const_value is None and not v.is_initializer()]
        if len(varying) != 1:
            return None
        value = varying[0]


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

    def constant(name: str, values: list[int]):
        value = ir.Value(name=name, const_value=ir.tensor(np.array(values, dtype=np.int64), name=name))
        value.type, value.shape = ir.TensorType(ir.DataType.INT64), ir.Shape([len(values)])
        graph.register_initializer(value)
        return value

    # hidden[:, -k:] as transformers slices it: from -0 = 0 (every position); a k beyond the
    # sequence clamps to its start.
    negated = ir.node("Neg", [keep], name="logits_to_keep_neg")
    start = ir.node(
        "Unsqueeze", [negated.outputs[0], constant("logits_to_keep_axis0", [0])], name="logits_to_keep_start"
    )
    end = constant("logits_to_keep_end", [np.iinfo(np.int64).max])
    axes = constant("logits_to_keep_axes", [1])
    hidden = head.inputs[0]
    kept = ir.node("Slice", [hidden, start.outputs[0], end, axes], name="logits_to_keep_slice")
    kept.outputs[0].name = "logits_to_keep_hidden"
    kept.outputs[0].type = hidden.type
    if hidden.shape is not None and len(hidden.shape) == 3:
        kept.outputs[0].shape = ir.Shape([hidden.shape[0], "kept_positions", hidden.shape[2]])
    graph.insert_before(head, [negated, start, kept])
    head.replace_input_with(0, kept.outputs[0])
    # The output's sequence axis is now the kept positions (the full length when not fed).
    if logits.shape is not None and len(logits.shape) == 3:
        logits.shape = ir.Shape([logits.shape[0], "kept_positions", logits.shape[2]])
    return True
