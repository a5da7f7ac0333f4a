"""ExpertFFNInt8 (int8 experts) and the rewrite of ExpertFFN into it (bucketrt.quantization.expert_ffn).

The CPU kernel computes the reference's integer math exactly: with relu (exact in both) its output
equals the reference's bit for bit, on every instruction set this CPU runs (the widest, and
BUCKETRT_SIMD=avx2 and generic in child processes); with the transcendental activations the two
differ in a few ulps before the second quantization, which can move a code by one step. The
AVX-512 VNNI path runs where the CPU has it (tests/test_simd_variants.py checks which ran).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from child_process import run_op_in_child
from op_inputs import expert_ffn_inputs

from bucketrt.errors import BucketrtError
from bucketrt.library import run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import EXPERT_FFN_INT8
from bucketrt.quantization.expert_ffn import quantize_expert_ffn, quantize_weights


def int8_inputs(rng, batch, length, dim, ff, experts, capacity, skew=0.0, per_channel=True) -> dict[str, np.ndarray]:
    x = expert_ffn_inputs(rng, batch, length, dim, ff, experts, capacity, skew)
    wi, wi_scale = quantize_weights(x["wi"], per_channel=per_channel)
    wo, wo_scale = quantize_weights(x["wo"], per_channel=per_channel)
    return {
        **{k: x[k] for k in ("hidden", "order", "counts", "gate")},
        **{"wi": wi, "wi_scale": wi_scale, "wo": wo, "wo_scale": wo_scale},
    }


def _reference(inputs, activation):
    return reference.expert_ffn_int8(*[torch.from_numpy(a) for a in inputs.values()], activation=activation).numpy()


def _check(inputs, activation="relu", out=None, **run_kwargs):
    if out is None:
        (out,) = run_op(EXPERT_FFN_INT8, inputs, {"activation": activation}, **run_kwargs)
    ref = _reference(inputs, activation)
    assert out.shape == ref.shape and out.dtype == np.float32
    if activation == "relu":
        np.testing.assert_array_equal(out, ref)
    else:
        # One code step of the second layer: at most a few 1e-3 of the output's range.
        err = float(np.abs(out - ref).max())
        assert err <= 5e-3 * max(1e-3, float(np.abs(ref).max())), f"{activation}: max abs error {err}"
    listed = np.zeros(inputs["order"].size, bool)
    listed[inputs["order"].reshape(-1)[: inputs["counts"].sum()]] = True
    assert not out.reshape(listed.size, -1)[~listed].any(), "a token not listed must get exactly zero"
    return out


# batch, length, dim, ff, experts, capacity, skew: D and F off the 16- and 64-byte steps, one
# expert, crowded experts (skew: overflow and experts with no token), a single token.
CASES = [
    (2, 9, 8, 12, 3, 9, 0.0),
    (1, 33, 77, 131, 2, 33, 0.0),
    (2, 40, 64, 128, 1, 40, 0.0),
    (3, 25, 24, 40, 8, 4, 3.0),
    (1, 1, 19, 70, 4, 1, 0.0),
    (2, 70, 96, 200, 4, 20, 0.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])))
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_reference_bit_for_bit(case, threads):
    _check(int8_inputs(np.random.default_rng(case[1]), *case), intra_op_num_threads=threads)


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "silu", "relu6", "linear"])
def test_activations(activation):
    inputs = int8_inputs(np.random.default_rng(1), 2, 12, 16, 24, 3, 12)
    inputs["hidden"] *= 4.0
    _check(inputs, activation)


def test_per_expert_scales_and_no_token_listed():
    inputs = int8_inputs(np.random.default_rng(4), 2, 10, 16, 32, 3, 10, per_channel=False)
    assert (inputs["wi_scale"] == inputs["wi_scale"][:, :1]).all()
    _check(inputs)
    none = dict(inputs, counts=np.zeros(3, np.int32), order=np.full_like(inputs["order"], -1))
    (out,) = run_op(EXPERT_FFN_INT8, none, {"activation": "relu"})
    assert not out.any()
    np.testing.assert_array_equal(_reference(none, "relu"), out)


@pytest.mark.parametrize("cap", ["avx2", "generic"])
@pytest.mark.parametrize("case", [(2, 50, 40, 100, 4, 50, 0.0), (1, 33, 77, 131, 2, 33, 0.0)], ids=["40x100", "77x131"])
def test_capped_simd_paths_are_bit_identical(cap, case):
    # BUCKETRT_SIMD is read once per process: a capped run is a child's. Same integers, same bits:
    # the widest path here (VNNI on an AVX-512 VNNI CPU), AVX2 and the plain loops, with row
    # lengths off the 8-, 16- and 64-element steps (the quantizers' and GEMMs' tails).
    inputs = int8_inputs(np.random.default_rng(2), *case)
    best = _check(inputs, "relu")
    (capped,) = run_op_in_child("ExpertFFNInt8", inputs, {"activation": "relu"}, env={"BUCKETRT_SIMD": cap})
    np.testing.assert_array_equal(capped, best)


@pytest.mark.parametrize("cap", [None, "avx2", "generic"])
def test_nonfinite_in_a_row_tail(cap):
    # D = 19: a NaN or Inf in the SIMD body (k < 16) or in the tail (AVX2's k >= 16, AVX-512's
    # masked last step) makes the row's scale NaN on every path.
    inputs = int8_inputs(np.random.default_rng(6), 1, 8, 19, 24, 2, 8)
    rows = inputs["hidden"].reshape(8, 19)
    tokens = inputs["order"].reshape(-1)[: inputs["counts"].sum()]
    rows[tokens[0], 18] = np.inf
    rows[tokens[1], 17] = -np.inf
    rows[tokens[2], 3] = np.nan
    rows[tokens[3], 16] = np.nan
    if cap is None:
        (out,) = run_op(EXPERT_FFN_INT8, inputs, {"activation": "relu"})
    else:
        (out,) = run_op_in_child("ExpertFFNInt8", inputs, {"activation": "relu"}, env={"BUCKETRT_SIMD": cap})
    ref = _reference(inputs, "relu")
    bad = np.isnan(out.reshape(8, 19)).any(axis=1)
    np.testing.assert_array_equal(bad, np.isnan(ref.reshape(8, 19)).any(axis=1))
    assert bad[tokens[:4]].all() and not bad[tokens[4:]].any()
    np.testing.assert_array_equal(out[np.isfinite(ref)], ref[np.isfinite(ref)])


def test_nonfinite_rows_are_nan():
    inputs = int8_inputs(np.random.default_rng(5), 1, 6, 8, 16, 2, 6)
    tokens = inputs["order"].reshape(-1)[: inputs["counts"].sum()]
    inputs["hidden"].reshape(6, 8)[tokens[0], 3] = np.inf
    inputs["hidden"].reshape(6, 8)[tokens[1], 0] = np.nan
    (out,) = run_op(EXPERT_FFN_INT8, inputs, {"activation": "relu6"})
    ref = _reference(inputs, "relu6")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(out.reshape(6, 8)[tokens[:2]]).all() and np.isfinite(out.reshape(6, 8)[tokens[2:]]).all()
    np.testing.assert_array_equal(out[np.isfinite(ref)], ref[np.isfinite(ref)])


def _bad_cases():
    good = int8_inputs(np.random.default_rng(3), 2, 5, 8, 12, 3, 5)
    long = int8_inputs(np.random.default_rng(3), 1, 1, 1, 1, 1, 1)
    long["hidden"] = np.zeros((1, 1, 65537), np.float32)
    long["wi"] = np.zeros((1, 1, 65537), np.int8)
    long["wo"] = np.zeros((1, 65537, 1), np.int8)
    long["wo_scale"] = np.ones((1, 65537), np.float32)
    return [
        # Wrong dtypes: ONNX Runtime's own type check (from the spec's registration) words these.
        ("wi float32", dict(good, wi=good["wi"].astype(np.float32)), "wi", "must be int8"),
        ("wo uint8", dict(good, wo=good["wo"].view(np.uint8)), "wo", "must be int8"),
        ("wi_scale float16", dict(good, wi_scale=good["wi_scale"].astype(np.float16)), "wi_scale", "must be float32"),
        ("wi_scale dims", dict(good, wi_scale=np.ones((3, 13), np.float32)), "wi_scale", "(F)"),
        ("wo_scale experts", dict(good, wo_scale=np.ones((2, 8), np.float32)), "wo_scale", "(E)"),
        ("wo ff", dict(good, wo=np.zeros((3, 8, 11), np.int8)), "wo", "(F)"),
        ("counts over tokens", dict(good, counts=np.array([5, 5, 1], np.int32)), "counts", "sums to"),
        ("D over the int32 bound", long, "wi", "int32 sums"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_is_a_clear_error(case):
    _, inputs, culprit, words = case
    with pytest.raises(Exception) as native:
        run_op(EXPERT_FFN_INT8, inputs, {"activation": "relu"})
    message = str(native.value)
    assert re.search(r"\bExpertFFNInt8\b", message) and re.search(rf"\b{culprit}\b", message), message
    with pytest.raises(ValueError) as ref:
        reference.expert_ffn_int8(*[torch.from_numpy(a) for a in inputs.values()], activation="relu")
    assert words in str(ref.value) and f"'{culprit}'" in str(ref.value), str(ref.value)
    if "must be" not in words:  # the kernel's own checks: the reference's words
        assert str(ref.value) in message, (str(ref.value), message)


# -- the rewrite ----------------------------------------------------------------------------------


def test_quantize_weights_per_channel_and_per_expert():
    w = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
    w[1, 2] = 0
    codes, scale = quantize_weights(w)
    assert codes.dtype == np.int8 and scale.shape == (3, 5) and np.abs(codes).max() == 127
    assert scale[1, 2] == 1 and not codes[1, 2].any()
    assert np.abs(codes * scale[:, :, None] - w).max() <= scale.max() / 2 + 1e-7
    _, per_expert = quantize_weights(w, per_channel=False)
    np.testing.assert_allclose(per_expert, np.abs(w).max(axis=(1, 2))[:, None].repeat(5, 1) / 127)


@pytest.fixture(scope="module")
def switch_export(tmp_path_factory):
    import transformers

    from bucketrt.exporter import export

    config = transformers.SwitchTransformersConfig(
        vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2, num_sparse_encoder_layers=2,
        num_experts=4, expert_capacity=32, dense_act_fn="relu",
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("switch")
    transformers.SwitchTransformersEncoderModel(config).eval().save_pretrained(folder)
    out = tmp_path_factory.mktemp("export")
    export(str(folder), out, task="feature-extraction-encoder")
    return out / "model.onnx", config


@pytest.mark.slow  # whole-model accuracy: the export alone takes ~20-40 s here
def test_rewrite_of_a_switch_encoder(switch_export, tmp_path):
    import onnx

    import bucketrt

    path, config = switch_export
    model = onnx.load(path)
    names = [n.name for n in model.graph.node if n.op_type == "ExpertFFN"]
    others = [(n.name, n.op_type) for n in model.graph.node if n.op_type != "ExpertFFN"]
    floats = sum(t.ByteSize() for t in model.graph.initializer)
    assert len(names) == 2
    with pytest.raises(BucketrtError, match="uint8"):
        quantize_expert_ffn(model, weight_type="uint8")
    assert quantize_expert_ffn(model) == names
    assert [n.name for n in model.graph.node if n.op_type == "ExpertFFNInt8"] == names
    assert [(n.name, n.op_type) for n in model.graph.node if n.op_type != "ExpertFFNInt8"] == others
    assert quantize_expert_ffn(model) == []  # nothing left to rewrite
    # The float expert weights are gone: 4 experts x 2 x 64 x 128 floats per layer, now bytes.
    saved = floats - sum(t.ByteSize() for t in model.graph.initializer)
    assert saved >= 2 * 2 * 4 * 64 * 128 * 3 * 0.9, saved
    onnx.checker.check_model(model)
    quantized = tmp_path / "model.onnx"
    onnx.save(model, quantized)

    rng = np.random.default_rng(7)
    feeds = {
        "input_ids": rng.integers(0, config.vocab_size, (2, 48)).astype(np.int64),
        "attention_mask": np.ones((2, 48), np.int64),
    }
    (want,) = bucketrt.ort_session(path).run(None, feeds)
    (got,) = bucketrt.ort_session(quantized).run(None, feeds)
    a, b = got.reshape(-1, got.shape[-1]).astype(np.float64), want.reshape(-1, want.shape[-1]).astype(np.float64)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    overall = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    rel = np.abs(a - b).max(1) / np.abs(b).max(1)
    print(
        f"int8 experts vs float, {len(a)} tokens: cosine {overall:.6f} overall, per token median "
        f"{np.median(cosine):.6f} min {cosine.min():.4f}; max error / max |output| per token: median "
        f"{np.median(rel):.4f}, max {rel.max():.4f}"
    )
    # Most tokens agree closely; a few, whose router logits are near a tie (random weights), pick
    # another expert in the second layer once the first layer is quantized, and differ as much as
    # two experts do.
    assert overall >= 0.995 and np.median(cosine) >= 0.9999 and np.median(rel) <= 0.02
    assert (cosine >= 0.999).mean() >= 0.9, cosine
