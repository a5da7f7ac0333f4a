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

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .catalogue import (
    ARGMAX_HASH,
    BUCKET_SUM,
    EXPERT_FFN,
    LSH_CUMULATION,
    MASKED_ATTENTION,
    MAX_NUM_BUCKETS,
    SIGN_HASH,
    SORTED_CHUNK_ATTENTION,
    TOP1_DISPATCH,
    TOPK_EXPERTS,
)
from .lowering_costs import NOT_LOWERED
from .reference import ACTIVATION_FUNCTIONS as _REFERENCE_ACTIVATIONS
from .reference import MASKED_SCORE, SELF_SCORE, _flush, gating_function, grouped_attention, hadamard_projections
from .schema import OpSpec

__all__ = ["LOWERINGS", "NOT_LOWERED", "every_expert", "lowers", "stable_argsort"]

LOWERINGS: dict[str, Callable] = {}


def lowers(spec: OpSpec) -> Callable[[Callable], Callable]:
    """Registers the decorated function as `spec`'s standard-op lowering."""

    def register(fn: Callable) -> Callable:
        if spec.name in NOT_LOWERED:
            raise ValueError(f"{spec.name} is listed in NOT_LOWERED ({NOT_LOWERED[spec.name]}): take it off the list")
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
    """The reference's arithmetic: hadamard's butterflies bit for bit, gaussian's projection one
    MatMul with the spec's non-finite rule (costs: lowering_costs.COSTS)."""
    batch, length, dim = vector.shape
    groups = projection.shape[0]
    code_len = hash_code_len
    x = vector.float().reshape(-1, groups, length, dim)  # row r uses projection[r mod G]
    projection = projection.float()
    if transform == "hadamard":
        y = hadamard_projections(x, projection, num_hash, code_len)
    else:
        y = _projections(x, projection[None]).reshape(batch, length, num_hash, code_len)
    return torch.where(mask[..., None] != 0, _codes(y > 0), 0)


def _projections(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """x [..., D] · projection [..., D, C] as one MatMul, with the spec's non-finite rule
    (catalogue.NONFINITE_PROJECTION_RULE): a row of x or a column of the projection holding a NaN or
    an Inf makes every y it enters NaN, whatever the runtime's summation order."""
    nonfinite = ~torch.isfinite(x).all(-1)[..., None] | ~torch.isfinite(projection).all(-2)[..., None, :]
    return torch.where(nonfinite, float("nan"), x @ projection)


def _first_argmax(z: torch.Tensor) -> torch.Tensor:
    """torch.argmax's answer over the last dim: the first maximum, and the first NaN if there is one
    (ONNX ArgMax leaves NaN to the runtime)."""
    nan = torch.isnan(z)
    first_nan = nan.float().argmax(-1)
    return torch.where(nan.any(-1), first_nan, torch.where(nan, float("-inf"), z).argmax(-1))


@lowers(ARGMAX_HASH)
def argmax_hash(mask, vector, projection, bucket_sizes, *, num_hash: int) -> torch.Tensor:
    """bucket_sizes stays an input (its values are unknown when tracing, its length F known): factor
    f's candidates are the round's S columns masked to its own (the others -inf), so that one ArgMax
    over [y, -y] finds its digit in the reference's order (costs: lowering_costs.COSTS)."""
    batch, heads, length, _ = vector.shape
    y = _projections(vector.float(), projection.float()[None])  # [B, H, N, C]
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


# Bucket sums as a one-hot MatMul (no reduction scatter: TensorRT for RTX's ONNX parser refuses
# ScatterND and ScatterElements with a reduction) up to this many buckets, BucketSum's bound; past
# it (LSHCumulation's hashtable_capacity reaches 2^30) the one-hot ([..., N, buckets] floats)
# outgrows the tables, and the sums are ScatterND-adds.
ONE_HOT_BUCKETS = MAX_NUM_BUCKETS


def _bucket_sums(bucket: torch.Tensor, live: torch.Tensor, values: torch.Tensor, buckets: int) -> torch.Tensor:
    """[..., N] bucket ids, [..., N] rows taking part, [..., N, D] values -> [..., buckets, D] per-bucket
    sums, IEEE as index_add (a NaN makes its bucket NaN, +Inf and -Inf NaN, an Inf Inf): the one-hot's
    transpose times the values beside their non-finite flags (_weighted_sum), so that a 0 of the
    one-hot never multiplies an Inf. A row not taking part, or of a bucket outside [0, buckets),
    adds nothing."""
    ids = torch.arange(buckets, device=bucket.device)
    onehot = ((bucket.long()[..., None] == ids) & live[..., None]).to(values.dtype)  # [..., N, buckets]
    return _weighted_sum(onehot.transpose(-1, -2), values)


@lowers(LSH_CUMULATION)
@_float32
def lsh_cumulation(
    query_mask, query_hash, key_mask, key_hash, value, *, hashtable_capacity: int, deterministic: int
) -> torch.Tensor:
    """Per hash function, a [B, capacity, D] table of the keys' values summed by code (a one-hot MatMul,
    _bucket_sums; ScatterND-adds beyond ONE_HOT_BUCKETS) and a Gather at the queries' codes, summed
    over the functions in order (costs: lowering_costs.COSTS)."""
    batch, num_query, num_hash = query_hash.shape
    dim = value.shape[-1]
    capacity = hashtable_capacity
    key_live = key_mask != 0
    weighted = torch.where(key_live[..., None], value, 0.0)  # [B, Nk, D]
    query_codes = torch.where(query_mask[..., None] != 0, query_hash, 0).long()  # [B, Nq, m]
    if capacity > ONE_HOT_BUCKETS:
        return _lsh_cumulation_scattered(query_mask, query_codes, key_live, key_hash, weighted, capacity)
    out = torch.zeros(batch, num_query, dim, dtype=value.dtype, device=value.device)
    for h in range(num_hash):
        table = _bucket_sums(key_hash[:, :, h], key_live, weighted, capacity)  # [B, capacity, D]
        out = out + table.gather(1, query_codes[:, :, h, None].expand(-1, -1, dim))
    return torch.where((query_mask != 0)[..., None], out * (1.0 / num_hash), 0.0)


def _lsh_cumulation_scattered(query_mask, query_codes, key_live, key_hash, weighted, capacity):
    """LSHCumulation by ScatterND-adds into [B * capacity, D] tables, for capacities past
    ONE_HOT_BUCKETS (TensorRT for RTX's parser refuses it)."""
    batch, num_query, num_hash = query_codes.shape
    dim = weighted.shape[-1]
    offset = torch.arange(batch, device=weighted.device)[:, None, None] * capacity
    query_rows = (query_codes + offset).permute(2, 0, 1).reshape(num_hash, -1)
    key_codes = torch.where(key_live[..., None], key_hash, 0).long()
    key_rows = (key_codes + offset).permute(2, 0, 1).reshape(num_hash, -1)
    flat = weighted.reshape(-1, dim)
    out = torch.zeros(batch * num_query, dim, dtype=weighted.dtype, device=weighted.device)
    for h in range(num_hash):
        table = torch.zeros(batch * capacity, dim, dtype=weighted.dtype, device=weighted.device)
        out = out + table.index_add(0, key_rows[h], flat)[query_rows[h]]
    return torch.where((query_mask != 0)[..., None], out.view(batch, num_query, dim) * (1.0 / num_hash), 0.0)


@lowers(BUCKET_SUM)
@_float32
def bucket_sum(bucket, weight, vector, *, num_buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows and their weights side by side, summed by bucket in one one-hot MatMul (_bucket_sums;
    num_buckets <= MAX_NUM_BUCKETS = ONE_HOT_BUCKETS, the spec's bound). Costs: lowering_costs.COSTS."""
    dim = vector.shape[-1]
    rows = torch.cat([vector, weight[..., None].to(vector.dtype)], dim=-1)  # [G, N, D + 1]
    both = _bucket_sums(bucket, torch.ones_like(bucket, dtype=torch.bool), rows, num_buckets)
    return both[..., :dim], both[..., dim].to(weight.dtype)


# The stable sort of SortedChunkAttention: LSD radix passes over 4-bit digits of the (>= 0, int32)
# buckets, each a counting sort written in CumSum, GatherElements and ScatterElements: no TopK, so
# no runtime's TopK limit (TensorRT's K <= 3840) bounds N.
_RADIX_BITS = 4
_RADIX_PASSES = 31 // _RADIX_BITS + 1  # every bit of a non-negative int32


def stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    """The indices that sort `keys` (int, >= 0, below 2^31) along the last dim, ties in index order:
    torch.sort(keys, stable=True).indices in standard ONNX ops without TopK. LSD radix sort, 8
    passes over 4-bit digits, each a counting sort: a one-hot [..., N, 16] (int64), its CumSum over
    N, a GatherElements and a ScatterElements. Time and memory O(16 N) per pass, 128 N in all,
    where the kernel's counting sort takes O(N + buckets)."""
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
    values and their flags side by side ([K, 3D])."""
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
    """The reference's chunked attention with N dynamic: N <= chunk_length is padded to one chunk per
    round, whose queries attend their own chunk alone (every key once: the plain attention) and take
    round 0's output, instead of a branch on N; pad keys score -inf and take no part. The sort is
    `stable_argsort` (no TopK). Not checked (the kernels' errors): N beyond max_length (the runtime
    classes and Triton refuse it first), N > chunk_length not a multiple of it (padded instead),
    negative buckets. Costs: lowering_costs.COSTS."""
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


# -- mixture of experts: Top1Dispatch, ExpertFFN, TopKExperts ------------------------------------
# Costs against the custom kernels and a dense all-experts formulation: docs/ops.md, "Standard-op
# lowering" (ops/lowering_costs.py).


def _clamp(x: torch.Tensor, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """torch.clamp as comparisons: a NaN compares false and stays NaN, as torch.clamp keeps it (ONNX
    Clip, Relu and Max leave NaN to the runtime: Eigen's max may return the bound)."""
    if lo is not None:
        x = torch.where(x < lo, lo, x)
    if hi is not None:
        x = torch.where(x > hi, hi, x)
    return x


# The reference's activation functions, with every clamp (relu's included) as comparisons.
_ACTIVATIONS = {
    **_REFERENCE_ACTIVATIONS,
    "relu": lambda x: _clamp(x, lo=0.0),
    "gelu_10": lambda x: _clamp(_REFERENCE_ACTIVATIONS["gelu"](x), -10.0, 10.0),
    "relu2": lambda x: _clamp(x, lo=0.0) ** 2,
    "relu6": lambda x: _clamp(x, 0.0, 6.0),
    "hardswish": lambda x: x * _clamp(x + 3.0, 0.0, 6.0) / 6.0,
}


def _activation(name: str):
    from .catalogue import EXPERT_ACTIVATIONS

    return _ACTIVATIONS[EXPERT_ACTIVATIONS[name]]


def _first_max_index(x: torch.Tensor) -> torch.Tensor:
    """torch.argmax over the last dim: the first maximum, a NaN counting as the maximum (the first
    NaN). ONNX ArgMax leaves NaN to the runtime, so NaNs are found apart."""
    nan = torch.isnan(x)
    first_nan = nan.float().argmax(-1)
    return torch.where(nan.any(-1), first_nan, torch.where(nan, float("-inf"), x).argmax(-1))


@lowers(TOP1_DISPATCH)
def top1_dispatch(probs: torch.Tensor, *, expert_capacity: int) -> tuple[torch.Tensor, ...]:
    """No sort: a kept token's place in `order` is its expert's start (the exclusive cumsum of
    counts) plus its rank among that expert's kept tokens (a cumsum in flat token order), and the
    dropped tokens fill the places after the kept ones in flat order, so that `order` is one
    ScatterElements of a permutation (no duplicate index). Cost: a [B, S, E] one-hot and its
    cumsums, O(B*S*E), as the kernel's argmax; no TopK, no sort."""
    batch, length, experts = probs.shape
    expert = _first_max_index(probs.float())  # [B, S] int64 (float32 widening is exact)
    gate = probs.gather(-1, expert[..., None])[..., 0]
    onehot = (expert[..., None] == torch.arange(experts, device=probs.device)).to(torch.int64)  # [B, S, E]
    priority = onehot.cumsum(1).gather(-1, expert[..., None])[..., 0]  # 1-based, per sequence
    kept = priority <= expert_capacity
    kept_onehot = onehot * kept[..., None].to(torch.int64)
    counts = kept_onehot.sum((0, 1))  # [E]
    flat_kept = kept_onehot.reshape(-1, experts)  # [B*S, E], flat token order
    rank = (flat_kept.cumsum(0) * flat_kept).sum(-1) - 1  # among its expert's kept tokens
    start = counts.cumsum(0) - counts  # exclusive
    flat_expert, flat_is_kept = expert.reshape(-1), kept.reshape(-1)
    dropped = (~flat_is_kept).to(torch.int64)
    place = torch.where(flat_is_kept, start.gather(0, flat_expert) + rank, counts.sum() + dropped.cumsum(0) - 1)
    tokens = torch.arange(flat_expert.shape[0], device=probs.device)
    order = torch.zeros_like(tokens).scatter(0, place, torch.where(flat_is_kept, tokens, -1))
    return (
        torch.where(kept, expert, -1).to(torch.int32),
        gate,
        priority.to(torch.int32),
        counts.to(torch.int32),
        order.reshape(batch, length).to(torch.int32),
    )


def _gathered_linear(x: torch.Tensor, weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row r of x [R, In] through weight[index[r]] ([N, In], nn.Linear's layout): [R, N]. The rows'
    weights are gathered ([R, N, In]), so only the chosen experts are computed."""
    return (weight[index] @ x[..., None])[..., 0]


def _every_expert_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Every row of x [R, In] or [E, R, In] through every expert's weight [E, N, In]: [E, R, N]. x
    [R, In] is expanded to [E, R, In] first (E*R*In floats, less than the [E, R, N] output):
    OpenVINO's CPU MatMul inside an If body broadcasts neither ranks ("Can't create dummy inputs if
    argument shapes ranks are not equal") nor a batch dim of 1 ("Can not clone with new dims")."""
    if x.dim() == 2:
        x = x[None].expand(weight.shape[0], -1, -1)
    return x @ weight.transpose(1, 2)


_every_expert: list[bool] = []


@contextmanager
def every_expert() -> Iterator[None]:
    """Within the block, ExpertFFN's and TopKExperts' lowerings always take their every-expert
    formulation (no If): the dense graph that exporters without an expert-dispatch op write, which
    the MoE benchmark times as a peer (benchmarks/moe.py)."""
    _every_expert.append(True)
    try:
        yield
    finally:
        _every_expert.pop()


def _choose(pairs, experts: int, gathered, dense, operands: tuple) -> torch.Tensor:
    """gathered(*operands) where the (token, expert) pairs are at most the experts (decoding: the
    gathered weights are then no more than the experts' own), dense(*operands) otherwise. Exported,
    the choice is an ONNX If on the dynamic token count; eager, a plain branch."""
    if _every_expert:
        return dense(*operands)
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return torch.cond(pairs <= experts, gathered, dense, operands)
    return gathered(*operands) if pairs <= experts else dense(*operands)


def _clamp_index(index: torch.Tensor, experts: int) -> torch.Tensor:
    """An index in [0, E) for gathering: a token or pick without an expert gathers expert 0's weights,
    and its output is dropped by a select (never multiplied by 0: NaN * 0 is NaN)."""
    return torch.where((index >= 0) & (index < experts), index, 0)


def _token_experts(order: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[B*S]: the expert each token is listed under in order/counts, -1 for an unlisted token. Place i
    of `order` belongs to expert #{e : end_e <= i} (end the inclusive cumsum of counts) and is listed
    where i < sum(counts); one ScatterElements takes it to the token (unlisted places to places past
    the tokens, sliced off: every index distinct)."""
    tokens = order.numel()
    ends = counts.to(torch.int64).cumsum(0)  # [E]
    places = torch.arange(tokens, device=order.device)
    listed = places < ends[-1:]
    place_expert = (ends[None, :] <= places[:, None]).to(torch.int64).sum(-1)  # [T]
    target = torch.where(listed, order.reshape(-1).to(torch.int64), tokens + places)
    token_expert = torch.full((2 * tokens,), -1, dtype=torch.int64, device=order.device)
    return token_expert.scatter(0, target, torch.where(listed, place_expert, -1))[:tokens]


@lowers(EXPERT_FFN)
def expert_ffn(hidden, order, counts, gate, wi, wo, *, activation: str) -> torch.Tensor:
    """Each token's expert from `order` and `counts` without a sort (_token_experts), then one of two
    formulations, chosen at run time by the token count (_choose): per-token gathered weights when
    the tokens are at most the experts (only the chosen expert computed, its weights gathered per
    token), every token through every expert otherwise (E times the work, no weight copied). Unlisted
    tokens are selected to 0. Costs: docs/ops.md."""
    dtype = hidden.dtype
    batch, length, dim = hidden.shape
    x = hidden.float().reshape(-1, dim)
    token_expert = _token_experts(order, counts)
    experts = wi.shape[0]
    index = _clamp_index(token_expert, experts)
    act = _activation(activation)

    def gathered(x, index, wi, wo):
        return _gathered_linear(act(_gathered_linear(x, wi, index)), wo, index)

    def dense(x, index, wi, wo):
        y = _every_expert_linear(act(_every_expert_linear(x, wi)), wo)  # [E, T, D]
        return y.gather(0, index[None, :, None].expand(1, -1, y.shape[-1]))[0]

    y = _choose(x.shape[0], experts, gathered, dense, (x, index, wi.float(), wo.float()))
    out = torch.where((token_expert >= 0)[:, None], gate.float().reshape(-1, 1) * y, 0.0)
    return out.reshape(batch, length, dim).to(dtype)


@lowers(TOPK_EXPERTS)
def topk_experts(
    hidden, expert_index, expert_weight, gate_up, gate_up_bias, down, down_bias, *, activation: str, gating: str, limit
) -> torch.Tensor:
    """Two formulations, chosen at run time by the number of (token, pick) pairs (_choose): per-token
    gathered weights when the pairs are at most the experts (decoding: each pair gathers its
    expert's gate_up, down and biases, so only the chosen experts are computed and no more weight is
    read than the kernel reads), every token through every expert otherwise (E/K times the kernel's
    work, no weight copied), each pick's output then gathered. A pick of expert E (none) takes expert
    0 and is dropped by a select, whatever its weight; the picks' weighted outputs are summed by one
    ReduceSum, in the runtime's order (the reference's j = 0, 1, ... within float32 rounding).
    Costs: docs/ops.md."""
    dtype = hidden.dtype
    tokens, dim = hidden.shape
    picks = expert_index.shape[1]
    experts = gate_up.shape[0]
    index = expert_index.to(torch.int64)
    live = index < experts  # the spec's E: no expert
    index = _clamp_index(index, experts)  # [T, K]
    ffn = gating_function(gating, _activation(activation), limit, clamp=_clamp)

    def gathered(x, index, gate_up, gate_up_bias, down, down_bias):
        flat = index.reshape(-1)  # [T*K]
        rows = x[:, None, :].expand(-1, index.shape[1], -1).reshape(-1, x.shape[-1])
        h = _gathered_linear(rows, gate_up, flat) + gate_up_bias[flat]
        y = _gathered_linear(ffn(h), down, flat) + down_bias[flat]
        return y.reshape(index.shape[0], index.shape[1], -1)

    def dense(x, index, gate_up, gate_up_bias, down, down_bias):
        h = _every_expert_linear(x, gate_up) + gate_up_bias[:, None, :]  # [E, T, G]
        y = _every_expert_linear(ffn(h), down) + down_bias[:, None, :]  # [E, T, D]
        y = y.transpose(0, 1)  # [T, E, D]
        return y.gather(1, index[..., None].expand(-1, -1, y.shape[-1]))  # [T, K, D]

    weights = (gate_up.float(), gate_up_bias.float(), down.float(), down_bias.float())
    y = _choose(tokens * picks, experts, gathered, dense, (hidden.float(), index, *weights))
    weighted = torch.where(live[..., None], expert_weight.float()[..., None] * y, 0.0)
    return weighted.sum(1).to(dtype)


# -- decoders' attention: MaskedAttention ---------------------------------------------------------


@lowers(MASKED_ATTENTION)
@_float32
def masked_attention(query, key, value, mask, sinks, *, scale: float) -> torch.Tensor:
    """The reference's arithmetic (reference.grouped_attention: the query heads of a key/value head
    in one MatMul, no repeated keys) with every key's weight computed; a key of weight 0 adds
    nothing through _weighted_sum, where the reference branches on the values."""
    return grouped_attention(query, key, value, mask, sinks, scale, _weighted_sum)
