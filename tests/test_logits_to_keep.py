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


# A last layer in miniature: MaskedAttention over a causal mask, its output reshaped by a shape
# computed from the input's (as torch.onnx writes it), an output projection, the residual, then
# `tail` (per position, or a running sum over the positions, which mixes them) and the LM head.
HEADS, HEAD_DIM = 2, 4


def _layer_model(tail: str) -> onnx.ModelProto:
    from bucketrt.ops.catalogue import MASKED_ATTENTION
    from bucketrt.ops.schema import DOMAIN

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((HEADS * HEAD_DIM, HIDDEN)).astype(np.float32), "wo"),
        numpy_helper.from_array(rng.standard_normal((HIDDEN, VOCAB)).astype(np.float32), "w"),
        numpy_helper.from_array(np.full(HEADS, -np.inf, dtype=np.float32), "sinks"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node(
            MASKED_ATTENTION.name, ["query", "key", "value", "mask", "sinks"], ["attended"], domain=DOMAIN, scale=0.5
        ),  # fmt: skip
        helper.make_node("Shape", ["residual"], ["batch"], start=0, end=1),
        helper.make_node("Shape", ["residual"], ["sequence"], start=1, end=2),
        helper.make_node("Concat", ["batch", "sequence", "minus_one"], ["merged_shape"], axis=0),
        helper.make_node("Reshape", ["attended", "merged_shape"], ["merged"]),
        helper.make_node("MatMul", ["merged", "wo"], ["projected"]),
        helper.make_node("Add", ["residual", "projected"], ["layer_out"]),
    ]
    if tail == "cumsum":
        nodes.append(helper.make_node("CumSum", ["layer_out", "axis1"], ["normed"]))
    else:  # an RMS norm
        nodes += [
            helper.make_node("Mul", ["layer_out", "layer_out"], ["squared"]),
            helper.make_node("ReduceMean", ["squared", "minus_one"], ["mean"]),
            helper.make_node("Sqrt", ["mean"], ["root"]),
            helper.make_node("Div", ["layer_out", "root"], ["normed"]),
        ]
    nodes.append(helper.make_node("MatMul", ["normed", "w"], ["logits"]))
    f32, i32 = TensorProto.FLOAT, TensorProto.INT32
    graph = helper.make_graph(
        nodes,
        "layer",
        [
            helper.make_tensor_value_info("query", f32, ["batch", HEADS, "sequence", HEAD_DIM]),
            helper.make_tensor_value_info("key", f32, ["batch", 1, "total", HEAD_DIM]),
            helper.make_tensor_value_info("value", f32, ["batch", 1, "total", HEAD_DIM]),
            helper.make_tensor_value_info("mask", i32, ["batch", "sequence", "total"]),
            helper.make_tensor_value_info("residual", f32, ["batch", "sequence", HIDDEN]),
        ],
        [helper.make_tensor_value_info("logits", f32, ["batch", "sequence", VOCAB])],
        inits,
        value_info=[  # what torch.onnx writes beside its nodes (ONNX's inference stops at the custom op)
            helper.make_tensor_value_info("attended", f32, ["batch", "sequence", HEADS, HEAD_DIM]),
            helper.make_tensor_value_info("merged", f32, ["batch", "sequence", HEADS * HEAD_DIM]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)], ir_version=10
    )
    return onnx.shape_inference.infer_shapes(model)


def _layer_feeds(batch=2, sequence=6):
    rng = np.random.default_rng(1)
    causal = np.tril(np.ones((sequence, sequence), dtype=np.int32))
    return {
        "query": rng.standard_normal((batch, HEADS, sequence, HEAD_DIM)).astype(np.float32),
        "key": rng.standard_normal((batch, 1, sequence, HEAD_DIM)).astype(np.float32),
        "value": rng.standard_normal((batch, 1, sequence, HEAD_DIM)).astype(np.float32),
        "mask": np.broadcast_to(causal, (batch, sequence, sequence)).copy(),
        "residual": rng.standard_normal((batch, sequence, HIDDEN)).astype(np.float32),
    }


@pytest.mark.parametrize("tail", ["rms_norm", "cumsum"])
def test_the_last_attention_queries_only_the_kept_positions_where_what_follows_is_per_position(tail):
    """After a MaskedAttention, per-position ops only: the slice moves up to its query and mask
    and to the residual, and the computed Reshape shape no longer names the sequence length; a
    running sum over the positions in between keeps it before the head. Either way the logits are
    the last positions' of the whole graph's."""
    from bucketrt.library import session_options

    plain = _layer_model(tail)
    model = ir.serde.deserialize_model(plain)
    assert add_logits_to_keep(model)
    proto = ir.serde.serialize_model(model)
    sliced = {n.input[0] for n in proto.graph.node if n.op_type == "Slice"}
    assert sliced == ({"query", "mask", "residual"} if tail == "rms_norm" else {"normed"})
    session = onnxruntime.InferenceSession(proto.SerializeToString(), session_options())
    feeds = _layer_feeds()
    (whole,) = onnxruntime.InferenceSession(plain.SerializeToString(), session_options()).run(None, feeds)
    for keep in (0, 1, 4, 6, 9):
        (kept,) = session.run(None, {**feeds, NAME: np.array(keep, dtype=np.int64)})
        want = whole[:, -keep:] if 0 < keep <= 6 else whole
        assert kept.shape == want.shape
        np.testing.assert_allclose(kept, want, rtol=1e-5, atol=1e-5, err_msg=f"logits_to_keep={keep}")
