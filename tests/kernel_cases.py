"""What the CPU kernel tests (test_kernels_cpu.py and the per-op files) and the CUDA kernel tests
(test_kernels_cuda.py) share beyond their inputs, so that every backend is judged alike: the audits
that tell rounding from a real difference (SignHash's near-zero projections, ArgmaxHash's near-ties,
BucketSum's in-order sums) and the non-finite cases with their checks. The inputs themselves (shape
grids and makers) are the one table's, tests/op_inputs.py. numpy only: the CUDA tests import this
on a GPU machine that may lack onnx and onnxruntime.
"""

from __future__ import annotations

import numpy as np
from op_inputs import (
    argmax_inputs,
    attention_attrs,
    bucket_sum_inputs,
    chunk_attention_inputs,
    expert_ffn_inputs,
    lsh_inputs,
    masked_attention_inputs,
    quantize_topk_experts_inputs,
    sign_inputs,
    top1_probs,
    topk_attrs,
    topk_experts_inputs,
)


def gaussian_near_zero(inputs, num_hash, code_len) -> np.ndarray:
    """[B, N, num_hash]: True where some projection of the hash lies within float32 rounding of zero
    (float64 recomputation), so that a code may differ across summation orders."""
    vector, projection = inputs["vector"].astype(np.float64), inputs["projection"].astype(np.float64)
    batch, length, dim = vector.shape
    groups = projection.shape[0]
    x = vector.reshape(batch // groups, groups, length, dim)
    y = (x @ projection[None]).reshape(batch, length, num_hash, code_len)
    return (np.abs(y) < 1e-4 * np.sqrt(dim)).any(-1)


def argmax_flip_margins(inputs, num_hash, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Where two backends' ArgmaxHash buckets differ: per entry, the largest gap between the two
    chosen candidates of a differing factor digit (projections recomputed in float64), relative to
    the RMS projection of the round; inf for a padding bucket on one side only. Rounding explains a
    difference whose margin is tiny (two candidates within float32 error of each other)."""
    sizes = [int(s) for s in inputs["bucket_sizes"]]
    vector, projection = inputs["vector"].astype(np.float64), inputs["projection"].astype(np.float64)
    batch, heads, length, _ = vector.shape
    y = np.einsum("bhnd,hdc->bhnc", vector, projection).reshape(batch, heads, length, num_hash, -1)
    y = y.transpose(0, 1, 3, 2, 4)  # [B, H, R, N, S]
    rms = np.maximum(np.sqrt((y**2).mean(-1)), np.finfo(np.float64).tiny)
    padding = int(np.prod(sizes))
    margins = []
    for index in zip(*np.nonzero(ours != theirs)):
        a, b = int(ours[index]), int(theirs[index])
        if a == padding or b == padding or not (0 <= a < padding and 0 <= b < padding):
            margins.append(np.inf)
            continue
        worst, stride, start = 0.0, 1, 0
        for size in sizes:
            part = y[index][start : start + size // 2]
            candidates = np.concatenate([part, -part])
            da, db = a // stride % size, b // stride % size
            if da != db:
                worst = max(worst, abs(candidates[da] - candidates[db]) / rms[index])
            stride *= size
            start += size // 2
        margins.append(worst)
    return np.array(margins)


def bucket_sum_in_order(inputs, num_buckets) -> tuple[np.ndarray, np.ndarray]:
    """BucketSum as the spec orders it, in numpy: rows added one by one in order n, from 0, in float32
    (float16 inputs widened, the sums rounded once) - what every kernel must give bit for bit."""
    dtype = inputs["vector"].dtype
    bucket = inputs["bucket"]
    weight, vector = inputs["weight"].astype(np.float32), inputs["vector"].astype(np.float32)
    groups, rows, dim = vector.shape
    sums = np.zeros((groups, num_buckets, dim), np.float32)
    weights = np.zeros((groups, num_buckets), np.float32)
    g = np.arange(groups)
    for n in range(rows):  # each group once per n: no repeated (g, bucket) pair within a step
        sums[g, bucket[:, n]] += vector[:, n]
        weights[g, bucket[:, n]] += weight[:, n]
    return sums.astype(dtype), weights.astype(dtype)


# -- non-finite data: one semantics for the reference, the CPU and the CUDA kernels (docs/ops.md) --
# Each case: (id, op name, inputs(rng) -> dict of arrays, attrs, checks(inputs, outputs)), where
# `checks(inputs, attrs, outputs)` asserts what the case is about on the reference's outputs (so that a case whose data
# stopped reaching the subject fails instead of passing vacuously). A kernel's outputs must then
# equal the reference's as assert_nonfinite_close says: NaN exactly where the reference has NaN,
# +-Inf exactly where it has the same Inf, finite values within tolerance.


def assert_nonfinite_close(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-5, name: str = "") -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, (
        f"{name}: {ours.shape}/{ours.dtype} vs {ref.shape}/{ref.dtype}"
    )
    if not np.issubdtype(ref.dtype, np.floating):
        np.testing.assert_array_equal(ours, ref, err_msg=name)
        return
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    for what, fa, fb in (
        ("NaN", np.isnan(a), np.isnan(b)),
        ("+Inf", a == np.inf, b == np.inf),
        ("-Inf", a == -np.inf, b == -np.inf),
    ):
        wrong = np.argwhere(fa != fb)
        assert not len(wrong), (
            f"{name}: {what} at {len(wrong)} positions where the reference differs, first {wrong[0].tolist()}: ours {a[tuple(wrong[0])]}, reference {b[tuple(wrong[0])]}"
        )
    finite = np.isfinite(b)
    scale = max(1.0, float(np.abs(b[finite]).max(initial=0.0)))
    err = float(np.abs(a[finite] - b[finite]).max(initial=0.0))
    assert err <= rtol * scale, f"{name}: max abs error {err} on the finite values (scale {scale})"


def _nf_lsh(rng):
    x = lsh_inputs(rng, 2, 9, 11, 6, 3, 8, masked=0.3)
    dead = np.argwhere(x["key_mask"] == 0)
    x["value"][dead[0::3, 0], dead[0::3, 1]] = np.nan
    x["value"][dead[1::3, 0], dead[1::3, 1]] = np.inf
    x["value"][dead[2::3, 0], dead[2::3, 1], :3] = -np.inf
    return x


def _nf_lsh_live(rng):  # non-finite values in live keys: they reach every query sharing a bucket
    x = lsh_inputs(rng, 1, 16, 16, 4, 2, 4, masked=0.0)
    x["value"][0, 3, 1] = np.nan
    x["value"][0, 5, 2] = np.inf
    x["value"][0, 7, 2] = -np.inf
    return x


def _check_lsh_masked(x, attrs, outs):
    (out,) = outs
    assert np.isfinite(out).all(), "non-finite values of masked keys leaked into the output"
    assert (out[x["query_mask"] == 0] == 0).all() and (out[x["query_mask"] != 0] != 0).any()


def _check_lsh_live(x, attrs, outs):
    (out,) = outs
    assert np.isnan(out[0, :, 1]).any() and np.isfinite(out).any()
    assert np.isnan(out[0, :, 2]).any() or np.isinf(out[0, :, 2]).any()


def _nf_chunk(masked_value, where="masked", length=32, rounds=2, **_):
    def inputs(rng):
        x = chunk_attention_inputs(rng, 2, 2, length, 8, rounds, 4, masked=0.25)
        x["mask"][:, :2] = 0  # at least two padded positions per row
        x["mask"][:, 2] = 1
        if where == "masked":
            dead = np.argwhere(x["mask"] == 0)
            x["value"][dead[:, 0], :, dead[:, 1]] = masked_value
        else:  # a live key: its value reaches every query that attends it
            x["value"][0, 1, 2, 3] = masked_value
        return x

    return inputs


def _check_chunk_masked(x, attrs, outs):
    (out,) = outs
    assert np.isfinite(out).all(), "values of masked keys (weight 0) leaked into the output"


def _check_chunk_causal(x, attrs, outs):
    (out,) = outs
    # The Inf at the last position is causally hidden from every other query (weight 0); the last
    # query sees it only as itself, when mask_self does not push it to weight 0.
    assert np.isfinite(out[:, :, :-1]).all(), "a causally hidden key (weight 0) leaked into the output"
    assert np.isfinite(out[:, :, -1]).all() == bool(attrs.get("mask_self"))


def _check_chunk_live(x, attrs, outs):
    (out,) = outs
    assert not np.isfinite(out[0, 1, :, 3]).all() and np.isfinite(out[0, 1, :, :3]).all()


def _nf_chunk_causal(rng):
    x = chunk_attention_inputs(rng, 1, 2, 32, 8, 2, 4, masked=0.0)
    x["value"][:, :, -1] = np.inf  # the last key: causally hidden from every other query of its chunk
    return x


def _nf_chunk_underflow(rng):  # live keys whose weight underflows to 0 (scores 300 below the top)
    x = chunk_attention_inputs(rng, 1, 1, 8, 4, 1, 1, masked=0.0)
    x["query"][:] = 0.0
    x["query"][..., 0] = 30.0
    x["key"][:] = 0.0
    x["key"][..., 0] = np.where(np.arange(8) % 2 == 1, 5.0, -5.0)  # scores +-150
    x["value"][0, 0, 2] = np.inf
    x["value"][0, 0, 4, 1] = np.nan
    x["value"][0, 0, 6, 2] = -np.inf
    return x


def _check_chunk_underflow(x, attrs, outs):
    (out,) = outs
    expected = x["value"][0, 0, 1::2].mean(0)  # the four keys of score +150 share the weight
    np.testing.assert_allclose(out[0, 0], np.broadcast_to(expected, out[0, 0].shape), rtol=1e-5, atol=1e-6)


def _nf_chunk_all_masked(rng):  # every key masked: uniform weights (1 each) over the masked keys
    x = chunk_attention_inputs(rng, 1, 1, 8, 4, 1, 1, masked=0.0)
    x["mask"][:] = 0
    x["value"][0, 0, 3, 1] = np.inf
    x["value"][0, 0, 5, 2] = np.nan
    return x


def _check_chunk_all_masked(x, attrs, outs):
    (out,) = outs
    assert (
        (out[0, 0, :, 1] == np.inf).all()
        and np.isnan(out[0, 0, :, 2]).all()
        and np.isfinite(out[0, 0, :, [0, 3]]).all()
    )


def _nf_expert(special):
    def inputs(rng):
        x = expert_ffn_inputs(rng, 2, 9, 8, 12, 3, 9)
        x["hidden"][0, 1, 0] = special  # every pre-activation of token (0, 1) is +-`special` (or NaN)
        x["hidden"][1, 4, 2] = special
        return x

    return inputs


def _check_expert_nan(x, attrs, outs):
    (out,) = outs
    assert np.isnan(out[0, 1]).all(), "NaN through a clamped activation must stay NaN"
    assert np.isfinite(out[0, 0]).all()


def _check_expert_inf(x, attrs, outs):
    (out,) = outs
    assert np.isfinite(out[0, 0]).all()
    # relu6 bounds +-Inf to [0, 6]: the token's output is finite. The others carry the Inf on (to
    # Inf, or NaN where Infs of both signs meet in the second product; gelu(-Inf) = -Inf * 0 = NaN,
    # which gelu_10's clamp keeps NaN).
    clamped = attrs["activation"] == "relu6"
    assert np.isfinite(out[0, 1]).all() == clamped


def _nf_top1(rng):
    probs = top1_probs(rng, 2, 12, 4)
    probs[0, 2] = [0.1, np.nan, 0.5, np.nan]
    probs[0, 5] = [0.2, np.inf, 0.1, 0.3]
    probs[1, 0] = [-np.inf, -np.inf, -np.inf, -np.inf]
    probs[1, 3] = [0.1, np.inf, np.nan, 0.2]
    return {"probs": probs}


def _check_top1(x, attrs, outs):
    expert, gate = outs[0], outs[1]
    assert expert[0, 2] == 1 and np.isnan(gate[0, 2]), "a NaN is the maximum (the first one)"
    assert expert[0, 5] == 1 and gate[0, 5] == np.inf
    assert expert[1, 0] == 0 and gate[1, 0] == -np.inf
    assert expert[1, 3] == 2 and np.isnan(gate[1, 3])


def _nf_argmax(rng):
    x = argmax_inputs(rng, 1, 2, 10, 4, 2, [4, 6])
    x["mask"][0, 3] = 1
    x["vector"][0, 0, 3, :] = np.nan  # every projection NaN: each factor's first candidate, bucket 0
    x["vector"][0, 1, 4, 0] = np.inf
    x["vector"][0, 1, 6, 1] = -np.inf
    return x


def _check_argmax(x, attrs, outs):
    (out,) = outs
    assert out.min() >= 0 and out.max() <= 24
    assert (out[0, 0, :, 3] == 0).all(), "a NaN counts as the maximum (the first one)"
    assert (out[0, 0, :, 2] != 0).any() or (out[0, 0, :, 4] != 0).any()


# A vector row or projection column with a NaN or an Inf makes every y it enters NaN (docs/ops.md,
# catalogue.NONFINITE_PROJECTION_RULE): IEEE sums would give +-Inf or NaN by the signs and the order.
# Rows: 1 (an Inf among finite values: IEEE gives +-Inf by the projection's signs), 2 (+Inf and -Inf),
# 3 (a NaN); columns: 5 (an Inf: IEEE gives +-Inf by each row's sign), 9 (an Inf meeting a 0 of
# the vectors' column 0 in row 6: 0 * Inf). Row 4 is masked with an Inf.
_NF_ROWS, _NF_COLUMNS = (1, 2, 3), (5, 9)


def _nf_sign_gaussian(rng):
    x = sign_inputs(rng, 2, 8, 6, 1, (6, 3 * 4), masked=0.0)  # num_hash 3, code_len 4
    x["mask"][:, 4] = 0
    x["vector"][:, 1, 2] = np.inf
    x["vector"][:, 2, 0], x["vector"][:, 2, 3] = np.inf, -np.inf
    x["vector"][:, 3, 5] = np.nan
    x["vector"][:, 4, 1] = np.inf
    x["vector"][:, 6, 0] = 0.0
    x["projection"][0, 2, 5] = np.inf
    x["projection"][0, 0, 9] = -np.inf
    return x


def _check_sign_gaussian(x, attrs, outs):
    (codes,) = outs
    assert (codes[:, list(_NF_ROWS)] == 0).all(), "a row with a NaN or an Inf: every bit 0"
    assert (codes[:, 4] == 0).all(), "a masked row is coded 0"
    for column in _NF_COLUMNS:  # hash column // 4, bit column % 4: 0 in every row
        assert not (codes[:, :, column // 4] & (1 << (column % 4))).any(), f"column {column}'s bit must be 0"
    assert codes.any(), "the finite rows and columns still hash"


def _nf_argmax_rule(rng):
    x = argmax_inputs(rng, 1, 2, 8, 5, 2, [4, 6], masked=0.0)  # S = 5 columns a round: [0, 1 | 2, 3, 4]
    x["vector"][0, 0, 1, 2] = np.inf
    x["vector"][0, 0, 2, 0], x["vector"][0, 0, 2, 4] = np.inf, -np.inf
    x["vector"][0, 1, 3, 1] = -np.inf
    x["projection"][1, 3, 3] = np.inf  # head 1, round 0, factor 1's second column
    x["projection"][1, 0, 9] = -np.inf  # head 1, round 1, factor 1's third column
    return x


def _check_argmax_rule(x, attrs, outs):
    (out,) = outs
    assert (out[0, 0, :, 1] == 0).all() and (out[0, 0, :, 2] == 0).all() and (out[0, 1, :, 3] == 0).all(), (
        "a vector with a NaN or an Inf goes to bucket 0"
    )
    rows = [n for n in range(out.shape[-1]) if n != 3]
    # Head 1: the Inf column is NaN in every row, factor 1's maximum (digit = column - 2, stride 4).
    assert (out[0, 1, 0, rows] // 4 == 1).all() and (out[0, 1, 1, rows] // 4 == 2).all()
    assert len(set(out[0, 0, :, 3:].reshape(-1).tolist())) > 1, "the finite rows still hash"


def _nf_bucket_sum(rng):
    x = bucket_sum_inputs(rng, 3, 16, 5, 4)
    x["bucket"][0, :4] = 1
    x["vector"][0, 0, 0], x["vector"][0, 1, 0] = np.inf, -np.inf  # +Inf + -Inf = NaN
    x["vector"][0, 2, 1] = np.inf
    x["vector"][0, 3, 2] = np.nan
    x["weight"][1, 5] = np.inf
    return x


def _check_bucket_sum(x, attrs, outs):
    sums, weights = outs
    assert np.isnan(sums[0, 1, 0]) and sums[0, 1, 1] == np.inf and np.isnan(sums[0, 1, 2])
    assert np.isfinite(sums[0, 1, 3:]).all() and weights[1, x["bucket"][1, 5]] == np.inf
    assert np.isfinite(sums[1:]).all()


def _nf_topk_ignored(rng):
    # Picks without an expert (index E) carry NaN and +-Inf weights, and a token has none at all.
    x = topk_experts_inputs(rng, 12, 3, 8, 6, 4, "glu", none=0.3)
    x["expert_index"][5] = 4
    dead = x["expert_index"] == 4
    x["expert_weight"][dead] = np.tile([np.nan, np.inf, -np.inf], dead.sum() // 3 + 1)[: dead.sum()]
    return x


def _check_topk_ignored(x, attrs, outs):
    (out,) = outs
    assert np.isfinite(out).all(), "an ignored pick's weight leaked into the output"
    assert not out[5].any() and out.any()


def _nf_topk_hidden(special):
    def inputs(rng):
        x = topk_experts_inputs(rng, 10, 2, 8, 6, 3, "glu")
        x["expert_index"][[1, 4]] = [[0, 3], [1, 2]]  # live picks for tokens 1 and 4, one each for 1
        x["hidden"][1, 0] = special  # every pre-activation of token 1 is +-`special` (or NaN)
        x["hidden"][4, 2] = special
        return x

    return inputs


def _check_topk_nan(x, attrs, outs):
    (out,) = outs
    assert np.isnan(out[1]).all() and np.isnan(out[4]).all(), "NaN through the clamps must stay NaN"
    assert np.isfinite(np.delete(out, [1, 4], axis=0)).all()


def _check_topk_inf(x, attrs, outs):
    (out,) = outs
    assert np.isfinite(np.delete(out, [1, 4], axis=0)).all()
    # relu with the clamps bounds +-Inf (relu(min(+-Inf, L)) and min(relu(+-Inf), L) are L or 0,
    # clamp(up) is +-L): the tokens' outputs stay finite. Unclamped, the Inf goes on (to Inf, or NaN
    # where Infs of both signs meet); silu and quick_gelu make NaN of -Inf (-Inf * 0) before any clamp.
    bounded = attrs["activation"] == "relu" and attrs["gating"] != "glu"
    assert np.isfinite(out[[1, 4]]).all() == bounded


def _nf_topk_weight(rng):  # non-finite weights of live picks: IEEE products (0 * Inf = NaN too)
    x = topk_experts_inputs(rng, 8, 2, 8, 6, 3, "none")
    x["expert_index"][[2, 3, 6]] = [[0, 1], [2, 1], [1, 3]]
    x["expert_weight"][2, 1] = np.nan
    x["expert_weight"][3, 0] = np.inf
    x["expert_weight"][6, 0] = -np.inf
    return x


def _check_topk_weight(x, attrs, outs):
    (out,) = outs
    assert np.isnan(out[2]).all() and not np.isfinite(out[3]).all() and not np.isfinite(out[6]).all()
    assert np.isfinite(np.delete(out, [2, 3, 6], axis=0)).all()


def _int8(make):
    """A TopKExperts case's inputs as TopKExpertsInt8's (its experts' weights quantized)."""
    return lambda rng: quantize_topk_experts_inputs(make(rng))


def _check_topk_int8_nonfinite(x, attrs, outs):
    # A row with a NaN or an Inf is not quantized (its scale is NaN): the token's first layer, and so
    # its output, is NaN whatever the gating and its clamps (unlike TopKExperts, where relu with a
    # clamp bounds an Inf).
    (out,) = outs
    assert np.isnan(out[[1, 4]]).all(), "a non-finite row's layer must be NaN"
    assert np.isfinite(np.delete(out, [1, 4], axis=0)).all()


# MaskedAttention: B 2, H 4 over N 2 (heads 0, 1 read key/value head 0; 2, 3 head 1), S 5 queries at
# positions 3..7 of T 8 keys (causal: query s attends keys 0..s+3), D 6, Dv 5.
_NF_ATTENTION = (2, 4, 2, 5, 8, 6, 5)


def _nf_attention_masked(rng):
    # Masked keys hold NaN, +-Inf and 3e38 in their keys and values (key 1 masked for every query, key
    # 7 for the only query that would attend it); a query attending no key is NaN itself.
    x = masked_attention_inputs(rng, *_NF_ATTENTION, "causal")
    x["mask"][:, :, 1] = 0
    x["mask"][:, 4, 7] = 0
    x["key"][:, 0, 1, 0] = np.nan
    x["key"][:, 1, 1, :] = 3e38
    x["value"][:, 0, 1, :] = np.inf
    x["value"][:, 1, 1, 2] = -np.inf
    x["value"][0, :, 7, :] = np.nan
    x["key"][1, :, 7, :] = np.inf
    x["mask"][1, 2, :] = 0
    x["query"][1, :, 2, :] = np.nan
    return x


def _check_attention_masked(x, attrs, outs):
    (out,) = outs
    assert np.isfinite(out).all(), "a masked key's NaN or Inf leaked into the output"
    assert not out[1, 2].any(), "a query attending no key must give 0"
    assert out.any()


def _nf_attention_live(rng):
    # Attended keys: an Inf value (+Inf out where its weight > 0), -Inf and NaN values, a NaN key (a
    # NaN logit: its queries' outputs NaN).
    x = masked_attention_inputs(rng, *_NF_ATTENTION, "causal")
    x["value"][0, 0, 2, 1] = np.inf  # key 2: attended by every query
    x["value"][0, 1, 3, 2] = np.nan
    x["value"][0, 1, 0, 4], x["value"][0, 1, 1, 4] = np.inf, -np.inf  # both signs: NaN
    x["key"][1, 0, 4, 0] = np.nan  # key 4: attended by queries 1..4
    return x


def _check_attention_live(x, attrs, outs):
    (out,) = outs
    assert (out[0, :, 0:2, 1] == np.inf).all(), "a used key's +Inf value gives +Inf"
    assert np.isnan(out[0, :, 2:4, 2]).all() and np.isnan(out[0, :, 2:4, 4]).all()
    assert np.isnan(out[1, 1:, 0:2]).all(), "a NaN logit makes its query's output NaN"
    expected = np.zeros(out.shape, bool)
    expected[0, :, 0:2, 1] = expected[0, :, 2:4, 2] = expected[0, :, 2:4, 4] = expected[1, 1:, 0:2] = True
    assert np.isfinite(out[~expected]).all()


def _nf_attention_zero_weight(rng):
    # Keys of weight exactly 0 though attended: heads 0 and 1 see key 0's logit 900 * scale above and
    # key 2's 900 * scale below (exp underflows to 0); heads 2 and 3 see a sink of 200 above every
    # logit (head 3 without sink). Their values are Inf and NaN: nothing of them may show.
    x = masked_attention_inputs(rng, *_NF_ATTENTION, "causal")
    x["query"][0, 0:2] = 0.0
    x["query"][0, 0:2, :, 0] = 30.0
    x["key"][0, 0, 0, :] = 0.0
    x["key"][0, 0, 0, 0] = 30.0
    x["key"][0, 0, 2, 0] = -30.0
    x["value"][0, 0, 2, :] = np.inf
    x["value"][0, 0, 2, 3] = np.nan
    x["sinks"][2] = 200.0
    x["sinks"][3] = -np.inf
    x["value"][1, 1, 5, :] = -np.inf  # head 2 and 3's key 5, of queries 2..4
    return x


def _check_attention_zero_weight(x, attrs, outs):
    (out,) = outs
    out32 = out.astype(np.float32)
    assert np.isfinite(out32[0]).all(), "a key of weight 0 added its Inf or NaN"
    assert np.allclose(out32[0, :, 0:2], x["value"][0, 0, 0].astype(np.float32), rtol=1e-3, atol=1e-3)
    assert not out[:, :, 2].any(), "a sink far above every logit leaves every weight 0: 0 out"
    assert (out[1, 2:, 3] == -np.inf).all() and np.isfinite(out[1, :2, 3]).all()


def _nonfinite_cases():
    cases = [
        ("lsh/masked-keys-nan-inf", "LSHCumulation", _nf_lsh, dict(hashtable_capacity=8), _check_lsh_masked),
        ("lsh/live-keys-nan-inf", "LSHCumulation", _nf_lsh_live, dict(hashtable_capacity=4), _check_lsh_live),
        # the sorted mode of the CUDA kernel (masked keys sort last and are skipped there)
        (
            "lsh/masked-keys-nan-inf-sorted",
            "LSHCumulation",
            _nf_lsh,
            dict(hashtable_capacity=8, deterministic=1),
            _check_lsh_masked,
        ),
        (
            "lsh/live-keys-nan-inf-sorted",
            "LSHCumulation",
            _nf_lsh_live,
            dict(hashtable_capacity=4, deterministic=1),
            _check_lsh_live,
        ),
    ]
    chunked = dict(chunk_length=8, chunks_before=1, chunks_after=0)
    for label, v in (("inf", np.inf), ("neginf", -np.inf), ("nan", np.nan), ("huge", 3e38)):
        cases.append((f"chunk/masked-{label}", "SortedChunkAttention", _nf_chunk(v), chunked, _check_chunk_masked))
        cases.append(
            (
                f"chunk/masked-{label}-plain",
                "SortedChunkAttention",
                _nf_chunk(v, length=8, rounds=1),
                dict(chunk_length=8),
                _check_chunk_masked,
            )
        )
    cases.append(
        ("chunk/live-inf", "SortedChunkAttention", _nf_chunk(np.inf, where="live"), chunked, _check_chunk_live)
    )
    cases.append(
        ("chunk/live-nan", "SortedChunkAttention", _nf_chunk(np.nan, where="live"), chunked, _check_chunk_live)
    )
    for mask_self in (0, 1):
        cases.append(
            (
                f"chunk/causal-hidden-inf-self{mask_self}",
                "SortedChunkAttention",
                _nf_chunk_causal,
                dict(chunk_length=8, causal=1, mask_self=mask_self),
                _check_chunk_causal,
            )
        )
    cases.append(
        (
            "chunk/underflowed-keys",
            "SortedChunkAttention",
            _nf_chunk_underflow,
            dict(chunk_length=8),
            _check_chunk_underflow,
        )
    )
    cases.append(
        (
            "chunk/all-masked",
            "SortedChunkAttention",
            _nf_chunk_all_masked,
            dict(chunk_length=8),
            _check_chunk_all_masked,
        )
    )
    for act in ("relu", "relu2", "relu6", "gelu_10", "hardswish", "leaky_relu", "silu", "gelu"):
        cases.append((f"expert/{act}-nan", "ExpertFFN", _nf_expert(np.nan), dict(activation=act), _check_expert_nan))
        cases.append((f"expert/{act}-inf", "ExpertFFN", _nf_expert(np.inf), dict(activation=act), _check_expert_inf))
    cases.append(
        ("topk/ignored-picks-nan-inf-weights", "TopKExperts", _nf_topk_ignored, topk_attrs(), _check_topk_ignored)
    )
    cases.append(
        ("topk/nan-inf-live-weights", "TopKExperts", _nf_topk_weight, topk_attrs("none", "relu"), _check_topk_weight)
    )
    for gating in ("glu", "glu_clamped", "glu_clamped_after", "glu_clamped_offset"):
        for act in ("relu", "silu", "quick_gelu"):
            attrs = topk_attrs(gating, act)
            cases.append((f"topk/{gating}-{act}-nan", "TopKExperts", _nf_topk_hidden(np.nan), attrs, _check_topk_nan))
            cases.append((f"topk/{gating}-{act}-inf", "TopKExperts", _nf_topk_hidden(np.inf), attrs, _check_topk_inf))
    # TopKExpertsInt8, relu (the kernel's output is the reference's to the bit): ignored picks and
    # live weights as TopKExperts'; non-finite hidden rows NaN through every gating.
    relu = topk_attrs("glu", "relu")
    cases.append(("topk-int8/ignored-picks", "TopKExpertsInt8", _int8(_nf_topk_ignored), relu, _check_topk_ignored))
    cases.append(
        (
            "topk-int8/live-weights",
            "TopKExpertsInt8",
            _int8(_nf_topk_weight),
            topk_attrs("none", "relu"),
            _check_topk_weight,
        )
    )
    for gating in ("glu", "glu_clamped", "glu_clamped_after", "glu_clamped_offset"):
        for name, special in (("nan", np.nan), ("inf", np.inf)):
            cases.append(
                (
                    f"topk-int8/{gating}-relu-{name}",
                    "TopKExpertsInt8",
                    _int8(_nf_topk_hidden(special)),
                    topk_attrs(gating, "relu"),
                    _check_topk_int8_nonfinite,
                )
            )
    cases += [
        ("top1/nan-inf", "Top1Dispatch", _nf_top1, dict(expert_capacity=12), _check_top1),
        ("argmax/nan-inf", "ArgmaxHash", _nf_argmax, dict(num_hash=2), _check_argmax),
        ("argmax/nonfinite-rows-columns", "ArgmaxHash", _nf_argmax_rule, dict(num_hash=2), _check_argmax_rule),
        (
            "sign-gaussian/nonfinite-rows-columns",
            "SignHash",
            _nf_sign_gaussian,
            dict(num_hash=3, hash_code_len=4, transform="gaussian"),
            _check_sign_gaussian,
        ),
        ("bucket_sum/nan-inf", "BucketSum", _nf_bucket_sum, dict(num_buckets=4), _check_bucket_sum),
    ]
    attention = attention_attrs(_NF_ATTENTION[5])
    cases += [
        ("attention/masked-keys", "MaskedAttention", _nf_attention_masked, attention, _check_attention_masked),
        ("attention/live-keys", "MaskedAttention", _nf_attention_live, attention, _check_attention_live),
        (
            "attention/zero-weights",
            "MaskedAttention",
            _nf_attention_zero_weight,
            attention,
            _check_attention_zero_weight,
        ),
    ]
    return cases


NONFINITE_CASES = _nonfinite_cases()
NONFINITE_RTOL = {"float32": 1e-5, "float16": 2e-3}  # times max(1, max |finite reference|)


def nonfinite_inputs(case, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The case's inputs (seeded by its id), float arrays in `dtype` (3e38 is Inf in float16)."""
    case_id, _, make, _, _ = case
    inputs = make(np.random.default_rng(sum(map(ord, case_id))))
    with np.errstate(over="ignore"):
        return {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in inputs.items()}
