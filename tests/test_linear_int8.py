"""LinearInt8 (an int8 linear layer) and the rewrite of a decoder's linear layers into it.

The CPU kernel computes the reference's integer math exactly, so its output equals the reference's
bit for bit on every instruction set this CPU runs (the widest, and BUCKETRT_SIMD=avx2 and generic
in child processes), whatever the threads; the reference itself is checked against the spec's text
computed here in numpy. The inputs are weights quantized as the rewrite quantizes them
(tests/op_inputs.py linear_int8_inputs).
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
from child_process import run_op_in_child
from onnx import helper, numpy_helper
from op_inputs import LINEAR_INT8_CASES, linear_int8_inputs

from bucketrt.library import op_session, ort_session, run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import LINEAR_INT8
from bucketrt.ops.schema import DOMAIN
from bucketrt.quantization.linear import int8_linear_nodes, quantize_linear_layers


def _reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
    return reference.linear_int8(*(torch.from_numpy(np.array(inputs[t.name])) for t in LINEAR_INT8.inputs)).numpy()


def check(inputs: dict[str, np.ndarray], **run_kwargs) -> np.ndarray:
    (out,) = run_op(LINEAR_INT8, inputs, {}, **run_kwargs)
    ref = _reference(inputs)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    return out


@pytest.mark.parametrize("batch,length,k_len,n_len", LINEAR_INT8_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_reference_bit_for_bit(batch, length, k_len, n_len, threads):
    inputs = linear_int8_inputs(np.random.default_rng(k_len * 31 + n_len), batch, length, k_len, n_len)
    check(inputs, intra_op_num_threads=threads)


def _spec_in_numpy(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The catalogue's semantics, step by step in float32 (the integer sums exact, in int64)."""
    x = inputs["input"].reshape(-1, inputs["input"].shape[-1])
    f32 = np.float32
    lo, hi = np.minimum(f32(0), x.min(1)), np.maximum(f32(0), x.max(1))
    s = hi / f32(255) - lo / f32(255)
    s = np.where(s == 0, f32(1), s).astype(f32)
    zp = np.clip(np.rint(-lo / s), 0, 255).astype(f32)
    q = np.clip(np.rint(x / s[:, None]) + zp[:, None], 0, 255).astype(np.int64)
    acc = (q - zp[:, None].astype(np.int64)) @ inputs["weight"].astype(np.int64).T
    out = acc.astype(f32) * (s[:, None] * inputs["weight_scale"][None, :]) + inputs["bias"]
    return out.reshape(*inputs["input"].shape[:-1], -1)


def test_reference_is_the_spec():
    inputs = linear_int8_inputs(np.random.default_rng(1), 3, 7, 33, 20)
    inputs["input"][0, 0] = np.abs(inputs["input"][0, 0])  # a row >= 0: zero point 0
    inputs["input"][0, 1] = 0.0  # a row of zeros: scale 1
    np.testing.assert_array_equal(_reference(inputs), _spec_in_numpy(inputs))


def test_close_to_the_float_layer():
    # The quantization's error, not a kernel's: against the float layer of the weights it came from.
    rng = np.random.default_rng(2)
    weight = (rng.standard_normal((200, 128)) / np.sqrt(128)).astype(np.float32)
    x = rng.standard_normal((2, 16, 128)).astype(np.float32)
    bias = rng.standard_normal(200).astype(np.float32)
    from bucketrt.quantization.expert_ffn import quantize_weights

    codes, scale = quantize_weights(weight[None])
    (q,) = run_op(LINEAR_INT8, {"input": x, "weight": codes[0], "weight_scale": scale[0], "bias": bias}, {})
    exact = x @ weight.T + bias
    assert np.linalg.norm(q - exact) / np.linalg.norm(exact) < 0.01


@pytest.mark.parametrize("cap", ["avx2", "generic"])
def test_capped_simd_paths_are_bit_identical(cap):
    # BUCKETRT_SIMD is read once per process: a capped run is a child's. K off the 8-, 16- and
    # 64-element steps, N past a slice, rows past one task's.
    inputs = linear_int8_inputs(np.random.default_rng(3), 1, 300, 77, 131)
    best = check(inputs)
    (capped,) = run_op_in_child("LinearInt8", inputs, {}, env={"BUCKETRT_SIMD": cap})
    np.testing.assert_array_equal(capped, best)


@pytest.mark.parametrize("cap", [None, "avx2", "generic"])
def test_extreme_codes_sum_exactly(cap):
    # Codes 255 against weights -128 and 127, neighbours at the extremes together: an 8-bit
    # multiply-add that saturates its int16 pair sums (vpmaddubsw: 255 * 128 * 2 > 32767) would lose
    # them. Rows of 0 and 1 quantize to codes 0 and 255 (scale 1/255, zero point 0).
    k_len = 67
    k = np.arange(k_len)
    x = np.stack([np.ones(k_len), k % 2, (k % 5 != 0)]).astype(np.float32)[None]
    weight = np.stack([np.full(k_len, -128), np.where(k // 2 % 2 == 0, 127, -128), np.full(k_len, 127)]).astype(np.int8)
    inputs = {"input": x, "weight": weight, "weight_scale": np.ones(3, np.float32), "bias": np.zeros(3, np.float32)}
    out = check(inputs) if cap is None else run_op_in_child("LinearInt8", inputs, {}, env={"BUCKETRT_SIMD": cap})[0]
    np.testing.assert_array_equal(out, _reference(inputs))
    # The integers themselves: the codes times the weights, summed, times the scale.
    codes = (x[0] * 255).astype(np.int64)
    exact = (codes @ weight.astype(np.int64).T).astype(np.float32) * (np.float32(1) / np.float32(255))
    np.testing.assert_allclose(out[0], exact, rtol=1e-6)


def test_threads_do_not_change_a_bit():
    inputs = linear_int8_inputs(np.random.default_rng(4), 2, 150, 96, 700)
    meta = {name: (str(a.dtype), list(a.shape)) for name, a in inputs.items()}
    outs = [op_session(LINEAR_INT8, {}, meta, intra_op_num_threads=n).run(None, inputs)[0] for n in (1, 2, 3)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("cap", [None, "avx2", "generic"])
def test_nonfinite_rows_are_nan(cap):
    # K = 19: a NaN or Inf in the SIMD body or the tail makes the row's outputs NaN on every path.
    inputs = linear_int8_inputs(np.random.default_rng(5), 1, 5, 19, 9)
    inputs["input"][0, 0, 18] = np.inf
    inputs["input"][0, 1, 3] = np.nan
    inputs["input"][0, 2, 16] = -np.inf
    if cap is None:
        (out,) = run_op(LINEAR_INT8, inputs, {})
    else:
        (out,) = run_op_in_child("LinearInt8", inputs, {}, env={"BUCKETRT_SIMD": cap})
    ref = _reference(inputs)
    assert np.isnan(out[0, :3]).all() and np.isnan(ref[0, :3]).all()
    np.testing.assert_array_equal(out[0, 3:], ref[0, 3:])


def _bad_cases():
    good = linear_int8_inputs(np.random.default_rng(6), 1, 3, 8, 5)
    long = {
        "input": np.zeros((1, 1, 65537), np.float32),
        "weight": np.zeros((2, 65537), np.int8),
        "weight_scale": np.ones(2, np.float32),
        "bias": np.zeros(2, np.float32),
    }
    return [
        ("weight float32", dict(good, weight=good["weight"].astype(np.float32)), "weight", "must be int8"),
        ("weight uint8", dict(good, weight=good["weight"].view(np.uint8)), "weight", "must be int8"),
        ("scale float16", dict(good, weight_scale=good["weight_scale"].astype(np.float16)), "weight_scale", "float32"),
        ("scale dims", dict(good, weight_scale=np.ones(6, np.float32)), "weight_scale", "(N)"),
        ("bias dims", dict(good, bias=np.ones(4, np.float32)), "bias", "(N)"),
        ("K against the input", dict(good, weight=np.zeros((5, 9), np.int8)), "weight", "(K)"),
        ("K over the int32 bound", long, "weight", "is 65537, more than 65536 (the int32 sums could overflow)"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_is_a_clear_error(case):
    _, inputs, culprit, words = case
    with pytest.raises(Exception) as native:
        run_op(LINEAR_INT8, inputs, {})
    message = str(native.value)
    assert re.search(r"\bLinearInt8\b", message) and re.search(rf"\b{culprit}\b", message), message
    with pytest.raises(ValueError) as ref:
        _reference(inputs)
    assert words in str(ref.value) and f"'{culprit}'" in str(ref.value), str(ref.value)
    if case[0] == "K over the int32 bound":
        assert str(ref.value) in message, (str(ref.value), message)


# -- the rewrite ----------------------------------------------------------------------------------


def _linear_model(rng) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [1, S, 16] through MatMuls with constant weights: `biased` (its only reader adds a [24]
    bias), `plain` (no bias) and `shared` (read by an Add and a graph output: its bias stays an Add)
    read x, as an attention's q, k and v do; `lone` (a bias of its own) reads 2x; `flat` reads x as
    rows (rank 2), which LinearInt8 does not take."""
    weights = {name: (rng.standard_normal((16, n)) / 4).astype(np.float32) for name, n in LAYERS.items()}
    arrays = {**weights, "bias": rng.standard_normal(24).astype(np.float32)}
    arrays["lone_bias"] = rng.standard_normal(8).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "wb"], ["yb"], name="biased"),
        helper.make_node("Add", ["yb", "bias"], ["out_b"], name="biased_add"),
        helper.make_node("MatMul", ["x", "wp"], ["out_p"], name="plain"),
        helper.make_node("MatMul", ["x", "ws"], ["out_s"], name="shared"),
        helper.make_node("Add", ["out_s", "bias"], ["out_s_b"], name="shared_add"),
        helper.make_node("Add", ["x", "x"], ["x2"], name="double"),
        helper.make_node("MatMul", ["x2", "wl"], ["yl"], name="lone"),
        helper.make_node("Add", ["lone_bias", "yl"], ["out_l"], name="lone_add"),
        helper.make_node("Reshape", ["x", "flat_shape"], ["rows"], name="to_rows"),
        helper.make_node("MatMul", ["rows", "wf"], ["out_f"], name="flat"),
    ]
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    inits.append(numpy_helper.from_array(np.array([-1, 16], np.int64), "flat_shape"))
    f = onnx.TensorProto.FLOAT
    outputs = [helper.make_tensor_value_info(n, f, None) for n in OUTPUTS]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", f, [1, "S", 16])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 9
    return onnx.shape_inference.infer_shapes(model), arrays


LAYERS = {"wb": 24, "wp": 12, "ws": 24, "wl": 8, "wf": 24}
OUTPUTS = ("out_b", "out_p", "out_s", "out_s_b", "out_l", "out_f")


def test_rewrite_of_linear_layers():
    rng = np.random.default_rng(7)
    model, arrays = _linear_model(rng)
    x = rng.standard_normal((1, 5, 16)).astype(np.float32)
    names = int8_linear_nodes(model, ["biased", "plain", "shared", "lone", "flat"])
    assert names == ["biased", "plain", "shared", "lone"]
    assert quantize_linear_layers(model, names) == names
    nodes = {n.name: n for n in model.graph.node}
    # The three layers that read x: one node and a Split into their outputs, the biased one's Add
    # folded, the shared one's kept; the lone layer keeps its name, its bias folded (either order).
    group = nodes["biased+plain+shared"]
    split = nodes["biased+plain+shared_split"]
    assert group.op_type == LINEAR_INT8.name and split.op_type == "Split"
    assert list(split.output) == ["out_b", "out_p", "out_s"] and list(split.input)[0] == group.output[0]
    assert nodes["lone"].op_type == LINEAR_INT8.name and list(nodes["lone"].output) == ["out_l"]
    assert {"biased", "plain", "shared", "biased_add", "lone_add"}.isdisjoint(nodes)
    assert nodes["shared_add"].op_type == "Add" and nodes["flat"].op_type == "MatMul"
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert not {"wb", "wp", "ws", "wl"} & set(initializers) and "wf" in initializers  # float weights gone
    outs = dict(zip(OUTPUTS, ort_session(model).run(None, {"x": x})))

    def feeds(node, rows):
        return {"input": rows, **{t.name: initializers[i] for t, i in zip(LINEAR_INT8.inputs[1:], node.input[1:])}}

    grouped, lone = feeds(group, x), feeds(nodes["lone"], 2 * x)
    assert grouped["weight"].dtype == np.int8 and grouped["weight"].shape == (60, 16)
    zeros = np.zeros(12 + 24, np.float32)
    np.testing.assert_array_equal(grouped["bias"], np.concatenate([arrays["bias"], zeros]))
    np.testing.assert_array_equal(lone["bias"], arrays["lone_bias"])
    # The group's outputs are each layer's own LinearInt8, to the bit: a row's codes and each
    # output's sums are the same side by side as apart.
    for out, cols, weight, bias in (
        ("out_b", slice(0, 24), "wb", arrays["bias"]),
        ("out_p", slice(24, 36), "wp", 0),
        ("out_s", slice(36, 60), "ws", 0),
    ):
        alone = {**grouped, **{k: grouped[k][cols] for k in ("weight", "weight_scale", "bias")}}
        np.testing.assert_array_equal(outs[out], _reference(alone))
        exact = x @ arrays[weight] + bias
        assert np.linalg.norm(outs[out] - exact) / np.linalg.norm(exact) < 0.02
    np.testing.assert_array_equal(outs["out_l"], _reference(lone))
    np.testing.assert_allclose(outs["out_s_b"], outs["out_s"] + arrays["bias"], rtol=1e-6)
    # The float MatMul left as it was: float32 sums, whose order ORT's and numpy's GEMMs choose (an
    # output near 0 keeps the rounding of its terms, about 1e-7 each).
    np.testing.assert_allclose(outs["out_f"], x.reshape(-1, 16) @ arrays["wf"], rtol=1e-5, atol=1e-6)
