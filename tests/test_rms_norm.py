"""exporter/rms_norm.py: an RMS norm as torch.onnx writes it (x * Reciprocal(Sqrt(v))) becomes the
Div form that ONNX Runtime fuses into SimplifiedLayerNormalization, computing what it did; anything
else is left as it was. Whole exports: tests/test_export_moe.py."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from bucketrt.exporter.rms_norm import divide_by_root

HIDDEN, EPS = 16, 1e-6


def _rms_norm(order: str = "x_first", inverse_uses: int = 1, root: str = "Sqrt") -> onnx.ModelProto:
    """hidden [batch, sequence, HIDDEN] -> out: transformers' RMS norm as torch.onnx writes it,
    the Mul's factors in `order`; with `inverse_uses` 2 the reciprocal is also a second output;
    `root` the op under the Reciprocal."""
    weight = np.random.default_rng(0).uniform(0.5, 1.5, HIDDEN).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(EPS, dtype=np.float32), "eps"),
    ]
    factors = ["hidden", "inverse"] if order == "x_first" else ["inverse", "hidden"]
    nodes = [
        helper.make_node("Pow", ["hidden", "two"], ["square"]),
        helper.make_node("ReduceMean", ["square", "axes"], ["mean"], keepdims=1),
        helper.make_node("Add", ["mean", "eps"], ["shifted"]),
        helper.make_node(root, ["shifted"], ["root"]),
        helper.make_node("Reciprocal", ["root"], ["inverse"]),
        helper.make_node("Mul", factors, ["normed"]),
        helper.make_node("Mul", ["weight", "normed"], ["out"]),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])]
    if inverse_uses == 2:
        outputs.append(helper.make_tensor_value_info("inverse", TensorProto.FLOAT, ["batch", "sequence", 1]))
    graph = helper.make_graph(
        nodes,
        "rms_norm",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _run(proto: onnx.ModelProto, hidden, optimized_path=None) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options)
    return session.run(["out"], {"hidden": hidden})[0]


def _torch_rms_norm(hidden: np.ndarray, weight: np.ndarray) -> np.ndarray:
    import torch

    x = torch.from_numpy(hidden)
    return (torch.from_numpy(weight) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))).numpy()


@pytest.mark.parametrize("order", ["x_first", "inverse_first"])
def test_the_norm_becomes_a_division_that_onnx_runtime_fuses_computing_what_it_did(tmp_path, order):
    before = _rms_norm(order)
    model = ir.serde.deserialize_model(before)
    assert divide_by_root(model) == 1
    after = ir.serde.serialize_model(model)
    onnx.checker.check_model(after, full_check=True)
    kinds = [n.op_type for n in after.graph.node]
    assert kinds == ["Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul"]
    div = after.graph.node[4]
    assert list(div.input) == ["hidden", "root"] and list(div.output) == ["normed"]

    hidden = np.random.default_rng(1).standard_normal((2, 5, HIDDEN)).astype(np.float32) * 3
    optimized = tmp_path / "optimized.onnx"
    fused = _run(after, hidden, optimized)
    assert [n.op_type for n in onnx.load(str(optimized)).graph.node] == ["SimplifiedLayerNormalization"]
    plain = _run(before, hidden)
    weight = numpy_helper.to_array(before.graph.initializer[0]).copy()
    np.testing.assert_allclose(fused, plain, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(fused, _torch_rms_norm(hidden, weight), rtol=2e-6, atol=1e-6)
    # Unfused (a runtime without the fusion): the Div form, within rounding of the Reciprocal's.
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = onnxruntime.InferenceSession(after.SerializeToString(), options).run(["out"], {"hidden": hidden})[0]
    np.testing.assert_allclose(unfused, plain, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize(
    "case", [{"inverse_uses": 2}, {"root": "Exp"}], ids=["reciprocal-used-twice", "reciprocal-of-another-op"]
)
def test_other_reciprocals_are_left_as_they_were(case):
    before = _rms_norm(**case)
    model = ir.serde.deserialize_model(before)
    assert divide_by_root(model) == 0
    after = ir.serde.serialize_model(model)
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in before.graph.node]
