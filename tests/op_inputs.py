"""The one table of per-op test inputs: how to make valid inputs for every op of the catalogue, and
the sizes the suites call each op at. Everything that calls an op on made-up data draws from here:

* the fuzz suite's valid calls, which it mutates (`OpInputs.small`: tests/fuzz_cases.py), and the
  mechanical bad-input cases built from them (tests/test_bad_input.py);
* calls large enough that every kernel splits its work over several workers (`OpInputs.workers`):
  the concurrency and soak tests (tests/test_concurrency.py) and the threads-and-CPUs test
  (tests/test_library_hygiene.py);
* the kernel tests' shape grids and input makers (`LSH_CASES`, `lsh_inputs`, ...), which the CPU
  kernel tests and the CUDA kernel tests (through tests/kernel_cases.py) share;
* the TensorRT optimisation profiles tests/trt_workspace_check.cc sweeps (`OpInputs.trt_profiles`,
  one or more per op with a CUDA kernel), whose tensors' dims come from the spec (op_specs.h).

A new op is one `OpInputs` in `TABLE` (and its makers beside the others). Inputs are float32;
`in_float_type` gives any call in another of the op's float types (float16), as the spec says which
tensors are T. numpy only at import: the CUDA tests import this on a GPU machine that may lack onnx
and onnxruntime (ExpertFFN's routing imports torch and the reference when called).

Shapes cover sizes that are no multiple of the kernels' slabs (N of 1, 7, 33, 100; D of 7, 20, 33
beside 16, 32, 64, 96), Nq != Nk, several hash counts and code lengths, masks with zeros (and
out-of-range codes in masked rows, which must be ignored), batch 1 and 3, projection groups 1 and 3.
Each value appears in a few combinations rather than a full Cartesian product, to keep the files fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bucketrt.ops.catalogue import BY_NAME, hadamard_parts
from bucketrt.ops.schema import FLOAT

# -- the input makers ------------------------------------------------------------------------


def mask(rng, shape, masked: float) -> np.ndarray:
    """int32 mask with about `masked` zeros; live entries are 1 or 3 (any non-zero counts)."""
    live = rng.random(shape) >= masked
    return np.where(live, rng.choice(np.array([1, 3], dtype=np.int32), size=shape), 0).astype(np.int32)


# LSHCumulation: batch, num_query, num_key, dim, num_hash, capacity
LSH_CASES = [
    (1, 1, 1, 16, 1, 1),
    (3, 7, 33, 32, 5, 8),
    (1, 100, 7, 64, 32, 64),
    (3, 33, 100, 96, 64, 512),  # D=96 at capacity 512: several passes over hash groups
    (3, 100, 33, 16, 64, 16),
    (3, 7, 1, 7, 1, 4),  # D below one slab, not a multiple of 4
    (1, 1, 100, 33, 32, 32),  # a one-column tail slab
    (3, 100, 100, 20, 5, 256),  # a four-column tail slab
    (1, 33, 7, 96, 1, 2),
    (1, 7, 33, 44, 5, 8),  # slabs of 16, 16 and 12 columns
    (3, 33, 7, 24, 32, 128),  # slabs of 16 and 8 columns
]


def lsh_seed(batch, num_query, num_key, dim, num_hash, capacity) -> int:
    return 1000 * batch + 10 * num_query + num_key + dim + num_hash


def lsh_inputs(rng, batch, num_query, num_key, dim, num_hash, capacity, masked=0.25, max_code=None):
    hi = capacity if max_code is None else max_code + 1
    query_mask = mask(rng, (batch, num_query), masked)
    key_mask = mask(rng, (batch, num_key), masked)
    query_hash = rng.integers(0, hi, (batch, num_query, num_hash), dtype=np.int32)
    key_hash = rng.integers(0, hi, (batch, num_key, num_hash), dtype=np.int32)
    # Masked rows may carry any code: out-of-range ones prove the kernel ignores them.
    query_hash[query_mask == 0] = -7
    key_hash[key_mask == 0] = capacity + 5
    value = rng.standard_normal((batch, num_key, dim)).astype(np.float32)
    return {
        "query_mask": query_mask,
        "query_hash": query_hash,
        "key_mask": key_mask,
        "key_hash": key_hash,
        "value": value,
    }


# SignHash, hadamard: batch, length, dim, num_hash, code_len, groups: ±1 diagonals
HADAMARD_CASES = [
    (1, 1, 16, 1, 1, 1),
    (3, 7, 16, 5, 4, 3),
    (3, 33, 32, 32, 9, 1),  # 3 codes per part: 11 parts
    (1, 100, 64, 64, 4, 1),
    (3, 100, 64, 5, 9, 3),
    (3, 7, 16, 32, 9, 3),  # one code per part: 32 parts
    (1, 33, 32, 3, 30, 1),  # 30-bit codes
    (3, 1, 128, 1, 1, 1),
]

# batch, length, dim, num_hash, code_len, groups: real-valued diagonals, small dims
HADAMARD_ANY_DIAGONAL_CASES = [
    (2, 9, 1, 3, 1, 1),  # D below every SIMD width: no butterflies at all
    (2, 9, 2, 4, 2, 2),
    (1, 20, 4, 6, 3, 1),
    (3, 17, 8, 9, 4, 3),
    (1, 70, 256, 40, 9, 1),
]

# SignHash, gaussian: batch, length, dim, num_hash, code_len, groups
GAUSSIAN_CASES = [
    (1, 1, 16, 1, 1, 1),
    (3, 7, 96, 5, 4, 3),
    (3, 33, 32, 32, 9, 1),
    (1, 100, 64, 64, 4, 1),
    (3, 100, 20, 5, 9, 3),
    (3, 33, 7, 3, 30, 3),
]


def sign_inputs(rng, batch, length, dim, groups, proj_shape, integers=False, masked=0.25):
    m = mask(rng, (batch, length), masked)
    if integers:
        vector = rng.integers(-3, 4, (batch, length, dim)).astype(np.float32)
        projection = rng.integers(-2, 3, (groups, *proj_shape)).astype(np.float32)
    else:
        vector = rng.standard_normal((batch, length, dim)).astype(np.float32)
        projection = rng.standard_normal((groups, *proj_shape)).astype(np.float32)
    return {"mask": m, "vector": vector, "projection": projection}


def signs(projection: np.ndarray) -> np.ndarray:
    """±1 diagonals from any values (0 counts as +1)."""
    return (np.sign(projection) + (projection == 0)).astype(projection.dtype)


def hadamard_inputs(rng, batch, length, dim, groups, num_hash, code_len) -> dict[str, np.ndarray]:
    """SignHash's inputs for transform='hadamard' with ±1 diagonals (YOSO's fast hash)."""
    inputs = sign_inputs(rng, batch, length, dim, groups, (3 * hadamard_parts(dim, num_hash, code_len), dim))
    inputs["projection"] = signs(inputs["projection"])
    return inputs


# ArgmaxHash: batch, heads, length, dim, num_hash, bucket sizes
ARGMAX_CASES = [
    (1, 1, 1, 4, 1, [2]),
    (3, 2, 33, 16, 4, [8]),
    (1, 2, 100, 64, 1, [64, 128]),  # crime-and-punishment's factorised buckets
    (3, 1, 130, 7, 2, [4, 6, 2]),
    (2, 3, 65, 32, 3, [32]),
]


def argmax_inputs(rng, batch, heads, length, dim, num_hash, sizes, masked=0.25) -> dict[str, np.ndarray]:
    m = (rng.random((batch, length)) >= masked).astype(np.int32) * rng.choice([1, 3], (batch, length)).astype(np.int32)
    return {
        "mask": m,
        "vector": rng.standard_normal((batch, heads, length, dim)).astype(np.float32),
        "projection": rng.standard_normal((heads, dim, num_hash * sum(sizes) // 2)).astype(np.float32),
        "bucket_sizes": np.array(sizes, np.int32),
    }


# SortedChunkAttention: batch, heads, length, dim, rounds, buckets (ids drawn below), attributes
CHUNK_ATTENTION_CASES = [
    (1, 1, 5, 8, 1, 4, dict(chunk_length=8)),  # plain attention (N <= chunk)
    (3, 2, 8, 16, 4, 4, dict(chunk_length=8, causal=1, mask_self=1)),  # N == chunk: plain too
    (3, 2, 32, 16, 1, 4, dict(chunk_length=8, causal=1, mask_self=1)),
    (2, 2, 48, 8, 4, 6, dict(chunk_length=8, mask_self=1)),  # rounds wrap into each other
    (1, 3, 40, 12, 2, 9, dict(chunk_length=4, chunks_before=2, chunks_after=1)),
    (2, 1, 24, 7, 1, 1, dict(chunk_length=4, chunks_after=1)),  # local: constant buckets
    (1, 1, 64, 64, 1, 1000, dict(chunk_length=16, causal=1)),  # buckets far above N: comparison sort
]


def chunk_attention_seed(batch, heads, length, dim, rounds) -> int:
    return length * 10 + dim + rounds


def chunk_attention_inputs(rng, batch, heads, length, dim, rounds, num_buckets, masked=0.2):
    mask = (rng.random((batch, length)) >= masked).astype(np.int32)
    return {
        "query": rng.standard_normal((batch, heads, length, dim)).astype(np.float32),
        "key": rng.standard_normal((batch, heads, length, dim)).astype(np.float32),
        "value": rng.standard_normal((batch, heads, length, dim)).astype(np.float32),
        "mask": mask,
        "buckets": rng.integers(0, num_buckets, (batch, heads, rounds, length), dtype=np.int32),
    }


# BucketSum: groups, rows, dim, num_buckets
BUCKET_SUM_CASES = [(1, 1, 1, 1), (5, 8, 6, 4), (37, 16, 64, 8), (3, 100, 33, 7)]


def bucket_sum_inputs(rng, groups, rows, dim, num_buckets) -> dict[str, np.ndarray]:
    return {
        "bucket": rng.integers(0, num_buckets, (groups, rows)).astype(np.int32),
        "weight": rng.random((groups, rows)).astype(np.float32),
        "vector": rng.standard_normal((groups, rows, dim)).astype(np.float32),
    }


# Top1Dispatch: batch, length, experts, capacity, skew (skew > 0 crowds expert 0: overflow, and
# experts with no token)
TOP1_CASES = [
    (1, 1, 1, 1, 0.0),
    (2, 7, 2, 2, 0.0),
    (3, 33, 8, 4, 2.0),
    (2, 64, 16, 64, 0.0),
    (4, 10, 3, 0, 0.0),
    (1, 50, 8, 3, 6.0),
]


def top1_probs(rng, batch, length, experts, skew=0.0) -> np.ndarray:
    """Router probabilities: a softmax over experts of normal logits (expert 0's raised by skew)."""
    logits = rng.standard_normal((batch, length, experts)).astype(np.float32)
    logits[..., 0] += skew
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# ExpertFFN: batch, length, dim, ff, experts, expert_capacity, skew (> 0 crowds expert 0)
EXPERT_FFN_CASES = [
    (1, 1, 7, 5, 1, 1, 0.0),
    (2, 9, 16, 40, 2, 3, 0.0),
    (3, 40, 24, 96, 8, 6, 2.0),
    (2, 300, 16, 32, 3, 300, 0.0),
    (2, 20, 8, 12, 16, 20, 0.0),
    (2, 10, 8, 12, 4, 0, 0.0),
    # d_ff wide enough to be sliced across workers (uneven last slice), and a single decoding token
    (2, 9, 24, 300, 3, 9, 0.0),
    (1, 1, 16, 530, 2, 1, 0.0),
    (3, 70, 16, 1000, 5, 70, 1.0),
]


def expert_ffn_inputs(
    rng, batch, length, dim, ff, experts, capacity, skew=0.0, scaled=True, shuffled=False
) -> dict[str, np.ndarray]:
    """ExpertFFN's inputs: tokens routed by the reference Top1Dispatch on softmaxed normal logits
    (expert 0's raised by skew, which crowds it and starves the others), then the experts' weights,
    normal, divided by the square root of their fan-in where `scaled` (as nn.Linear's are, so that the
    outputs stay of the inputs' size). `shuffled`: each expert's tokens listed in a random order
    rather than ascending (ExpertFFN takes any order within an expert)."""
    import torch

    from bucketrt.ops import reference

    logits = rng.standard_normal((batch, length, experts)).astype(np.float32)
    logits[..., 0] += skew
    probs = torch.softmax(torch.from_numpy(logits), -1)
    _, gate, _, counts, order = reference.top1_dispatch(probs, expert_capacity=capacity)
    inputs = {
        "hidden": rng.standard_normal((batch, length, dim)).astype(np.float32),
        "order": order.numpy(),
        "counts": counts.numpy(),
        "gate": gate.numpy(),
        "wi": (rng.standard_normal((experts, ff, dim)) / (np.sqrt(dim) if scaled else 1.0)).astype(np.float32),
        "wo": (rng.standard_normal((experts, dim, ff)) / (np.sqrt(ff) if scaled else 1.0)).astype(np.float32),
    }
    if shuffled:
        flat, start = inputs["order"].reshape(-1), 0
        for count in inputs["counts"].tolist():
            flat[start : start + count] = rng.permutation(flat[start : start + count])
            start += count
    return inputs


def expert_ffn_int8_inputs(rng, batch, length, dim, ff, experts, capacity, skew=0.0, **kw) -> dict[str, np.ndarray]:
    """ExpertFFNInt8's inputs: ExpertFFN's, the experts' weights quantized as the rewrite does
    (bucketrt.quantization.expert_ffn: int8 codes, one scale per output channel)."""
    from bucketrt.quantization.expert_ffn import quantize_weights

    inputs = expert_ffn_inputs(rng, batch, length, dim, ff, experts, capacity, skew, **kw)
    wi, wi_scale = quantize_weights(inputs.pop("wi"))
    wo, wo_scale = quantize_weights(inputs.pop("wo"))
    return {**inputs, "wi": wi, "wi_scale": wi_scale, "wo": wo, "wo_scale": wo_scale}


# TopKExperts: tokens, picks K, dim D, ff F, experts E, gating, and the share of picks with no
# expert (index E). Sizes off the kernel's SIMD steps and slices (D, F of 1, 7, 33, 130, 300), K 1 to
# 8, E 1 to 64, decoding steps (T 1 to 4) and blocks of many rows per expert.
TOPK_CASES = [
    (1, 1, 8, 16, 1, "glu", 0.0),
    (1, 8, 33, 20, 64, "glu", 0.0),  # a decoding step: 8 experts of 64, a row each
    (4, 2, 16, 130, 8, "glu_clamped_offset", 0.0),  # F sliced in two
    (3, 4, 7, 5, 4, "none", 0.3),
    (37, 2, 20, 33, 5, "glu_clamped", 0.2),
    (100, 8, 24, 12, 64, "glu_clamped_after", 0.1),
    (300, 2, 130, 40, 8, "glu", 0.05),  # rows past one task's 256, D sliced in two
    (50, 3, 1, 1, 2, "none", 0.0),  # D = F = 1
    (64, 5, 48, 300, 6, "glu", 0.5),  # half the picks without an expert
]
# Every gating, with the limit its family uses (or 0).
GATING_LIMITS = {"none": 0.0, "glu": 0.0, "glu_clamped": 10.0, "glu_clamped_after": 7.0, "glu_clamped_offset": 7.0}


def topk_index(rng, tokens, picks, experts, none=0.0, crowd=0.0) -> np.ndarray:
    """[T, K] expert indices as a top-k router picks them: distinct experts per token (where K <= E),
    about `none` of the picks E (no expert), and pick 0 of about `crowd` of the tokens expert 0."""
    if picks <= experts:
        index = np.argsort(rng.random((tokens, experts)), axis=1)[:, :picks]
    else:
        index = rng.integers(0, experts, (tokens, picks))
    index = np.where(rng.random((tokens, picks)) < crowd, 0, index) if crowd else index
    index = np.where(rng.random((tokens, picks)) < none, experts, index)
    return index.astype(np.int32)


def topk_experts_inputs(
    rng, tokens, picks, dim, ff, experts, gating="glu", none=0.0, crowd=0.0, scaled=True, index=None
) -> dict[str, np.ndarray]:
    """TopKExperts' inputs: routed by `topk_index` (or `index`), routing weights in (0, 1), the experts'
    weights normal divided by the square root of their fan-in where `scaled` (nn.Linear's size), the
    biases normal times 0.1."""
    width = ff if gating == "none" else 2 * ff
    fan_in, fan_ff = (np.sqrt(dim), np.sqrt(ff)) if scaled else (1.0, 1.0)
    return {
        "hidden": rng.standard_normal((tokens, dim)).astype(np.float32),
        "expert_index": topk_index(rng, tokens, picks, experts, none, crowd) if index is None else index,
        "expert_weight": rng.random((tokens, picks)).astype(np.float32),
        "gate_up": (rng.standard_normal((experts, width, dim)) / fan_in).astype(np.float32),
        "gate_up_bias": (0.1 * rng.standard_normal((experts, width))).astype(np.float32),
        "down": (rng.standard_normal((experts, dim, ff)) / fan_ff).astype(np.float32),
        "down_bias": (0.1 * rng.standard_normal((experts, dim))).astype(np.float32),
    }


def topk_experts_int8_inputs(rng, *args, **kw) -> dict[str, np.ndarray]:
    """TopKExpertsInt8's inputs: TopKExperts' (topk_experts_inputs' arguments), quantized by
    `quantize_topk_experts_inputs`."""
    return quantize_topk_experts_inputs(topk_experts_inputs(rng, *args, **kw))


def quantize_topk_experts_inputs(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TopKExperts' inputs as TopKExpertsInt8's: the experts' weights quantized as the rewrite does
    (bucketrt.quantization.expert_ffn: int8 codes, one scale per expert and output channel), the
    biases float."""
    from bucketrt.quantization.expert_ffn import quantize_weights

    gate_up, gate_up_scale = quantize_weights(inputs["gate_up"])
    down, down_scale = quantize_weights(inputs["down"])
    return {
        **{name: inputs[name] for name in ("hidden", "expert_index", "expert_weight")},
        **{"gate_up": gate_up, "gate_up_scale": gate_up_scale, "gate_up_bias": inputs["gate_up_bias"]},
        **{"down": down, "down_scale": down_scale, "down_bias": inputs["down_bias"]},
    }


# LinearInt8: batch, length, in K, out N. Sizes off the VNNI GEMM's 4 rows and 4 weight rows and
# 64 k and the AVX2 GEMM's 2 weight rows and 32 k (K of 1, 7, 31, 33, 65, 130), N past one slice of
# 128 and several of 512, decoding steps (one to five rows: the GEMMs' first block, which also sums
# the weight rows, at each of its sizes).
LINEAR_INT8_CASES = [
    (1, 1, 64, 16),
    (1, 1, 130, 300),  # a decoding step, N in three slices
    (2, 1, 31, 3),
    (3, 1, 65, 7),
    (5, 1, 32, 5),
    (2, 3, 7, 5),
    (3, 33, 33, 129),
    (1, 300, 96, 1100),  # rows past one task's 256, N past two wide slices
    (2, 5, 1, 1),
]


def linear_int8_inputs(rng, batch, length, k_len, n_len) -> dict[str, np.ndarray]:
    """LinearInt8's inputs: normal rows, an nn.Linear-sized normal weight quantized as the rewrite does
    (bucketrt.quantization.linear: int8 codes, one scale per output channel), a bias normal times 0.1."""
    from bucketrt.quantization.expert_ffn import quantize_weights

    weight, scale = quantize_weights((rng.standard_normal((1, n_len, k_len)) / np.sqrt(k_len)).astype(np.float32))
    return {
        "input": rng.standard_normal((batch, length, k_len)).astype(np.float32),
        "weight": weight[0],
        "weight_scale": scale[0],
        "bias": (0.1 * rng.standard_normal(n_len)).astype(np.float32),
    }


def topk_attrs(gating="glu", activation="silu") -> dict:
    return {"activation": activation, "gating": gating, "limit": GATING_LIMITS[gating]}


# MaskedAttention: batch B, query heads H, key/value heads N, queries S, keys T (T > S: a KV cache of
# T - S keys before the new ones), dim D, value dim Dv, the mask's kind, sinks (False: -inf, none).
# GQA (H/N of 4 and 3), MHA (H = N) and MQA (N = 1); D and Dv apart and off the SIMD steps; several
# blocks of 64 queries, and blocks of fewer where T > 1024 (the CPU kernel's tile holds 64 x 1024
# logits); decoding steps (S = 1); rows without any key (padding, random holes).
MASKED_ATTENTION_CASES = [
    (1, 1, 1, 1, 1, 8, 8, "causal", False),
    (2, 8, 2, 7, 7, 16, 16, "causal", True),  # GQA prefill
    (2, 4, 4, 5, 37, 32, 32, "causal", True),  # H = N, a KV cache of 32 keys
    (3, 8, 2, 33, 40, 64, 64, "left", True),  # left padding (batched generation)
    (2, 6, 3, 20, 20, 33, 7, "right", False),  # right padding: padded queries attend no key
    (1, 8, 1, 100, 100, 64, 64, "window", True),  # MQA, a sliding window, two blocks
    (2, 4, 2, 1, 130, 64, 80, "left", True),  # a decoding step
    (1, 2, 1, 70, 70, 20, 48, "holes", False),  # random holes: rows not dense, some empty
    (2, 3, 3, 9, 12, 5, 3, "full", True),  # no mask at all
    (1, 2, 2, 3, 1100, 16, 16, "causal", True),  # T > 1024: blocks of 59 queries
    (1, 2, 1, 130, 2100, 8, 12, "window", False),  # blocks of 31 queries, five of them
]
MASK_KINDS = ("causal", "left", "right", "window", "holes", "full")


def attention_mask(rng, kind: str, batch: int, queries: int, keys: int, window: int = 0) -> np.ndarray:
    """[B, S, T] int32, live entries 1 or 3 (any non-zero attends). The S queries are the last S
    positions of the T keys (a KV cache before them). causal: key <= query's position; left, right:
    causal with each row's first (last) few keys padding, which a padded query attends none of
    (right) or still attends its own non-padding keys (left); window: causal within `window` keys
    (default T // 4 + 1); holes: about a third of the entries masked at random (rows not dense, some
    empty); full: every key."""
    position = np.arange(queries)[:, None] + (keys - queries)
    key = np.arange(keys)[None, :]
    live = np.broadcast_to(key <= position, (batch, queries, keys)).copy()
    if kind == "full":
        live[:] = True
    elif kind in ("left", "right"):
        for b in range(batch):
            pad = int(rng.integers(0, max(1, keys // 2) + 1)) if b else 0  # row 0 unpadded
            if kind == "left":
                live[b, :, :pad] = False
            else:
                live[b, :, keys - pad :] = False
                live[b, max(0, queries - pad) :] = False  # padded queries attend nothing
    elif kind == "window":
        live &= key > position - (window or keys // 4 + 1)
    elif kind == "holes":
        live = rng.random((batch, queries, keys)) >= 0.35
        live[:, ::5] &= rng.random((batch, (queries + 4) // 5, keys)) >= 0.9  # sparse rows
        live[:, 3::11] = False  # empty rows
    elif kind != "causal":
        raise ValueError(kind)
    ones = rng.choice(np.array([1, 3], dtype=np.int32), size=live.shape)
    return np.where(live, ones, 0).astype(np.int32)


def masked_attention_inputs(
    rng, batch, heads, kv_heads, queries, keys, dim, value_dim, kind="causal", sinks=True, **mask_kw
) -> dict[str, np.ndarray]:
    """MaskedAttention's inputs: normal queries, keys and values, the mask `attention_mask(kind)`,
    sinks normal (or -inf: none)."""
    return {
        "query": rng.standard_normal((batch, heads, queries, dim)).astype(np.float32),
        "key": rng.standard_normal((batch, kv_heads, keys, dim)).astype(np.float32),
        "value": rng.standard_normal((batch, kv_heads, keys, value_dim)).astype(np.float32),
        "mask": attention_mask(rng, kind, batch, queries, keys, **mask_kw),
        "sinks": (rng.standard_normal(heads).astype(np.float32) if sinks else np.full(heads, -np.inf, np.float32)),
    }


def attention_attrs(dim: int) -> dict:
    return {"scale": float(np.float32(max(dim, 1) ** -0.5))}


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One valid call of an op: its inputs by name in spec order (T tensors float32) and attributes."""

    inputs: dict[str, np.ndarray]
    attrs: dict


Maker = Callable[[np.random.Generator], Call]


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimisation profile of one op for tests/trt_workspace_check.cc. Each symbol of the
    op's input dims is sampled from `ranges` (lo, hi, step), held at a `fixed` value, or `tied` to
    another symbol (value = other * factor); an int attribute names its own dims. The check sweeps
    `samples` random shapes, every value of `exhaustive` (the others at their max) and the corners."""

    what: str
    attrs: dict
    ranges: dict[str, tuple[int, int, int]]
    fixed: dict[str, int] = field(default_factory=dict)
    tied: dict[str, tuple[str, int]] = field(default_factory=dict)
    float_type: str = "float32"
    samples: int = 0
    exhaustive: str | None = None


@dataclass(frozen=True)
class OpInputs:
    op: str
    # Small valid calls, one per way of the op, by the fuzz suite's base id (its case ids start with it).
    small: dict[str, Maker]
    # Calls large enough that every kernel splits its work over several workers, by variant.
    workers: dict[str, Maker]
    # Where the op has a CUDA kernel (a TensorRT plugin): profiles whose shapes take every way its plan has.
    trt_profiles: tuple[Profile, ...] = ()


def _lsh(*sizes, masked=0.25):
    return lambda rng: Call(lsh_inputs(rng, *sizes, masked=masked), {"hashtable_capacity": sizes[-1]})


def _hadamard(batch, length, dim, groups, num_hash, code_len):
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "hadamard"}
    return lambda rng: Call(hadamard_inputs(rng, batch, length, dim, groups, num_hash, code_len), attrs)


def _gaussian(batch, length, dim, groups, num_hash, code_len):
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "gaussian"}
    return lambda rng: Call(sign_inputs(rng, batch, length, dim, groups, (dim, num_hash * code_len)), attrs)


def _argmax(batch, heads, length, dim, num_hash, sizes):
    return lambda rng: Call(argmax_inputs(rng, batch, heads, length, dim, num_hash, sizes), {"num_hash": num_hash})


def _chunk(batch, heads, length, dim, rounds, num_buckets, **attrs):
    return lambda rng: Call(chunk_attention_inputs(rng, batch, heads, length, dim, rounds, num_buckets), attrs)


def _bucket_sum(groups, rows, dim, num_buckets):
    return lambda rng: Call(bucket_sum_inputs(rng, groups, rows, dim, num_buckets), {"num_buckets": num_buckets})


def _top1(batch, length, experts, capacity, skew=0.0):
    return lambda rng: Call({"probs": top1_probs(rng, batch, length, experts, skew)}, {"expert_capacity": capacity})


def _expert_ffn(batch, length, dim, ff, experts, capacity, skew=0.0, activation="relu", make=expert_ffn_inputs, **kw):
    return lambda rng: Call(
        make(rng, batch, length, dim, ff, experts, capacity, skew, **kw), {"activation": activation}
    )


def _topk(tokens, picks, dim, ff, experts, gating="glu", activation="silu", none=0.0, make=topk_experts_inputs, **kw):
    """A TopKExperts (or, make=topk_experts_int8_inputs, TopKExpertsInt8) call (kw: topk_experts_inputs'
    crowd, scaled)."""
    return lambda rng: Call(
        make(rng, tokens, picks, dim, ff, experts, gating, none, **kw), topk_attrs(gating, activation)
    )


def _linear(batch, length, k_len, n_len):
    return lambda rng: Call(linear_int8_inputs(rng, batch, length, k_len, n_len), {})


def _attention(batch, heads, kv_heads, queries, keys, dim, value_dim, kind="causal", sinks=True):
    return lambda rng: Call(
        masked_attention_inputs(rng, batch, heads, kv_heads, queries, keys, dim, value_dim, kind, sinks),
        attention_attrs(dim),
    )


def _lsh_profile(what, capacity, deterministic, ranges, **kwargs):
    return Profile(what, {"hashtable_capacity": capacity, "deterministic": deterministic}, ranges, **kwargs)


TABLE: dict[str, OpInputs] = {
    row.op: row
    for row in (
        OpInputs(
            "LSHCumulation",
            small={"lsh": _lsh(2, 3, 5, 8, 2, 8)},
            workers={"": _lsh(3, 200, 180, 40, 12, 64, masked=0.2)},
            trt_profiles=(
                # The case: sorted slices cut by Nk; before, 823 values of N in [4096, 16384]
                # needed more than N = 16384.
                _lsh_profile(
                    "LSHCumulation sorted, B=1 m=64 D=64, every N in [4096, 16384]",
                    512,
                    1,
                    {"Nk": (4096, 16384, 1)},
                    fixed={"B": 1, "m": 64, "D": 64},
                    tied={"Nq": ("Nk", 1)},
                    exhaustive="Nk",
                ),
                _lsh_profile(
                    "LSHCumulation sorted, every D in [1, 512]",
                    512,
                    1,
                    {"B": (1, 4, 1), "Nq": (1, 8192, 1), "Nk": (1, 8192, 1), "m": (1, 64, 1), "D": (1, 512, 1)},
                    samples=3000,
                    exhaustive="D",
                ),
                _lsh_profile(
                    "LSHCumulation dense, every m in [1, 64]",
                    512,
                    0,
                    {"B": (1, 16, 1), "Nq": (1, 4096, 1), "Nk": (1, 4096, 1), "m": (1, 64, 1), "D": (1, 160, 1)},
                    samples=3000,
                    exhaustive="m",
                ),
                # capacity 65536: m * D * 65536 * 4 bytes crosses the dense tables' 256 MiB inside the profile.
                _lsh_profile(
                    "LSHCumulation dense and sorted (capacity 65536), every D in [1, 128]",
                    65536,
                    0,
                    {"B": (1, 8, 1), "Nq": (1, 4096, 1), "Nk": (1, 4096, 1), "m": (1, 64, 1), "D": (1, 128, 1)},
                    samples=3000,
                    exhaustive="D",
                ),
            ),
        ),
        OpInputs(
            "SignHash",
            small={"sign-hadamard": _hadamard(3, 5, 16, 1, 4, 4), "sign-gaussian": _gaussian(2, 4, 8, 2, 3, 4)},
            workers={"hadamard": _hadamard(4, 64, 32, 2, 8, 8), "gaussian": _gaussian(3, 300, 64, 1, 8, 6)},
            trt_profiles=(
                Profile(
                    "SignHash hadamard D=2048 (rows in the workspace)",
                    {"num_hash": 4, "hash_code_len": 8, "transform": "hadamard"},
                    {"B": (1, 8, 1), "N": (1, 4096, 1)},
                    fixed={"D": 2048, "G": 1, "R": 3, "C": 2048},
                    float_type="float16",
                    samples=500,
                ),
                Profile(
                    "SignHash gaussian",
                    {"num_hash": 4, "hash_code_len": 8, "transform": "gaussian"},
                    {"B": (1, 8, 1), "N": (1, 4096, 1), "D": (1, 4096, 1)},
                    fixed={"G": 1, "C": 32},
                    tied={"R": ("D", 1)},
                    samples=500,
                    exhaustive="D",
                ),
            ),
        ),
        OpInputs(
            "ArgmaxHash",
            small={"argmax": _argmax(2, 2, 5, 8, 2, [2, 4])},
            workers={"": _argmax(2, 3, 96, 16, 2, [4, 6])},
            trt_profiles=(
                Profile(
                    "ArgmaxHash",
                    {"num_hash": 2},
                    {"B": (1, 8, 1), "H": (1, 12, 1), "N": (1, 4096, 1), "D": (1, 128, 1)},
                    fixed={"C": 32, "F": 1},
                    samples=500,
                ),
            ),
        ),
        OpInputs(
            "SortedChunkAttention",
            small={
                "chunk": _chunk(
                    1, 2, 8, 4, 2, 3, chunk_length=4, chunks_before=1, chunks_after=1, causal=1, mask_self=1
                )
            },
            workers={
                "": _chunk(2, 3, 64, 16, 2, 8, chunk_length=8, chunks_before=1, chunks_after=1, causal=1, mask_self=1)
            },
            trt_profiles=(
                Profile(
                    "SortedChunkAttention (one chunk to 64, 1 to 8 rounds)",
                    {"chunk_length": 64, "chunks_before": 1, "max_length": 4096},
                    # whole chunks of 64 (K = 1: one chunk, plain attention)
                    {"B": (1, 4, 1), "H": (1, 12, 1), "K": (1, 64, 1), "D": (1, 128, 1), "R": (1, 8, 1)},
                    tied={"N": ("K", 64)},
                    samples=1000,
                    exhaustive="K",
                ),
            ),
        ),
        OpInputs(
            "BucketSum",
            small={"bucket-sum": _bucket_sum(2, 5, 3, 4)},
            workers={"": _bucket_sum(5, 100, 24, 16)},
            trt_profiles=(
                Profile(
                    "BucketSum, every N in [1, 4096]",
                    {"num_buckets": 64},
                    {"G": (1, 96, 1), "N": (1, 4096, 1), "D": (1, 256, 1)},
                    samples=2000,
                    exhaustive="N",
                ),
            ),
        ),
        OpInputs(
            "Top1Dispatch",
            small={"top1": _top1(2, 5, 3, 2)},
            workers={"": _top1(3, 90, 8, 20)},
            trt_profiles=(
                Profile(
                    "Top1Dispatch",
                    {"expert_capacity": 64},
                    {"B": (1, 8, 1), "S": (1, 4096, 1), "E": (1, 128, 1)},
                    samples=1000,
                ),
            ),
        ),
        OpInputs(
            "ExpertFFN",
            # Unscaled weights: the fuzz's huge values (x 3e38) overflow to Inf in the first product already,
            # whatever the order of its sums, rather than in the second one, where Inf + -Inf = NaN or
            # not depends on that order (which the spec leaves to each backend). Each expert's tokens
            # in a random order, as ExpertFFN may get them.
            small={"expert-ffn": _expert_ffn(2, 4, 6, 5, 3, 2, activation="gelu_new", scaled=False, shuffled=True)},
            workers={"": _expert_ffn(2, 150, 32, 512, 4, 60, skew=1.0, activation="gelu", shuffled=True)},
            trt_profiles=(
                Profile(
                    "ExpertFFN",
                    {"activation": "relu"},
                    {"B": (1, 8, 1), "S": (1, 1024, 1), "D": (1, 256, 1), "F": (1, 1024, 1), "E": (1, 64, 1)},
                    samples=1000,
                ),
            ),
        ),
        OpInputs(
            "ExpertFFNInt8",
            # relu: exact in both, so that the kernel's output is the reference's to the bit (catalogue.py).
            small={"expert-ffn-int8": _expert_ffn(2, 4, 6, 5, 3, 2, make=expert_ffn_int8_inputs, shuffled=True)},
            workers={
                "": _expert_ffn(
                    2, 150, 32, 512, 4, 60, skew=1.0, activation="gelu", make=expert_ffn_int8_inputs, shuffled=True
                )
            },
        ),
        OpInputs(
            "TopKExperts",
            # GPT-OSS's gating (clamped, offset, quick_gelu) with picks of no expert; unscaled weights, as
            # ExpertFFN's (the fuzz's huge values overflow in the first product already).
            small={
                "topk-experts": _topk(5, 2, 6, 5, 3, "glu_clamped_offset", "quick_gelu", none=0.2, scaled=False),
            },
            # F and D sliced, rows past one task's, every combine chunk: the workers split each pass.
            workers={"": _topk(200, 4, 160, 300, 8, "glu", "gelu", none=0.1, crowd=0.3)},
            trt_profiles=(
                # Decoding steps to prefills of 8192 tokens: one pass, then several (the pairs'
                # activations and outputs past 256 MiB), G = 2F; the limit a float attribute.
                Profile(
                    "TopKExperts glu_clamped_offset (GPT-OSS), one pass to several",
                    {"activation": "quick_gelu", "gating": "glu_clamped_offset", "limit": 7.0},
                    {"T": (1, 8192, 1), "K": (1, 8, 1), "D": (1, 4096, 1), "F": (1, 4096, 1), "E": (1, 128, 1)},
                    tied={"G": ("F", 2)},
                    samples=2000,
                    exhaustive="T",
                ),
                # More pairs than the sort holds at once (2^25): the passes cut by the sort too; G = F.
                Profile(
                    "TopKExperts none, up to 2^26 pairs",
                    {"activation": "relu", "gating": "none"},
                    {"T": (1, 1 << 22, 1), "K": (1, 16, 1), "D": (1, 256, 1), "F": (1, 256, 1), "E": (1, 512, 1)},
                    tied={"G": ("F", 1)},
                    samples=1000,
                    exhaustive="K",
                ),
            ),
        ),
        OpInputs(
            "TopKExpertsInt8",
            # GPT-OSS's gating with picks of no expert, as TopKExperts'; relu, so that the kernel's
            # output is the reference's to the bit (catalogue.py: the integer sums are exact).
            small={
                "topk-experts-int8": _topk(
                    5, 2, 6, 5, 3, "glu_clamped_offset", "relu", none=0.2, make=topk_experts_int8_inputs
                ),
            },
            # F and D sliced, rows past one task's, every quantization and combine chunk split.
            workers={"": _topk(200, 4, 160, 300, 8, "glu", "gelu", none=0.1, crowd=0.3, make=topk_experts_int8_inputs)},
        ),
        OpInputs(
            "LinearInt8",
            # The integer sums are exact: the kernel's output is the reference's to the bit.
            small={"linear-int8": _linear(2, 3, 7, 5)},
            # N sliced into tasks, rows past one task's: the workers pull the slices.
            workers={"": _linear(2, 150, 96, 700)},
        ),
        OpInputs(
            "MaskedAttention",
            # GQA (H = 2N) with sinks under a left-padded causal mask with a KV cache; a decoding step.
            small={
                "masked-attention": _attention(2, 4, 2, 3, 5, 4, 3, "left"),
                "masked-attention-decode": _attention(2, 2, 1, 1, 6, 3, 5, "holes", sinks=False),
            },
            # Tasks per (b, key/value head, block of 64 queries): 2 x 2 x 4 under a causal mask (the
            # blocks' spans differ), and blocks of 21 queries where T = 3000 (T > 1024).
            workers={
                "causal": _attention(2, 8, 2, 200, 230, 64, 64, "causal"),
                "long": _attention(1, 4, 2, 40, 3000, 32, 16, "window", sinks=False),
            },
            trt_profiles=(
                # Prefills to 4096 queries over caches to 8192 keys, decoding steps (S = 1), GQA with
                # H = 4N; the usual head dims.
                Profile(
                    "MaskedAttention GQA (H = 4N), every S in [1, 4096]",
                    {"scale": 0.125},
                    {"B": (1, 8, 1), "N": (1, 8, 1), "S": (1, 4096, 1), "T": (1, 8192, 1), "D": (1, 256, 1)},
                    tied={"H": ("N", 4), "Dv": ("D", 1)},
                    samples=2000,
                    exhaustive="S",
                ),
                # MQA and MHA alike (N = 1, H up to 64), D and Dv apart, float16.
                Profile(
                    "MaskedAttention MQA (N = 1), D and Dv apart, float16",
                    {"scale": 0.0625},
                    {
                        "B": (1, 4, 1),
                        "H": (1, 64, 1),
                        "S": (1, 2048, 1),
                        "T": (1, 16384, 1),
                        "D": (1, 256, 1),
                        "Dv": (1, 256, 1),
                    },
                    fixed={"N": 1},
                    float_type="float16",
                    samples=1000,
                    exhaustive="T",
                ),
            ),
        ),
    )
}


def in_float_type(op: str, inputs: dict[str, np.ndarray], float_type: str) -> dict[str, np.ndarray]:
    """The inputs with the op's T tensors (the spec's "float" ones) in `float_type`."""
    spec = BY_NAME[op]
    floats = {t.name for t in spec.inputs if t.dtype == FLOAT}
    return {name: a.astype(float_type) if name in floats else a for name, a in inputs.items()}


def small_calls() -> list[tuple[str, str, Maker]]:
    """(op, base id, maker) for every small call, in catalogue order."""
    return [(row.op, base, make) for row in TABLE.values() for base, make in row.small.items()]


def workers_calls() -> list[tuple[str, str, Maker]]:
    """(case id, op, maker) for every workers call: the op's name, with the variant where it has several."""
    return [
        (f"{row.op}-{variant}" if variant else row.op, row.op, make)
        for row in TABLE.values()
        for variant, make in row.workers.items()
    ]
