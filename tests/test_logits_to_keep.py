"""exporter/logits_to_keep.py on small graphs: the optional input slices the LM head's input where
the logits come from a MatMul through elementwise ops only, and the graph is left as it was where
they do not (whole-model exports: tests/test_export_moe.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from bucketrt.exporter.logits_to_keep import NAME, add_logits_to_keep

HIDDEN, VOCAB = 8, 11


def _model(head: str) -> onnx.ModelProto:
    """hidden [batch, sequence, HIDDEN] -> logits, through `head`: "matmul" (a plain LM head),
    "capped" (logits = tanh(hidden @ W / 3) * 3, Gemma-style), "gather" (no matmul at all)."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((HIDDEN, VOCAB)).astype(np.float32), "w")
    three = numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three")
    index = numpy_helper.from_array(np.array([0], dtype=np.int64), "index")
    if head == "gather":
        nodes = [helper.make_node("Gather", ["hidden", "index"], ["logits"], axis=2)]
    else:
        nodes = [helper.make_node("MatMul", ["hidden", "w"], ["raw"])]
        if head == "capped":
            nodes += [
                helper.make_node("Div", ["raw", "three"], ["scaled"]),
                helper.make_node("Tanh", ["scaled"], ["capped"]),
                helper.make_node("Mul", ["capped", "three"], ["logits"]),
            ]
        else:
            nodes[0].output[0] = "logits"
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", None])],
        [weight, three, index],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _session(model: ir.Model) -> onnxruntime.InferenceSession:
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    return onnxruntime.InferenceSession(proto.SerializeToString())


@pytest.mark.parametrize("head", ["matmul", "capped"])
def test_keeps_the_last_positions_and_every_one_by_default(head):
    model = ir.serde.deserialize_model(_model(head))
    assert add_logits_to_keep(model)
    session = _session(model)
    assert [i.name for i in session.get_overridable_initializers()] == [NAME]
    hidden = np.random.default_rng(1).standard_normal((2, 5, HIDDEN)).astype(np.float32)
    (every,) = session.run(None, {"hidden": hidden})
    (plain,) = onnxruntime.InferenceSession(_model(head).SerializeToString()).run(None, {"hidden": hidden})
    np.testing.assert_array_equal(every, plain)
    for keep, want in ((0, plain), (1, plain[:, -1:]), (4, plain[:, -4:]), (5, plain), (9, plain)):
        (kept,) = session.run(None, {"hidden": hidden, NAME: np.array(keep, dtype=np.int64)})
        np.testing.assert_array_equal(kept, want, err_msg=f"logits_to_keep={keep}")


def test_a_graph_without_an_lm_head_matmul_is_left_as_it_was():
    model = ir.serde.deserialize_model(_model("gather"))
    assert not add_logits_to_keep(model)
    assert [v.name for v in model.graph.inputs] == ["hidden"]
    assert [n.op_type for n in model.graph] == ["Gather"]
