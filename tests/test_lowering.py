"""Standard-op lowerings (bucketrt.ops.lowering): each op exported under dispatch.standard_ops() is
a graph of standard ONNX ops only, which ONNX Runtime runs without bucketrt's library, with the
outputs of the op's PyTorch reference.

TopKExperts' lowering is the dense formulation (every expert on every token), which the MoE
benchmark times as the "dense export" peer (benchmarks/moe.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from op_inputs import TOPK_CASES, topk_attrs, topk_experts_inputs

from bucketrt.ops import dispatch, reference
from bucketrt.ops.catalogue import TOPK_EXPERTS


class _TopKExperts(torch.nn.Module):
    def __init__(self, attrs: dict):
        super().__init__()
        self.attrs = attrs

    def forward(self, hidden, expert_index, expert_weight, gate_up, gate_up_bias, down, down_bias):
        inputs = (hidden, expert_index, expert_weight, gate_up, gate_up_bias, down, down_bias)
        return dispatch.call(TOPK_EXPERTS, *inputs, **self.attrs)


def _lowered(attrs: dict, inputs: dict[str, np.ndarray], tmp_path) -> ort.InferenceSession:
    tensors = tuple(torch.from_numpy(inputs[t.name]) for t in TOPK_EXPERTS.inputs)
    tokens = torch.export.Dim("tokens")
    dynamic = ({0: tokens}, {0: tokens}, {0: tokens}, None, None, None, None)
    with dispatch.standard_ops():
        program = torch.onnx.export(
            _TopKExperts(attrs).eval(), tensors, dynamo=True, verbose=False, dynamic_shapes=dynamic, opset_version=20
        )
    path = tmp_path / "lowered.onnx"
    program.save(str(path))
    model = onnx.load(str(path))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, "a bucketrt node in a lowered graph"
    # No bucketrt library registered: the graph runs on ONNX Runtime's own kernels.
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(session, inputs):
    return {i.name: inputs[spec.name] for i, spec in zip(session.get_inputs(), TOPK_EXPERTS.inputs)}


def _reference(inputs, attrs):
    return reference.topk_experts(*(torch.from_numpy(inputs[t.name]) for t in TOPK_EXPERTS.inputs), **attrs).numpy()


@pytest.mark.parametrize("tokens,picks,dim,ff,experts,gating,none", TOPK_CASES[:6])
def test_topk_experts_dense_lowering_matches_the_reference(tmp_path, tokens, picks, dim, ff, experts, gating, none):
    rng = np.random.default_rng(tokens * 1000 + picks * 100 + experts)
    attrs = topk_attrs(gating, "silu")
    inputs = topk_experts_inputs(rng, 9, picks, dim, ff, experts, gating, none)
    session = _lowered(TOPK_EXPERTS.resolve_attributes(attrs), inputs, tmp_path)
    # Another token count than the traced one: the tokens axis stays dynamic.
    inputs = topk_experts_inputs(rng, tokens, picks, dim, ff, experts, gating, none)
    (out,) = session.run(None, _feeds(session, inputs))
    ref = _reference(inputs, attrs)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
    dead = (inputs["expert_index"] == experts).all(1)
    assert not out[dead].any()  # a token without an expert adds nothing


def test_duplicate_picks_add_their_weights(tmp_path):
    rng = np.random.default_rng(5)
    attrs = topk_attrs("glu", "gelu")
    inputs = topk_experts_inputs(rng, 6, 3, 8, 12, 4, "glu")
    inputs["expert_index"][:, 1] = inputs["expert_index"][:, 0]
    session = _lowered(TOPK_EXPERTS.resolve_attributes(attrs), inputs, tmp_path)
    (out,) = session.run(None, _feeds(session, inputs))
    np.testing.assert_allclose(out, _reference(inputs, attrs), rtol=1e-4, atol=1e-5)
