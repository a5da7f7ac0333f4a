"""Shape grids and input makers shared by the CPU kernel tests (test_kernels_cpu.py) and the CUDA
kernel tests (test_kernels_cuda.py), so that every backend runs the same cases. numpy only: the
CUDA tests import this on a GPU machine that may lack onnx and onnxruntime.

Shapes cover sizes that are no multiple of the kernels' slabs (N of 1, 7, 33, 100; D of 7, 20, 33
beside 16, 32, 64, 96), Nq != Nk, several hash counts and code lengths, masks with zeros (and
out-of-range codes in masked rows, which must be ignored), batch 1 and 3, projection groups 1 and 3.
Each value appears in a few combinations rather than a full Cartesian product, to keep the files fast.
"""

from __future__ import annotations

import numpy as np

# batch, num_query, num_key, dim, num_hash, capacity
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

# batch, length, dim, num_hash, code_len, groups: ±1 diagonals
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

# batch, length, dim, num_hash, code_len, groups
GAUSSIAN_CASES = [
    (1, 1, 16, 1, 1, 1),
    (3, 7, 96, 5, 4, 3),
    (3, 33, 32, 32, 9, 1),
    (1, 100, 64, 64, 4, 1),
    (3, 100, 20, 5, 9, 3),
    (3, 33, 7, 3, 30, 3),
]

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


def lsh_seed(batch, num_query, num_key, dim, num_hash, capacity) -> int:
    return 1000 * batch + 10 * num_query + num_key + dim + num_hash


def mask(rng, shape, masked: float) -> np.ndarray:
    """int32 mask with about `masked` zeros; live entries are 1 or 3 (any non-zero counts)."""
    live = rng.random(shape) >= masked
    return np.where(live, rng.choice(np.array([1, 3], dtype=np.int32), size=shape), 0).astype(np.int32)


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


def gaussian_near_zero(inputs, num_hash, code_len) -> np.ndarray:
    """[B, N, num_hash]: True where some projection of the hash lies within float32 rounding of zero
    (float64 recomputation), so that a code may differ across summation orders."""
    vector, projection = inputs["vector"].astype(np.float64), inputs["projection"].astype(np.float64)
    batch, length, dim = vector.shape
    groups = projection.shape[0]
    x = vector.reshape(batch // groups, groups, length, dim)
    y = (x @ projection[None]).reshape(batch, length, num_hash, code_len)
    return (np.abs(y) < 1e-4 * np.sqrt(dim)).any(-1)


# -- ArgmaxHash, BucketSum, Top1Dispatch ------------------------------------------------------
# (their CPU tests live in test_argmax_hash.py, test_kernels_cpu.py and test_moe_kernels.py)

# batch, heads, length, dim, num_hash, bucket sizes
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


# groups, rows, dim, num_buckets
BUCKET_SUM_CASES = [(1, 1, 1, 1), (5, 8, 6, 4), (37, 16, 64, 8), (3, 100, 33, 7)]


def bucket_sum_inputs(rng, groups, rows, dim, num_buckets) -> dict[str, np.ndarray]:
    return {
        "bucket": rng.integers(0, num_buckets, (groups, rows)).astype(np.int32),
        "weight": rng.random((groups, rows)).astype(np.float32),
        "vector": rng.standard_normal((groups, rows, dim)).astype(np.float32),
    }


# batch, length, experts, capacity, skew (skew > 0 crowds expert 0: overflow, and experts with no token)
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


def expert_ffn_inputs(rng, batch, length, dim, ff, experts, capacity, skew=0.0) -> dict[str, np.ndarray]:
    """ExpertFFN's inputs: tokens routed by the reference Top1Dispatch on softmaxed normal logits
    (expert 0's raised by skew, which crowds it and starves the others), then the experts' weights."""
    import torch

    from bucketrt.ops import reference

    logits = rng.standard_normal((batch, length, experts)).astype(np.float32)
    logits[..., 0] += skew
    probs = torch.softmax(torch.from_numpy(logits), -1)
    _, gate, _, counts, order = reference.top1_dispatch(probs, expert_capacity=capacity)
    return {
        "hidden": rng.standard_normal((batch, length, dim)).astype(np.float32),
        "order": order.numpy(),
        "counts": counts.numpy(),
        "gate": gate.numpy(),
        "wi": (rng.standard_normal((experts, ff, dim)) / np.sqrt(dim)).astype(np.float32),
        "wo": (rng.standard_normal((experts, dim, ff)) / np.sqrt(ff)).astype(np.float32),
    }


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
