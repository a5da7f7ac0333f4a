"""TopKExpertsInt8 (int8 top-k experts) and the rewrite of TopKExperts into it.

The CPU kernel computes the reference's integer math exactly: with relu (exact in both) its output
equals the reference's bit for bit, for every gating, on every instruction set this CPU runs (the
widest, and BUCKETRT_SIMD=avx2 and generic in child processes); with the transcendental
activations the two differ in a few ulps before the second quantization, which can move a code by
one step. The shape grid is TopKExperts' (tests/op_inputs.py TOPK_CASES), the inputs its, quantized
as the rewrite quantizes them (topk_experts_int8_inputs).
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
from child_process import run_op_in_child
from onnx import helper
from op_inputs import TOPK_CASES, topk_attrs, topk_experts_inputs, topk_experts_int8_inputs

from bucketrt.library import op_session, ort_session, run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import EXPERT_GATINGS, LINEAR_INT8, MASKED_ATTENTION, TOPK_EXPERTS, TOPK_EXPERTS_INT8
from bucketrt.ops.schema import DOMAIN
from bucketrt.quantization.expert_ffn import quantize_expert_ffn


def _reference(inputs: dict[str, np.ndarray], attrs: dict) -> np.ndarray:
    tensors = (torch.from_numpy(np.array(inputs[t.name])) for t in TOPK_EXPERTS_INT8.inputs)
    return reference.topk_experts_int8(*tensors, **attrs).numpy()


def check(inputs: dict[str, np.ndarray], attrs: dict, out=None, **run_kwargs) -> np.ndarray:
    if out is None:
        (out,) = run_op(TOPK_EXPERTS_INT8, inputs, attrs, **run_kwargs)
    ref = _reference(inputs, attrs)
    assert out.shape == ref.shape and out.dtype == np.float32
    if attrs.get("activation") == "relu":
        np.testing.assert_array_equal(out, ref)
    else:
        # One code step of the second layer: at most a few 1e-3 of the output's range.
        err = float(np.abs(out - ref).max())
        assert err <= 5e-3 * max(1e-3, float(np.abs(ref).max())), f"{attrs}: max abs error {err}"
    dead = (inputs["expert_index"] == inputs["gate_up"].shape[0]).all(1)
    assert not out[dead].any(), "a token without an expert must get exactly zero"
    return out


@pytest.mark.parametrize("tokens,picks,dim,ff,experts,gating,none", TOPK_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_reference_bit_for_bit(tokens, picks, dim, ff, experts, gating, none, threads):
    inputs = topk_experts_int8_inputs(
        np.random.default_rng(tokens * 31 + dim), tokens, picks, dim, ff, experts, gating, none
    )
    check(inputs, topk_attrs(gating, "relu"), intra_op_num_threads=threads)


@pytest.mark.parametrize("gating", list(EXPERT_GATINGS))
@pytest.mark.parametrize("activation", ["relu", "silu", "gelu", "quick_gelu"])
def test_every_gating(gating, activation):
    inputs = topk_experts_int8_inputs(np.random.default_rng(3), 40, 2, 24, 40, 4, gating, 0.1)
    inputs["hidden"] *= 3.0  # past the limits (7, 10) of the clamped gatings
    check(inputs, topk_attrs(gating, activation))


def test_close_to_the_float_experts():
    # The quantization's error, not a kernel's: the int8 op against fp32 TopKExperts on the same
    # weights, as `bucketrt check` compares a quantized export.
    rng = np.random.default_rng(4)
    fp32 = topk_experts_inputs(rng, 64, 2, 64, 96, 8, "glu", 0.05)
    inputs = topk_experts_int8_inputs(np.random.default_rng(4), 64, 2, 64, 96, 8, "glu", 0.05)
    (q,) = run_op(TOPK_EXPERTS_INT8, inputs, topk_attrs())
    (f,) = run_op(TOPK_EXPERTS, fp32, topk_attrs())
    assert np.linalg.norm(q - f) / np.linalg.norm(f) < 0.03


@pytest.mark.parametrize("cap", ["avx512", "avx2", "generic"])
def test_capped_simd_paths_are_bit_identical(cap):
    # BUCKETRT_SIMD is read once per process: a capped run is a child's ("avx512": VNNI where this
    # process takes AMX). D and F off the 8-, 16- and 64-element steps (the quantizers' and GEMMs'
    # tails, AMX's edge tiles), F sliced, rows past one task's.
    inputs = topk_experts_int8_inputs(np.random.default_rng(5), 300, 2, 77, 131, 3, "glu_clamped", 0.1)
    attrs = topk_attrs("glu_clamped", "relu")
    best = check(inputs, attrs)
    (capped,) = run_op_in_child("TopKExpertsInt8", inputs, attrs, env={"BUCKETRT_SIMD": cap})
    np.testing.assert_array_equal(capped, best)


def test_threads_do_not_change_a_bit():
    for dims, gating in (((2, 8, 64, 96, 16), "glu"), ((300, 2, 48, 200, 4), "glu_clamped_offset")):
        inputs = topk_experts_int8_inputs(np.random.default_rng(6), *dims, gating, 0.1)
        meta = {name: (str(a.dtype), list(a.shape)) for name, a in inputs.items()}
        outs = [
            op_session(TOPK_EXPERTS_INT8, topk_attrs(gating, "gelu"), meta, intra_op_num_threads=n).run(None, inputs)[0]
            for n in (1, 2, 3)
        ]
        for out in outs[1:]:
            np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("cap", [None, "avx2", "generic"])
def test_nonfinite_rows_are_nan(cap):
    # D = 19: a NaN or Inf in the SIMD body or the tail makes the row's layer NaN on every path; a
    # token whose every pick has no expert stays 0 whatever its row.
    inputs = topk_experts_int8_inputs(np.random.default_rng(7), 8, 2, 19, 24, 3, "glu")
    inputs["hidden"][0, 18] = np.inf
    inputs["hidden"][1, 3] = np.nan
    inputs["hidden"][2, 16] = -np.inf
    inputs["hidden"][3, 5] = np.nan
    inputs["expert_index"][3] = 3  # no expert
    attrs = topk_attrs("glu", "relu")
    if cap is None:
        (out,) = run_op(TOPK_EXPERTS_INT8, inputs, attrs)
    else:
        (out,) = run_op_in_child("TopKExpertsInt8", inputs, attrs, env={"BUCKETRT_SIMD": cap})
    ref = _reference(inputs, attrs)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(out[:3]).all() and not out[3].any() and np.isfinite(out[4:]).all()
    np.testing.assert_array_equal(out[np.isfinite(ref)], ref[np.isfinite(ref)])


# -- bad input ---------------------------------------------------------------------------------


def _bad_cases():
    good = topk_experts_int8_inputs(np.random.default_rng(8), 6, 3, 8, 5, 4, "glu")
    glu = topk_attrs("glu", "relu")
    return [
        # Wrong dtypes and dims: ONNX Runtime's type check and the spec's, from the registration
        # (their own words, naming op and input).
        ("gate_up float32", dict(good, gate_up=good["gate_up"].astype(np.float32)), glu, "gate_up", "must be int8"),
        ("down uint8", dict(good, down=good["down"].view(np.uint8)), glu, "down", "must be int8"),
        ("scale float16", dict(good, down_scale=good["down_scale"].astype(np.float16)), glu, "down_scale", "float32"),
        ("scale dims", dict(good, gate_up_scale=np.ones((4, 9), np.float32)), glu, "gate_up_scale", "(G)"),
        ("scale experts", dict(good, down_scale=np.ones((3, 8), np.float32)), glu, "down_scale", "(E)"),
        ("bias dims", dict(good, down_bias=np.ones((4, 7), np.float32)), glu, "down_bias", "(D)"),
    ]


def _kernel_cases():
    """Bad input the kernel itself checks, in the reference's words."""
    good = topk_experts_int8_inputs(np.random.default_rng(8), 6, 3, 8, 5, 4, "glu")
    above = {**good, "expert_index": good["expert_index"].copy()}
    above["expert_index"][2, 1] = 5
    glu, none = topk_attrs("glu", "relu"), topk_attrs("none", "relu")
    plain = topk_experts_int8_inputs(np.random.default_rng(8), 6, 3, 8, 5, 4, "none")
    long = topk_experts_int8_inputs(np.random.default_rng(8), 1, 1, 1, 1, 1, "none")
    long["hidden"] = np.zeros((1, 65537), np.float32)
    long["gate_up"] = np.zeros((1, 1, 65537), np.int8)
    long["down"] = np.zeros((1, 65537, 1), np.int8)
    long["down_scale"] = np.ones((1, 65537), np.float32)
    long["down_bias"] = np.zeros((1, 65537), np.float32)
    return [
        ("index above E", above, glu, "expert_index", "has 5 at [2, 1], outside [0, E=4] (E: no expert)"),
        ("G not 2F for glu", plain, glu, "gate_up", "dim 1 (G) must be 2*F = 10 for gating 'glu', got 5"),
        ("G not F for none", good, none, "gate_up", "must be F = 5 for gating 'none', got 10"),
        ("D over the int32 bound", long, none, "gate_up", "is 65537, more than 65536 (the int32 sums could overflow)"),
    ]


@pytest.mark.parametrize("case", _bad_cases() + _kernel_cases(), ids=lambda c: c[0])
def test_bad_input_is_a_clear_error(case):
    _, inputs, attrs, culprit, words = case
    with pytest.raises(Exception) as native:
        run_op(TOPK_EXPERTS_INT8, inputs, attrs)
    message = str(native.value)
    assert re.search(r"\bTopKExpertsInt8\b", message) and re.search(rf"\b{culprit}\b", message), message
    with pytest.raises(ValueError) as ref:
        _reference(inputs, attrs)
    assert words in str(ref.value) and f"'{culprit}'" in str(ref.value), str(ref.value)
    if case[0] in {c[0] for c in _kernel_cases()}:
        assert str(ref.value) in message, (str(ref.value), message)


def test_limit_errors_come_at_session_creation():
    with pytest.raises(Exception, match="TopKExpertsInt8: attribute 'limit' must be > 0 for gating 'glu_clamped'"):
        op_session(TOPK_EXPERTS_INT8, {"gating": "glu_clamped"})


# -- the rewrite ----------------------------------------------------------------------------------


def _topk_model(inputs: dict[str, np.ndarray], attrs: dict) -> onnx.ModelProto:
    """One TopKExperts node, its weights and biases initializers (as the MoE exports have them)."""
    weights = ("gate_up", "gate_up_bias", "down", "down_bias")
    node = helper.make_node(
        TOPK_EXPERTS.name,
        [t.name for t in TOPK_EXPERTS.inputs],
        ["out"],
        name="experts",
        domain=DOMAIN,
        **TOPK_EXPERTS.node_attributes(attrs),
    )
    feeds = [n for n in ("hidden", "expert_index", "expert_weight")]
    graph = helper.make_graph(
        [node],
        "topk",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(inputs[n].dtype), inputs[n].shape)
            for n in feeds
        ],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, inputs["hidden"].shape)],
        [onnx.numpy_helper.from_array(inputs[n], n) for n in weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])


@pytest.mark.parametrize("gating", ["glu_clamped_offset", "none"])
def test_rewrite_of_a_topk_experts_node(gating):
    rng = np.random.default_rng(9)
    inputs = topk_experts_inputs(rng, 12, 2, 16, 24, 4, gating, 0.1)
    attrs = topk_attrs(gating, "quick_gelu")
    model = _topk_model(inputs, attrs)
    assert quantize_expert_ffn(model) == ["experts"]
    (node,) = model.graph.node
    assert node.op_type == TOPK_EXPERTS_INT8.name and list(node.input)[:3] == [
        "hidden",
        "expert_index",
        "expert_weight",
    ]
    written = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert written["gating"].decode() == gating and written["activation"].decode() == "quick_gelu"
    assert written["limit"] == pytest.approx(attrs["limit"])
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "gate_up" not in initializers and "down" not in initializers  # the float weights are gone
    quantized = {t.name: initializers[name] for t, name in zip(TOPK_EXPERTS_INT8.inputs[3:], node.input[3:])}
    assert quantized["gate_up"].dtype == np.int8 and quantized["down"].dtype == np.int8
    np.testing.assert_array_equal(quantized["gate_up_bias"], inputs["gate_up_bias"])
    feeds = {n: inputs[n] for n in ("hidden", "expert_index", "expert_weight")}
    expected = _reference({**feeds, **quantized}, attrs)
    (out,) = ort_session(model).run(None, feeds)
    np.testing.assert_allclose(out, expected, rtol=0, atol=5e-3 * float(np.abs(expected).max()))


# -- a whole MoE export -----------------------------------------------------------------------------


@pytest.mark.slow  # a whole model: the export alone takes ~20 s here
def test_quantize_of_a_top_k_moe_export(tmp_path):
    from bucketrt.check import check
    from bucketrt.exporter import export
    from bucketrt.quantization import quantize

    source = tmp_path / "fp32"
    export("mixtral-tiny", source)
    fp32 = onnx.load(str(source / "model.onnx"))
    experts = [n.name for n in fp32.graph.node if n.op_type == TOPK_EXPERTS.name]
    routers = [n.name for n in fp32.graph.node if n.op_type == "Gemm" and n.name in {"node_linear_4", "node_linear_9"}]
    assert len(experts) == 2 and len(routers) == 2

    manifest = quantize(source, tmp_path / "int8")
    q = manifest["quantization"]
    assert q["experts"] == {"quantized": True, "ops": {TOPK_EXPERTS.name: TOPK_EXPERTS_INT8.name}}
    assert q["components"]["model"]["expert_nodes"] == experts
    # The routers (Gemm, Softmax, TopK, Cast into expert_index) stay float: ONNX Runtime's quantizer
    # turns every Gemm into a MatMul before it excludes nodes, and must exclude them by that name too.
    assert q["components"]["model"]["router_nodes"] == routers
    # The attention core stays MaskedAttention in float32 (one per layer); the experts change op, and
    # so do the linear layers but the routers (a decoder with a cache: LinearInt8, not ORT's int8
    # MatMul): q, k, v and o of each layer and the LM head, in 5 nodes (q, k and v read one input).
    ops = {o["name"]: o["nodes"] for o in manifest["ops"]}
    assert ops == {MASKED_ATTENTION.name: 2, TOPK_EXPERTS_INT8.name: 2, LINEAR_INT8.name: 5}
    assert len(q["components"]["model"]["linear_int8_nodes"]) == 9
    assert q["components"]["model"]["quantized_nodes"] == 9
    int8 = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    kinds = {n.name: n.op_type for n in int8.graph.node}
    assert [kinds[name] for name in experts] == [TOPK_EXPERTS_INT8.name] * 2
    assert {kinds.get(f"{name}_MatMul") for name in routers} == {"MatMul"}
    weights = {name for n in fp32.graph.node if n.name in experts for name in (n.input[3], n.input[5])}
    assert not weights & {t.name for t in int8.graph.initializer}  # the float expert weights are gone

    # Every output within the quantized criteria (cosine, relative L2, logits agreement), and the
    # greedy tokens as PyTorch generates them (16 of 16 here; the criterion: 90 %). Through ONNX
    # Runtime's int8 MatMul (7-bit weights, what quantize_dynamic writes) in place of LinearInt8,
    # mixtral-tiny's random weights' near ties flipped 3 of 16, failing it.
    report = check(tmp_path / "int8")
    assert report.passed and report.generation.tokens == 16, report
    # Layers an --exclude pattern matches stay float MatMul nodes (the LM head here).
    manifest = quantize(source, tmp_path / "head-float", exclude=["node_linear_10"])
    assert manifest["quantization"]["components"]["model"]["excluded_nodes"] == ["node_linear_10"]
    kinds = {n.name: n.op_type for n in onnx.load(str(tmp_path / "head-float" / "model.onnx")).graph.node}
    assert kinds["node_linear_10"] == "MatMul"
    assert check(tmp_path / "head-float").passed
