"""MaskedAttention: the native CPU kernel (through ONNX Runtime) against the PyTorch reference, and the
reference against a plain per-query softmax loop (float64) and transformers' own eager attention.

The shape grid and the input makers are the one table's (tests/op_inputs.py: MASKED_ATTENTION_CASES,
masked_attention_inputs, attention_mask); the shared non-finite cases are kernel_cases.py's (run by
tests/test_nonfinite.py and the CUDA tests). The grid covers GQA, MHA and MQA, D and Dv apart and off
the SIMD steps, several blocks of queries and the smaller blocks of T > 1024, decoding steps and rows
without a key; the tests below add each mask (causal with a KV cache, left and right padding, a
sliding window, holes), sinks and -inf sinks, float16, a query with no key (exactly 0), non-finite
keys and values where masked (nothing leaks) and where attended (the reference's NaN and Inf), a NaN
logit, empty dims, thread counts, the SIMD variants and bad input in the reference's words.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from child_process import run_op_in_child
from kernel_cases import assert_nonfinite_close
from op_inputs import MASK_KINDS, MASKED_ATTENTION_CASES, attention_attrs, attention_mask, masked_attention_inputs

from bucketrt.library import op_session, run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import MASKED_ATTENTION

RTOL = {"float32": 2e-5, "float16": 2e-3}  # times max(1, max |finite reference|)


def _tensors(inputs: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in MASKED_ATTENTION.inputs]


def _reference(inputs: dict[str, np.ndarray], attrs: dict) -> np.ndarray:
    return reference.masked_attention(*_tensors(inputs), **attrs).numpy()


def _half(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in inputs.items()}


def _empty_rows(inputs) -> np.ndarray:
    """[B, S]: queries that attend no key."""
    return ~(inputs["mask"] != 0).any(-1)


def check(inputs: dict[str, np.ndarray], attrs: dict, rtol: float | None = None, **run_kwargs) -> np.ndarray:
    """The kernel's output against the reference's: NaN and +-Inf at the same places, finite values
    within rtol * max(1, max |reference|); a query with no key exactly 0."""
    dtype = str(inputs["query"].dtype)
    (out,) = run_op(MASKED_ATTENTION, inputs, attrs, **run_kwargs)
    ref = _reference(inputs, attrs)
    assert_nonfinite_close(out, ref, RTOL[dtype] if rtol is None else rtol, name=str(attrs))
    empty = _empty_rows(inputs)
    assert not out[empty].any() and not ref[empty].any(), "a query attending no key must give exactly 0"
    return out


def naive(inputs: dict[str, np.ndarray], attrs: dict) -> np.ndarray:
    """The spec's sums written out per (b, h, s), in float64: the keys with mask != 0, the sink in the
    denominator only, 0 for a query with no key."""
    q, k, v = (inputs[n].astype(np.float64) for n in ("query", "key", "value"))
    mask, sinks = inputs["mask"], inputs["sinks"].astype(np.float64)
    batch, heads, length, _ = q.shape
    kv_heads, dv = k.shape[1], v.shape[-1]
    out = np.zeros((batch, length, heads, dv))
    for b in range(batch):
        for h in range(heads):
            n = h // (heads // kv_heads)
            for s in range(length):
                keys = np.flatnonzero(mask[b, s])
                if not len(keys):
                    continue
                logits = attrs["scale"] * (k[b, n, keys] @ q[b, h, s])
                top = max(logits.max(), sinks[h])
                w = np.exp(logits - top)
                p = w / (w.sum() + np.exp(sinks[h] - top))
                out[b, s, h] = p @ v[b, n, keys]
    return out


def _seed(*sizes) -> int:
    return sum((i + 1) * sum(map(ord, str(s))) for i, s in enumerate(sizes))


# -- the grid ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MASKED_ATTENTION_CASES, ids=str)
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_reference(case, threads):
    inputs = masked_attention_inputs(np.random.default_rng(_seed(*case)), *case)
    check(inputs, attention_attrs(case[5]), intra_op_num_threads=threads)


@pytest.mark.parametrize("case", MASKED_ATTENTION_CASES, ids=str)
def test_float16(case):
    # float16 inputs: the float32 kernel on the widened values, its output rounded once: exactly the
    # float32 run's output rounded; and the reference's within 2e-3.
    half = _half(masked_attention_inputs(np.random.default_rng(_seed(*case)), *case))
    attrs = attention_attrs(case[5])
    (out,) = run_op(MASKED_ATTENTION, half, attrs)
    assert out.dtype == np.float16
    (out32,) = run_op(
        MASKED_ATTENTION, {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in half.items()}, attrs
    )
    np.testing.assert_array_equal(out, out32.astype(np.float16))
    check(half, attrs)


# -- what decoders' masks and heads do -------------------------------------------------------------

# name: (B, H, N, S, T, D, Dv, mask kind, sinks, attention_mask's keywords)
SCENARIOS = {
    "causal-kv-cache": (2, 4, 2, 6, 19, 16, 16, "causal", False, {}),
    "causal-prefill": (1, 4, 2, 70, 70, 32, 32, "causal", False, {}),
    "left-padding": (3, 4, 2, 8, 14, 16, 16, "left", True, {}),
    "right-padding": (3, 4, 2, 12, 12, 16, 16, "right", False, {}),
    "sliding-window": (2, 4, 2, 40, 60, 16, 16, "window", True, {"window": 7}),
    "window-of-one": (1, 2, 1, 9, 9, 8, 8, "window", False, {"window": 1}),
    "gqa-8-2": (2, 8, 2, 10, 17, 24, 24, "causal", True, {}),
    "mha": (2, 8, 8, 10, 17, 24, 24, "causal", True, {}),
    "mqa": (2, 8, 1, 10, 17, 24, 24, "causal", True, {}),
    "dv-above-d": (2, 4, 2, 7, 11, 8, 40, "causal", True, {}),
    "dv-below-d": (2, 4, 2, 7, 11, 72, 3, "holes", False, {}),
    "holes": (2, 4, 2, 30, 45, 16, 16, "holes", True, {}),
    "decode": (3, 8, 2, 1, 77, 64, 64, "left", True, {}),
    "decode-window": (2, 4, 1, 1, 300, 16, 16, "window", True, {"window": 32}),
    "full": (2, 6, 3, 5, 5, 16, 16, "full", True, {}),
}


def _scenario(name, rng=None):
    b, h, n, s, t, d, dv, kind, sinks, kw = SCENARIOS[name]
    rng = np.random.default_rng(_seed(name)) if rng is None else rng
    return masked_attention_inputs(rng, b, h, n, s, t, d, dv, kind, sinks, **kw), attention_attrs(d)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_match_reference(name, dtype):
    inputs, attrs = _scenario(name)
    check(_half(inputs) if dtype == "float16" else inputs, attrs)


@pytest.mark.parametrize("name", SCENARIOS)
def test_reference_is_the_per_query_softmax(name):
    inputs, attrs = _scenario(name)
    want = naive(inputs, attrs)
    np.testing.assert_allclose(_reference(inputs, attrs), want, rtol=1e-5, atol=1e-5)
    (out,) = run_op(MASKED_ATTENTION, inputs, attrs)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks_are_what_they_say(kind):
    # The makers' masks (shared with the CUDA tests): the queries are the last S of T positions.
    rng = np.random.default_rng(1)
    m = attention_mask(rng, kind, 3, 6, 10, window=3) != 0
    position = np.arange(6)[:, None] + 4
    causal = np.arange(10)[None, :] <= position
    if kind == "full":
        assert m.all()
    elif kind == "causal":
        assert (m == causal).all()
    elif kind == "window":
        assert (m == (causal & (np.arange(10)[None, :] > position - 3))).all()
    elif kind in ("left", "right"):
        assert (m[0] == causal).all() and not (m & ~causal).any()
        assert (m.sum(-1) < causal.sum(-1)).any(), "some row padded"
    else:
        assert not m.all(-1).any()


def test_padding_keys_and_queries_change_nothing_else():
    # A right-padded row's live queries give what the unpadded, shorter call gives; its padded
    # queries 0 whatever they hold.
    rng = np.random.default_rng(2)
    inputs = masked_attention_inputs(rng, 1, 4, 2, 9, 9, 16, 16, "causal")
    attrs = attention_attrs(16)
    (short,) = run_op(MASKED_ATTENTION, inputs, attrs)
    padded = {
        "query": np.concatenate([inputs["query"], 9 * rng.standard_normal((1, 4, 3, 16), dtype=np.float32)], 2),
        "key": np.concatenate([inputs["key"], np.full((1, 2, 3, 16), np.nan, np.float32)], 2),
        "value": np.concatenate([inputs["value"], np.full((1, 2, 3, 16), np.inf, np.float32)], 2),
        "mask": np.pad(inputs["mask"], ((0, 0), (0, 3), (0, 3))),
        "sinks": inputs["sinks"],
    }
    out = check(padded, attrs)
    np.testing.assert_allclose(out[:, :9], short, rtol=1e-6, atol=1e-6)
    assert not out[:, 9:].any()


def test_sinks_only_in_the_denominator():
    # A sink of -inf is no sink: softmax over the keys alone; a finite one shrinks every weight by
    # the same factor 1 / (1 + exp(sink - lse)); a huge one leaves every weight 0 (out 0).
    rng = np.random.default_rng(3)
    inputs = masked_attention_inputs(rng, 2, 4, 2, 6, 10, 8, 8, "causal", sinks=False)
    attrs = attention_attrs(8)
    none = check(inputs, attrs)
    q, k = inputs["query"].astype(np.float64), inputs["key"].astype(np.float64)
    logits = attrs["scale"] * np.einsum("bhsd,bhtd->bhst", q, np.repeat(k, 2, axis=1))
    logits = np.where(inputs["mask"][:, None] != 0, logits, -np.inf)
    lse = np.log(np.exp(logits).sum(-1)).transpose(0, 2, 1)  # [B, S, H]
    inputs["sinks"] = np.array([0.5, -1.0, 2.0, 80.0], np.float32)
    out = check(inputs, attrs)
    shrink = 1.0 / (1.0 + np.exp(inputs["sinks"].astype(np.float64) - lse))
    np.testing.assert_allclose(out[..., :3, :], (none * shrink[..., None])[..., :3, :], rtol=1e-4, atol=1e-6)
    assert np.abs(out[..., 3, :]).max() < 1e-20  # exp(-80 + lse): below float32's normal range
    inputs["sinks"][:] = 1000.0
    out = check(inputs, attrs)
    assert not out.any()


def test_a_query_with_no_key_is_exactly_zero():
    # Whatever its query, the keys and values and the sink hold.
    rng = np.random.default_rng(4)
    inputs = masked_attention_inputs(rng, 2, 4, 2, 70, 70, 16, 16, "causal")  # two blocks of queries
    inputs["mask"][0, 5] = 0
    inputs["mask"][1, 64:] = 0  # a whole block without keys
    inputs["mask"][1, 0] = 0
    inputs["query"][0, :, 5] = np.nan
    inputs["query"][1, :, 64:] = np.inf
    out = check(inputs, attention_attrs(16))
    assert not out[0, 5].any() and not out[1, 64:].any() and not out[1, 0].any()
    assert np.isfinite(out).all() and np.count_nonzero(out) == out.size - 4 * 16 * (1 + 6 + 1)
    # Every query without a key: 0 everywhere.
    inputs["mask"][:] = 0
    (out,) = run_op(MASKED_ATTENTION, inputs, attention_attrs(16))
    assert out.shape == (2, 70, 4, 16) and not out.any()


def test_holes_inside_the_range():
    # Rows that attend keys 0, 2, 4, ... (not dense between their first and last key): the masked
    # keys between hold NaN and Inf, which must not show.
    rng = np.random.default_rng(5)
    inputs = masked_attention_inputs(rng, 2, 4, 2, 9, 20, 16, 16, "full")
    inputs["mask"][:, :, 1::2] = 0
    inputs["mask"][:, 3, :] = 0
    inputs["mask"][:, 3, [4, 16]] = 7  # two keys far apart
    inputs["key"][:, 0, 1::4] = np.nan
    inputs["value"][:, :, 3::2] = np.inf
    inputs["value"][:, 1, 5, 2] = np.nan
    out = check(inputs, attention_attrs(16))
    assert np.isfinite(out).all()
    dense = dict(inputs, mask=inputs["mask"][:, :, ::2].copy(), key=inputs["key"][:, :, ::2].copy())
    dense["value"] = inputs["value"][:, :, ::2].copy()
    (compact,) = run_op(MASKED_ATTENTION, dense, attention_attrs(16))
    np.testing.assert_allclose(out, compact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("seed", range(4))
def test_nonfinite_keys_and_values_as_the_reference(seed, dtype):
    # NaN, +Inf, -Inf scattered over keys and values, masked and attended: the kernel's NaN and +-Inf
    # exactly where the reference's are (masked keys add nothing, attended ones as IEEE, keys of
    # weight 0 nothing), the finite values within tolerance.
    rng = np.random.default_rng(100 + seed)
    kind = ("causal", "holes", "left", "window")[seed]
    inputs = masked_attention_inputs(rng, 2, 4, 2, 20, 30, 8, 6, kind)
    for name, share in (("key", 0.004), ("value", 0.01)):
        spots = rng.random(inputs[name].shape) < share
        inputs[name][spots] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=int(spots.sum()))
    if dtype == "float16":
        inputs = _half(inputs)
    ref = _reference(inputs, attention_attrs(8))
    assert np.isfinite(ref).any() and not np.isfinite(ref).all(), "the case must have both"
    check(inputs, attention_attrs(8))


def test_masked_nonfinite_does_not_leak_but_attended_does():
    rng = np.random.default_rng(6)
    inputs = masked_attention_inputs(rng, 1, 2, 1, 4, 8, 4, 4, "causal")  # query s attends keys 0..s+4
    inputs["value"][0, 0, 7, 0] = np.inf  # attended by query 3 only
    inputs["key"][0, 0, 6, 1] = np.nan  # attended by queries 2 and 3
    out = check(inputs, attention_attrs(4))
    assert np.isfinite(out[0, :2]).all()
    assert np.isnan(out[0, 2:]).all(), "a NaN logit makes its query's output NaN"
    inputs["key"][0, 0, 6, 1] = 0.0
    out = check(inputs, attention_attrs(4))
    assert np.isfinite(out[0, :3]).all() and (out[0, 3, :, 0] == np.inf).all() and np.isfinite(out[0, 3, :, 1:]).all()


@pytest.mark.parametrize("kind", ["window", "left"])
def test_values_no_query_attends_change_no_bit(kind):
    # A decoding step's cache beyond the sliding window, or under left padding, may hold anything (an
    # Inf, a NaN): no query attends it, so it changes no bit of the output (the kernel decides its
    # path for non-finite values from the keys each block attends, not from the whole head).
    rng = np.random.default_rng(8)
    inputs = masked_attention_inputs(rng, 2, 4, 2, 1, 40, 8, 8, kind)
    unattended = ~(inputs["mask"] != 0).any(axis=1)[:, None, :, None]  # [B, 1, T, 1]
    assert unattended[1].any(), "the case must have keys that no query attends"
    (clean,) = run_op(MASKED_ATTENTION, inputs, attention_attrs(8))
    for name, bad in (("value", np.inf), ("value", np.nan), ("key", np.nan)):
        dirty = dict(inputs)
        dirty[name] = np.where(unattended, np.float32(bad), inputs[name])  # every kv head of those keys
        (out,) = run_op(MASKED_ATTENTION, dirty, attention_attrs(8))
        np.testing.assert_array_equal(out, clean, err_msg=f"{name} = {bad}")


def test_a_nan_query_or_sink():
    rng = np.random.default_rng(7)
    inputs = masked_attention_inputs(rng, 2, 4, 2, 5, 9, 8, 8, "causal")
    inputs["query"][1, 2, 3, 0] = np.nan  # one query of one head
    inputs["sinks"][0] = np.nan  # head 0's sink: every one of its queries
    out = check(inputs, attention_attrs(8))
    expected = np.zeros(out.shape, bool)
    expected[1, 3, 2] = True
    expected[:, :, 0] = True
    assert (np.isnan(out) == expected).all()


def test_huge_logits_are_shifted_not_overflowed():
    # Logits near float32's limit: the softmax subtracts the maximum first, so the weights stay
    # finite (the scale at the spec's bound, 65504).
    rng = np.random.default_rng(8)
    inputs = masked_attention_inputs(rng, 1, 2, 1, 6, 6, 4, 4, "causal")
    inputs["query"] *= 1e16
    inputs["key"] *= 1e16
    out = check(inputs, {"scale": 1e-30})
    assert np.isfinite(out).all()
    out = check(masked_attention_inputs(rng, 1, 2, 1, 6, 6, 4, 4, "causal"), {"scale": 65504.0})
    assert np.isfinite(out).all()


# -- threads, SIMD, blocks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [
        (2, 8, 2, 200, 230, 64, 64, "causal"),  # blocks of 64 queries
        (1, 4, 2, 40, 3000, 32, 16, "window"),  # blocks of 21 (T > 1024)
        (2, 4, 2, 1, 500, 64, 64, "left"),  # decoding: one block per (b, n)
        (1, 4, 4, 67, 1025, 20, 12, "holes"),  # blocks of 63
    ],
    ids=str,
)
def test_threads_do_not_change_a_bit(sizes):
    # The tasks and their arithmetic follow the shapes, not the workers: any thread count, and any
    # worker taking any task, gives the same bits.
    inputs = masked_attention_inputs(np.random.default_rng(9), *sizes)
    attrs = attention_attrs(sizes[5])
    meta = {name: (str(a.dtype), list(a.shape)) for name, a in inputs.items()}
    outs = []
    for n in (1, 2, 3):
        session = op_session(MASKED_ATTENTION, attrs, meta, intra_op_num_threads=n)
        outs += [session.run(None, inputs)[0] for _ in range(3)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    check(inputs, attrs)


@pytest.mark.parametrize("cap", ["generic", "avx2"])
def test_simd_variants_agree(cap):
    # The library reads BUCKETRT_SIMD once per process: each capped run is a child process's.
    inputs = masked_attention_inputs(np.random.default_rng(10), 2, 6, 2, 70, 90, 33, 20, "holes")
    inputs["value"][1, 1, 4, 3] = np.inf  # the tile's path for non-finite values too
    attrs = attention_attrs(33)
    best = check(inputs, attrs)
    (capped,) = run_op_in_child("MaskedAttention", inputs, attrs, env={"BUCKETRT_SIMD": cap})
    ref = _reference(inputs, attrs)
    assert_nonfinite_close(capped, ref, RTOL["float32"], name=cap)
    assert_nonfinite_close(capped, best, 1e-5, name=f"{cap} against the best")


# -- transformers' attention --------------------------------------------------------------------


def _float_mask(mask: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """transformers' additive mask [B, 1, S, T]: 0 where attended, the dtype's minimum elsewhere."""
    live = torch.from_numpy(mask != 0)[:, None]
    return torch.where(live, 0.0, torch.finfo(dtype).min).to(dtype)


def _module(heads, kv_heads, sinks=None):
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, training=False)
    if sinks is not None:
        module.sinks = torch.from_numpy(sinks)
    return module


@pytest.mark.parametrize("name", ["causal-kv-cache", "left-padding", "sliding-window", "gqa-8-2", "mha", "decode"])
def test_reference_is_gpt_oss_eager_attention(name):
    # GPT-OSS: sinks in the softmax's denominator, GQA; rows with at least one key (transformers'
    # float mask gives a row without keys a uniform softmax, not 0).
    modeling = pytest.importorskip("transformers.models.gpt_oss.modeling_gpt_oss")
    inputs, attrs = _scenario(name)
    if not np.isfinite(inputs["sinks"]).all():
        inputs["sinks"] = np.random.default_rng(11).standard_normal(inputs["sinks"].shape).astype(np.float32)
    live = ~_empty_rows(inputs)
    q, k, v, mask, sinks = _tensors(inputs)
    heads, kv_heads = q.shape[1], k.shape[1]
    want, _ = modeling.eager_attention_forward(
        _module(heads, kv_heads, inputs["sinks"]), q, k, v, _float_mask(inputs["mask"]), attrs["scale"]
    )
    got = _reference(inputs, attrs)
    np.testing.assert_allclose(got[live], want.numpy()[live], rtol=1e-5, atol=2e-6)
    (out,) = run_op(MASKED_ATTENTION, inputs, attrs)
    np.testing.assert_allclose(out[live], want.numpy()[live], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe"])
@pytest.mark.parametrize("name", ["causal-prefill", "left-padding", "sliding-window", "mqa", "holes"])
def test_reference_is_eager_attention_without_sinks(family, name):
    # Mixtral, Qwen3-MoE: no sinks (-inf), the same float mask; float16 too.
    modeling = pytest.importorskip(f"transformers.models.{family}.modeling_{family}")
    inputs, attrs = _scenario(name)
    inputs["sinks"][:] = -np.inf
    live = ~_empty_rows(inputs)
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        tensors = [t.to(dtype) if t.is_floating_point() else t for t in _tensors(inputs)]
        q, k, v, _, _ = tensors
        want, _ = modeling.eager_attention_forward(
            _module(q.shape[1], k.shape[1]), q, k, v, _float_mask(inputs["mask"], dtype), attrs["scale"]
        )
        want = want.float().numpy()
        got = reference.masked_attention(*tensors, **attrs).float().numpy()
        np.testing.assert_allclose(got[live], want[live], rtol=rtol, atol=rtol)


# -- bad input and empty dims -------------------------------------------------------------------


def _bad_cases():
    good = masked_attention_inputs(np.random.default_rng(12), 2, 6, 3, 4, 5, 8, 8, "causal")
    heads_4 = masked_attention_inputs(np.random.default_rng(12), 2, 6, 4, 4, 5, 8, 8, "causal")
    more_kv = masked_attention_inputs(np.random.default_rng(12), 2, 2, 4, 4, 5, 8, 8, "causal")
    return [
        ("H not a multiple of N", heads_4, "key", "dim 1 (H = 6) must be a multiple of input 'key' dim 1 (N = 4)"),
        ("N above H", more_kv, "key", "dim 1 (H = 2) must be a multiple of input 'key' dim 1 (N = 4)"),
        ("sinks of N", {**good, "sinks": good["sinks"][:3]}, "sinks", "sinks"),
        ("mask of S+1", {**good, "mask": np.ones((2, 5, 5), np.int32)}, "mask", "mask"),
        ("value of another T", {**good, "value": good["value"][:, :, :4].copy()}, "value", "value"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_in_the_references_words(case):
    _, inputs, culprit, words = case
    attrs = attention_attrs(8)
    with pytest.raises(ValueError) as ref:
        _reference(inputs, attrs)
    assert "MaskedAttention" in str(ref.value) and words in str(ref.value) and culprit in str(ref.value)
    with pytest.raises(Exception) as native:
        run_op(MASKED_ATTENTION, inputs, attrs)
    assert str(ref.value) in str(native.value), (str(ref.value), str(native.value))


@pytest.mark.parametrize("dim", range(7), ids=["B", "H", "N", "S", "T", "D", "Dv"])
def test_empty_dims_are_refused_alike(dim):
    # The spec asks every dim >= 1 (T = 0, a cache and no key, included): refused in the same words.
    sizes = [2, 4, 2, 3, 5, 8, 8]
    sizes[dim] = 0
    if dim == 2:
        sizes[1] = 0  # N = 0 with H = 0: the spec's H >= 1 is named first
    inputs = masked_attention_inputs(np.random.default_rng(13), *sizes, "full")
    with pytest.raises(ValueError, match="must be >= 1, got 0") as ref:
        _reference(inputs, attention_attrs(8))
    with pytest.raises(Exception) as native:
        run_op(MASKED_ATTENTION, inputs, attention_attrs(8))
    assert str(ref.value) in str(native.value), (str(ref.value), str(native.value))


@pytest.mark.parametrize("scale", [-1.0, float("nan"), 1e6, 1])
def test_bad_scale_is_refused_alike(scale):
    inputs = masked_attention_inputs(np.random.default_rng(14), 1, 2, 1, 3, 3, 4, 4, "causal")
    with pytest.raises(ValueError) as ref:
        _reference(inputs, {"scale": scale})
    assert "MaskedAttention: attribute 'scale'" in str(ref.value)
    with pytest.raises(Exception) as native:
        run_op(MASKED_ATTENTION, inputs, {"scale": scale})
    assert str(ref.value) in str(native.value), (str(ref.value), str(native.value))
