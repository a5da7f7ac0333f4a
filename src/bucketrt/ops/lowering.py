"""Each op's standard-op lowering: the same semantics as its PyTorch reference (reference.py),
written so that `torch.onnx.export` traces it into standard ONNX ops only (no bucketrt node).

An export made under `dispatch.standard_ops()` runs these instead of emitting `bucketrt::<Op>`
nodes, so the graph runs in any ONNX runtime without bucketrt's op library (ONNX Runtime without
the library, OpenVINO, TensorRT for RTX, ...).

Rules every lowering keeps, because tracing and the runtimes depend on them:
- no data-dependent Python (no `.item()`, `int(tensor)`, boolean indexing, branches on values):
  the argument checks the reference does on values are the kernels' business, and a lowered graph
  takes the values the exporter's graph gives it;
- every dynamic dimension stays dynamic (shapes come from `tensor.shape`, never from constants);
- the same outputs as the reference: identical integer outputs (hash codes, orders, counts), float
  outputs within the fp32 tolerances of the kernel tests, the non-finite rules of docs/ops.md.

A lowering takes the reference's arguments (tensors, then the attributes as resolved by the spec)
and registers itself with `@lowers(SPEC)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .catalogue import ARGMAX_HASH, BUCKET_SUM, LSH_CUMULATION, SIGN_HASH, SORTED_CHUNK_ATTENTION, hadamard_parts
from .reference import MASKED_SCORE, SELF_SCORE, _flush, hadamard_transform
from .schema import OpSpec

__all__ = ["LOWERINGS", "lowers", "stable_argsort"]

LOWERINGS: dict[str, Callable] = {}


def lowers(spec: OpSpec) -> Callable[[Callable], Callable]:
    """Registers the decorated function as `spec`'s standard-op lowering."""

    def register(fn: Callable) -> Callable:
        if spec.name in LOWERINGS:
            raise ValueError(f"{spec.name} has two lowerings: {LOWERINGS[spec.name].__name__} and {fn.__name__}")
        LOWERINGS[spec.name] = fn
        return fn

    return register


# -- hashing and LSH attention ---------------------------------------------------------------
# Each lowering below names its cost against the custom kernel; docs/ops.md ("Standard-op
# lowering") gathers them.


def _float32(fn: Callable) -> Callable:
    """float16 inputs computed in float32 and rounded once at the end, as the references do."""

    def lowered(*inputs, **attrs):
        dtype = next((t.dtype for t in inputs if t.is_floating_point()), torch.float32)
        out = fn(*(t.float() if t.is_floating_point() else t for t in inputs), **attrs)
        if dtype == torch.float32:
            return out
        if isinstance(out, tuple):
            return tuple(t.to(dtype) if t.is_floating_point() else t for t in out)
        return out.to(dtype) if out.is_floating_point() else out

    lowered.__name__ = fn.__name__
    lowered.__doc__ = fn.__doc__
    return lowered


def _codes(bits: torch.Tensor) -> torch.Tensor:
    """[..., L] booleans -> int32 code sum_i bit_i 2^i (exact: L <= 30)."""
    weights = 2 ** torch.arange(bits.shape[-1], device=bits.device, dtype=torch.int64)
    return (bits.long() * weights).sum(-1).int()


@lowers(SIGN_HASH)
def sign_hash(mask, vector, projection, *, num_hash: int, hash_code_len: int, transform: str) -> torch.Tensor:
    """The reference's arithmetic: hadamard's butterflies and ±1 diagonals are exact in float32, so
    the codes are the reference's bit for bit; gaussian's projection is one MatMul (as the reference
    takes it for finite inputs), whose summation order the runtime picks: a code bit whose projection
    lies within rounding of 0 may differ, as between the kernels. Cost: the reference's tensors
    ([B, N, P, D] per round), about the kernel's work but in memory rather than in registers."""
    batch, length, dim = vector.shape
    groups = projection.shape[0]
    code_len = hash_code_len
    x = vector.float().reshape(-1, groups, length, dim)  # row r uses projection[r mod G]
    projection = projection.float()
    if transform == "hadamard":
        parts = hadamard_parts(dim, num_hash, code_len)
        diag = projection.reshape(groups, 3, parts, 1, dim)
        y = x[:, :, None] * diag[:, 0]  # [B/G, G, P, N, D]
        y = hadamard_transform(y) * diag[:, 1]
        y = hadamard_transform(y) * diag[:, 2]
        y = hadamard_transform(y)
        per_part = dim // code_len
        y = y[..., : per_part * code_len].reshape(*y.shape[:-1], per_part, code_len)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(batch, length, parts * per_part, code_len)[:, :, :num_hash]
    else:
        y = (x @ projection[None]).reshape(batch, length, num_hash, code_len)
    return torch.where(mask[..., None] != 0, _codes(y > 0), 0)


def _first_argmax(z: torch.Tensor) -> torch.Tensor:
    """torch.argmax's answer over the last dim: the first maximum, and the first NaN if there is one
    (ONNX ArgMax leaves NaN to the runtime)."""
    nan = torch.isnan(z)
    first_nan = nan.float().argmax(-1)
    return torch.where(nan.any(-1), first_nan, torch.where(nan, float("-inf"), z).argmax(-1))


@lowers(ARGMAX_HASH)
def argmax_hash(mask, vector, projection, bucket_sizes, *, num_hash: int) -> torch.Tensor:
    """bucket_sizes is a tensor (its values are not known when tracing; its length F is): factor f's
    candidates are the round's S columns masked to its own, o_f .. o_f + n_f/2 (the others -inf),
    so that one ArgMax over [y, -y] (2S wide) finds its digit in the reference's order. Cost: F
    ArgMaxes over 2S candidates where the kernel scans sum_f n_f = 2S once (F is 1 or 2); the
    projection is one MatMul, as the reference takes it for finite inputs (a bucket may differ where
    two candidates lie within rounding of each other, as between the kernels)."""
    batch, heads, length, _ = vector.shape
    y = vector.float() @ projection.float()[None]  # [B, H, N, C]
    y = y.reshape(batch, heads, length, num_hash, -1).transpose(2, 3)  # [B, H, R, N, S]
    width = y.shape[-1]
    sizes = bucket_sizes.long()
    halves = sizes // 2
    ends = halves.cumsum(0)
    columns = torch.arange(width, device=y.device)
    buckets = torch.zeros(y.shape[:-1], dtype=torch.int64, device=y.device)
    stride = torch.ones((), dtype=torch.int64, device=y.device)
    for f in range(bucket_sizes.shape[0]):
        start, half = ends[f] - halves[f], halves[f]
        own = (columns >= start) & (columns < ends[f])
        z = torch.cat([torch.where(own, y, float("-inf")), torch.where(own, -y, float("-inf"))], dim=-1)
        index = _first_argmax(z)
        digit = torch.where(index < width, index - start, index - width - start + half)
        buckets = buckets + stride * digit
        stride = stride * sizes[f]
    padding = (mask == 0)[:, None, None, :]
    return torch.where(padding, stride, buckets).int()


@lowers(LSH_CUMULATION)
@_float32
def lsh_cumulation(
    query_mask, query_hash, key_mask, key_hash, value, *, hashtable_capacity: int, deterministic: int
) -> torch.Tensor:
    """Per hash function, a [B * capacity, D] table: ScatterND-add of the keys' values at their
    codes, then a Gather at the queries' codes, summed over the m functions in order. Memory: one
    table of B * capacity * D floats at a time (the kernel's own), plus [B, N, D] per function;
    time: m scatters and gathers of N rows, as the kernel. Codes are not checked: an unmasked code
    outside [0, capacity) fails the runtime's ScatterND or Gather (or wraps, for a negative one in
    Gather) instead of the kernels' error. Summation order is the runtime's (within fp32 rounding)."""
    batch, num_query, num_hash = query_hash.shape
    dim = value.shape[-1]
    capacity = hashtable_capacity
    query_hash = torch.where(query_mask[..., None] != 0, query_hash, 0).long()
    key_hash = torch.where(key_mask[..., None] != 0, key_hash, 0).long()
    weighted = torch.where((key_mask != 0)[..., None], value, 0.0).reshape(-1, dim)
    offset = torch.arange(batch, device=value.device)[:, None] * capacity
    out = torch.zeros(batch * num_query, dim, dtype=value.dtype, device=value.device)
    for h in range(num_hash):
        table = torch.zeros(batch * capacity, dim, dtype=value.dtype, device=value.device)
        table = table.index_add(0, (key_hash[:, :, h] + offset).reshape(-1), weighted)
        out = out + table[(query_hash[:, :, h] + offset).reshape(-1)]
    return torch.where((query_mask != 0)[..., None], out.view(batch, num_query, dim) * (1.0 / num_hash), 0.0)


@lowers(BUCKET_SUM)
@_float32
def bucket_sum(bucket, weight, vector, *, num_buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ScatterND-adds into [G * num_buckets] tables, as the kernel (its memory: the outputs).
    Bucket ids are not checked: one outside [0, num_buckets) fails the runtime's ScatterND instead
    of the kernels' error (a negative one may wrap). Summation order is the runtime's."""
    groups, _, dim = vector.shape
    index = (bucket.long() + torch.arange(groups, device=bucket.device)[:, None] * num_buckets).reshape(-1)
    sums = torch.zeros(groups * num_buckets, dim, dtype=vector.dtype, device=vector.device)
    sums = sums.index_add(0, index, vector.reshape(-1, dim))
    weights = torch.zeros(groups * num_buckets, dtype=weight.dtype, device=weight.device)
    weights = weights.index_add(0, index, weight.reshape(-1))
    return sums.view(groups, num_buckets, dim), weights.view(groups, num_buckets)


# The stable sort of SortedChunkAttention: LSD radix passes over 4-bit digits of the (>= 0, int32)
# buckets, each a counting sort written in CumSum, GatherElements and ScatterElements: no TopK, so
# no runtime's TopK limit (TensorRT's K <= 3840) bounds N.
_RADIX_BITS = 4
_RADIX_PASSES = 31 // _RADIX_BITS + 1  # every bit of a non-negative int32


def stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    """The indices that sort `keys` (int, >= 0, below 2^31) along the last dim, ties in index order:
    torch.sort(keys, stable=True).indices, as standard ONNX ops without TopK. Cost per pass: a
    one-hot [..., N, 16] and its CumSum; 8 passes, O(128 N) against a counting sort's O(N + buckets)."""
    radix = 1 << _RADIX_BITS
    keys = keys.long()
    digits = torch.arange(radix, device=keys.device)
    order = torch.zeros_like(keys) + torch.arange(keys.shape[-1], device=keys.device)  # slot -> index
    for p in range(_RADIX_PASSES):
        digit = torch.div(keys.gather(-1, order), radix**p, rounding_mode="floor") % radix
        onehot = (digit[..., None] == digits).long()  # [..., N, radix]
        before = onehot.cumsum(-2) - onehot  # earlier slots with the same digit
        counts = onehot.sum(-2, keepdim=True)
        start = counts.cumsum(-1) - counts  # first slot of each digit
        slot = ((before + start) * onehot).sum(-1)  # new slot of each current slot
        order = torch.zeros_like(order).scatter(-1, slot, order)
    return order


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.logsumexp's own formula (an infinite maximum shifts by 0), spelled out: runtimes'
    ReduceLogSumExp may skip the shift, and -1e9 scores then underflow to log(0)."""
    top = x.amax(dim, keepdim=True)
    top = torch.where(torch.isinf(top), 0.0, top)
    return torch.log(torch.exp(x - top).sum(dim, keepdim=True)) + top


def _weighted_sum(p: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """reference.weighted_sum without its branch on the values: keys of weight 0 add nothing (no
    0 * Inf); a used key's NaN gives NaN, its ±Inf gives ±Inf (both: NaN). One MatMul over the
    values and their flags side by side ([K, 3D]): three times the kernel's product with V."""
    dim = value.shape[-1]
    finite = torch.isfinite(value)
    nan = torch.isnan(value)
    pos = (value == float("inf")) | nan
    neg = (value == float("-inf")) | nan
    both = p @ torch.cat([torch.where(finite, value, 0.0), pos.to(p.dtype), neg.to(p.dtype)], dim=-1)
    out, pos, neg = both[..., :dim], both[..., dim : 2 * dim] > 0, both[..., 2 * dim :] > 0
    extra = torch.where(pos, float("inf"), 0.0) + torch.where(neg, float("-inf"), 0.0)  # both: NaN
    return out + extra


@lowers(SORTED_CHUNK_ATTENTION)
@_float32
def sorted_chunk_attention(
    query,
    key,
    value,
    mask,
    buckets,
    *,
    chunk_length: int,
    chunks_before: int,
    chunks_after: int,
    causal: int,
    mask_self: int,
    max_length: int,
) -> torch.Tensor:
    """The reference's chunked attention, with N dynamic: instead of a branch on N, N <= chunk_length
    is padded to one chunk per round, whose queries attend their own chunk only (every key once: the
    plain attention) and take round 0's output. Pad keys score -inf and take no part. The sort is
    `stable_argsort` (no TopK); unsorting gathers by the inverse permutation.

    Not checked here (the kernels' errors): N beyond max_length (the runtime classes and Triton
    refuse it first), N > chunk_length not a multiple of it (padded to one, instead of an error),
    negative buckets. Cost: the kernel's scores and products, plus the radix sort, a wider product
    with V (`_weighted_sum`), and [B, H, R, N, D] copies of q, k, v in sorted order (the kernel
    reads them in place)."""
    del max_length  # a bound the runtime checks before the graph runs
    batch, heads, length, dim = query.shape
    rounds = buckets.shape[2]
    chunk = chunk_length
    pad = (chunk - length % chunk) % chunk
    padded = length + pad

    def pad_positions(t, axis, fill):
        shape = list(t.shape)
        shape[axis] = pad
        return torch.cat([t, torch.full(shape, fill, dtype=t.dtype, device=t.device)], dim=axis)

    query, key, value = (pad_positions(t, 2, 0.0) for t in (query, key, value))
    live = pad_positions(mask != 0, 1, False)[:, None, :].expand(batch, heads, padded)
    real = torch.arange(padded, device=query.device) < length  # [N'] (pad keys take no part)
    buckets = pad_positions(buckets.long(), 3, 0)

    order = stable_argsort(buckets).reshape(batch, heads, rounds * padded)  # slot -> position
    index = order[..., None].expand(-1, -1, -1, dim)
    q, k, v = query.gather(2, index), key.gather(2, index), value.gather(2, index)
    k_live, k_real = live.gather(2, order), real.expand(batch, heads, padded).gather(2, order)
    num_chunks = rounds * padded // chunk

    def chunks(t):
        return t.reshape(batch, heads, num_chunks, chunk, *t.shape[3:])

    def window(t):  # chunk c sees chunks c - before .. c + after, wrapping around all rounds
        t = chunks(t)
        positions = torch.arange(num_chunks, device=t.device)
        count = torch.ones_like(positions).sum()  # K as a tensor: a modulo by a symbolic int does not export
        wrap = [(positions + j + chunks_before * count) % count for j in range(-chunks_before, chunks_after + 1)]
        shifted = [t.index_select(2, index) for index in wrap]
        return torch.cat(shifted, dim=3)

    q_pos, k_pos = chunks(order), window(order)
    scores = chunks(q) @ window(k).transpose(-1, -2)
    allowed = window(k_live)[..., None, :]
    if causal:
        allowed = allowed & (k_pos[..., None, :] <= q_pos[..., :, None])
    scores = torch.where(allowed, scores, MASKED_SCORE)
    if mask_self:
        scores = torch.where(k_pos[..., None, :] == q_pos[..., :, None], SELF_SCORE, scores)
    # One chunk (N <= chunk_length): the plain attention is the query's own chunk, every key once;
    # the window's other chunks are copies of it and take no part (nor pad keys).
    plain = mask.new_ones(mask.shape[1:]).sum() <= chunk  # a tensor: no branch on the dynamic N
    own = torch.tensor([j == 0 for j in range(-chunks_before, chunks_after + 1)], device=query.device)
    own = own.repeat_interleave(chunk)  # [W * chunk]
    scores = torch.where(window(k_real)[..., None, :] & (own | ~plain), scores, float("-inf"))
    lse = _logsumexp(scores, -1)
    out = _weighted_sum(_flush(torch.exp(scores - lse)), window(v))  # [B, H, K, chunk, D]

    # Unsort: the inverse permutation of each round's order, then a gather.
    within = order.reshape(batch, heads, rounds, padded)
    slots = torch.zeros_like(within) + torch.arange(padded, device=within.device)
    inverse = torch.zeros_like(within).scatter(-1, within, slots)  # position -> slot in its round
    inverse = (inverse + torch.arange(rounds, device=within.device)[:, None] * padded)[..., :length]
    inverse = inverse.reshape(batch, heads, rounds * length)
    out = out.reshape(batch, heads, rounds * padded, dim).gather(2, inverse[..., None].expand(-1, -1, -1, dim))
    lse = lse.reshape(batch, heads, rounds * padded).gather(2, inverse)
    out = out.reshape(batch, heads, rounds, length, dim)
    if rounds == 1:
        return out[:, :, 0]
    lse = lse.reshape(batch, heads, rounds, length, 1)
    weights = _flush(torch.exp(lse - _logsumexp(lse, 2)))
    first = torch.arange(rounds, device=lse.device)[:, None, None] == 0
    weights = torch.where(plain, first.to(weights.dtype), weights)  # plain attention: round 0's, as is
    return torch.where(weights == 0, 0.0, out * weights).sum(dim=2)
