"""RMS norms written so that runtimes fuse them: `x * Reciprocal(Sqrt(v))` becomes `x / Sqrt(v)`.

transformers' RMS norms (Llama's, Mixtral's, Qwen's, T5's...) compute `x * torch.rsqrt(mean(x^2) +
eps) * weight`, and torch.onnx writes `rsqrt` as Reciprocal(Sqrt): six nodes per norm (Pow,
ReduceMean, Add, Sqrt, Reciprocal, Mul) before the weight's Mul. ONNX Runtime fuses an RMS norm
into its one-kernel SimplifiedLayerNormalization only when written Pow -> ReduceMean -> Add -> Sqrt
-> Div -> Mul, the shape older exporters gave it; with the Reciprocal it runs the six kernels, each
a pass over the hidden states (and, in a decoding step, one more dispatch each: a Mixtral-like
step of 4 layers runs nine norms).

The fused kernel computes x * (1 / sqrt(mean + eps)) * weight, transformers' own order; unfused,
the Div rounds once where Reciprocal and Mul round twice, so the two forms differ by about one
unit in the last place. The rewrite holds for any Mul by a Reciprocal(Sqrt): c * (1 / s) = c / s,
broadcast alike.
"""

from __future__ import annotations

_STANDARD = ("", "ai.onnx")


def divide_by_root(model) -> int:
    """Rewrites, in every graph of the onnx_ir `model`, each Mul by Reciprocal(Sqrt(v)) (the
    Reciprocal's only use) as a Div by Sqrt(v), and drops the Reciprocal; how many it rewrote."""
    rewritten = 0
    for graph in model.graphs():
        for node in list(graph):
            if node.op_type != "Reciprocal" or node.domain not in _STANDARD or node.inputs[0] is None:
                continue
            root = node.inputs[0].producer()
            inverse = node.outputs[0]
            uses = list(inverse.uses())
            if root is None or root.op_type != "Sqrt" or root.domain not in _STANDARD or inverse.is_graph_output():
                continue
            if len(uses) != 1 or uses[0].node.op_type != "Mul" or uses[0].node.domain not in _STANDARD:
                continue
            mul, index = uses[0].node, uses[0].idx
            # Mul is commutative, Div is not: the other factor goes first, the root second.
            if index == 0:
                mul.replace_input_with(0, mul.inputs[1])
            mul.replace_input_with(1, root.outputs[0])
            mul.op_type = "Div"
            graph.remove(node, safe=True)
            rewritten += 1
    return rewritten
