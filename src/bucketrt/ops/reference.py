"""PyTorch reference implementations: the semantics every kernel is tested against.

Each function validates its arguments with the op's spec, so a reference call rejects exactly what
the kernels reject. They favour clarity over speed, but stay vectorised so that models run with
them at realistic sizes (they are the PyTorch side of `bucketrt check` and `bucketrt bench`).
"""

from __future__ import annotations

import math

import torch

from .catalogue import ACTIVATION_FUNCTIONS as ACTIVATION_FUNCTION_NAMES
from .catalogue import (
    ARGMAX_HASH,
    BUCKET_SUM,
    EXPERT_FFN,
    EXPERT_FFN_INT8,
    LIMITED_GATINGS,
    LINEAR_INT8,
    LSH_CUMULATION,
    MASKED_ATTENTION,
    MAX_INT8_SUM_LENGTH,
    SIGN_HASH,
    SORTED_CHUNK_ATTENTION,
    TOP1_DISPATCH,
    TOPK_EXPERTS,
    TOPK_EXPERTS_INT8,
    hadamard_parts,
)
from .catalogue import EXPERT_ACTIVATIONS as SPEC_EXPERT_ACTIVATIONS
from .schema import OpSpec

_DTYPES = {torch.int32: "int32", torch.int8: "int8", torch.float32: "float32", torch.float16: "float16"}


def _check(spec: OpSpec, tensors: tuple[torch.Tensor, ...], attrs: dict) -> tuple[dict, dict]:
    attrs = spec.resolve_attributes(attrs)
    env = spec.bind(
        [tuple(t.shape) for t in tensors],
        [_DTYPES.get(t.dtype, str(t.dtype).removeprefix("torch.")) for t in tensors],
        attrs,
    )
    return attrs, env


def _check_codes(op: str, name: str, codes: torch.Tensor, mask: torch.Tensor, capacity: int) -> None:
    live = codes[mask != 0]
    if live.numel() and (int(live.min()) < 0 or int(live.max()) >= capacity):
        raise ValueError(
            f"{op}: input '{name}' has codes in [{int(live.min())}, {int(live.max())}], "
            f"outside [0, hashtable_capacity={capacity})"
        )


def lsh_cumulation(query_mask, query_hash, key_mask, key_hash, value, **attrs) -> torch.Tensor:
    attrs, env = _check(LSH_CUMULATION, (query_mask, query_hash, key_mask, key_hash, value), attrs)
    # 'deterministic' (0 or 1, the spec's check): this reference is deterministic either way.
    if value.dtype != torch.float32:  # float16: the float32 computation, rounded once at the end
        return lsh_cumulation(query_mask, query_hash, key_mask, key_hash, value.float(), **attrs).to(value.dtype)
    capacity = attrs["hashtable_capacity"]
    _check_codes("LSHCumulation", "query_hash", query_hash, query_mask, capacity)
    _check_codes("LSHCumulation", "key_hash", key_hash, key_mask, capacity)
    batch, num_query, num_hash, dim = env["B"], env["Nq"], env["m"], env["D"]

    # Masked rows may carry any code: route them to bucket 0 and zero their contribution.
    query_hash = torch.where(query_mask[..., None] != 0, query_hash, 0).long()
    key_hash = torch.where(key_mask[..., None] != 0, key_hash, 0).long()
    # Masked rows take no part (torch.where, not a product: a NaN or Inf there must not leak in).
    weighted = torch.where((key_mask != 0)[..., None], value, 0.0).reshape(-1, dim)
    offset = torch.arange(batch, device=value.device)[:, None] * capacity

    out = torch.zeros(batch * num_query, dim, dtype=value.dtype, device=value.device)
    for h in range(num_hash):
        table = torch.zeros(batch * capacity, dim, dtype=value.dtype, device=value.device)
        table.index_add_(0, (key_hash[:, :, h] + offset).reshape(-1), weighted)
        out += table[(query_hash[:, :, h] + offset).reshape(-1)]
    return torch.where((query_mask != 0)[..., None], out.view(batch, num_query, dim) * (1.0 / num_hash), 0.0)


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Sylvester-Hadamard transform over the last dim (a power of two)."""
    dim = x.shape[-1]
    shape = x.shape
    h = 1
    while h < dim:
        pairs = x.reshape(*shape[:-1], dim // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(shape)
        h *= 2
    return x


def _codes(bits: torch.Tensor) -> torch.Tensor:
    """[..., L] booleans -> int32 code sum_i bit_i 2^i."""
    weights = 2 ** torch.arange(bits.shape[-1], device=bits.device, dtype=torch.int64)
    return (bits.long() * weights).sum(-1).int()


def projections(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """x [..., D] · projection [..., D, C] (broadcast over the leading dims), in float32.

    The spec's order: for each output, the products rounded one by one, summed over d in ascending
    order (no fused multiply-add), as the CPU kernels compute them. Any other order is within
    rounding of it unless a product or a partial sum overflows: then the order decides between a
    finite sum, an infinity and a NaN, so this follows the spec's order exactly there, and takes the
    fast matmul everywhere else. A row of x or a column of the projection holding a NaN or an Inf
    makes every y it enters NaN (catalogue.NONFINITE_PROJECTION_RULE), whatever the sum gives.
    """
    finite_x, finite_p = torch.isfinite(x), torch.isfinite(projection)
    largest = x.abs().amax() * projection.abs().amax() * x.shape[-1] if x.numel() and projection.numel() else 0.0
    if bool(largest < torch.finfo(torch.float32).max / 2):  # NaN compares False: the ordered sum
        y = x @ projection
    else:
        y = torch.zeros(
            torch.broadcast_shapes(x.shape[:-1] + (1,), projection.shape[:-2] + (1, 1))[:-1] + projection.shape[-1:]
        )
        for d in range(x.shape[-1]):
            y = y + x[..., d, None] * projection[..., d, None, :]
    if bool(finite_x.all()) and bool(finite_p.all()):
        return y
    nonfinite = ~finite_x.all(-1)[..., None] | ~finite_p.all(-2)[..., None, :]
    return torch.where(nonfinite, float("nan"), y)


def hadamard_projections(x: torch.Tensor, projection: torch.Tensor, num_hash: int, code_len: int) -> torch.Tensor:
    """SignHash's hadamard projections of x [B/G, G, N, D] (row r uses projection[r mod G], whose
    [3*P, D] are three random diagonals per part): [B, N, num_hash, code_len]. Traceable as it is, so
    the standard-op lowering computes them here too."""
    groups, length, dim = x.shape[1:]
    parts = hadamard_parts(dim, num_hash, code_len)
    diag = projection.reshape(groups, 3, parts, 1, dim)
    y = x[:, :, None] * diag[:, 0]  # [B/G, G, P, N, D]
    y = hadamard_transform(y) * diag[:, 1]
    y = hadamard_transform(y) * diag[:, 2]
    y = hadamard_transform(y)
    per_part = dim // code_len
    y = y[..., : per_part * code_len].reshape(*y.shape[:-1], per_part, code_len)  # [B/G, G, P, N, per_part, L]
    y = y.permute(0, 1, 3, 2, 4, 5).reshape(-1, length, parts * per_part, code_len)
    return y[:, :, :num_hash]


def sign_projections(mask, vector, projection, **attrs) -> torch.Tensor:
    """SignHash before the signs: [B, N, num_hash, hash_code_len], bit i of hash h is [y[..., h, i] > 0].

    Exposed so that a comparison across backends can tell a code bit flipped by rounding (|y| near
    zero) from a real difference.
    """
    attrs, env = _check(SIGN_HASH, (mask, vector, projection), attrs)
    # float16 inputs are hashed in float32 (widening is exact).
    vector, projection = vector.float(), projection.float()
    batch, length, dim, groups = env["B"], env["N"], env["D"], env["G"]
    num_hash, code_len, transform = attrs["num_hash"], attrs["hash_code_len"], attrs["transform"]
    if batch % groups:
        raise ValueError(f"SignHash: input 'projection' has {groups} groups, which do not divide the batch {batch}")
    # Row r uses projection[r mod G]: view the batch as [B/G, G].
    x = vector.reshape(batch // groups, groups, length, dim)

    if transform == "hadamard":
        if dim & (dim - 1):
            raise ValueError(
                f"SignHash: input 'vector' dim 2 (D) must be a power of two for transform='hadamard', got {dim}"
            )
        parts = hadamard_parts(dim, num_hash, code_len)
        if tuple(projection.shape[1:]) != (3 * parts, dim):
            raise ValueError(
                f"SignHash: input 'projection' must be [G, 3*P, D] = [{groups}, {3 * parts}, {dim}] "
                f"for transform='hadamard', got {list(projection.shape)}"
            )
        return hadamard_projections(x, projection, num_hash, code_len)
    if tuple(projection.shape[1:]) != (dim, num_hash * code_len):
        raise ValueError(
            f"SignHash: input 'projection' must be [G, D, num_hash*hash_code_len] = "
            f"[{groups}, {dim}, {num_hash * code_len}] for transform='gaussian', got {list(projection.shape)}"
        )
    y = projections(x, projection[None])  # [B/G, G, N, m*L]
    return y.reshape(batch, length, num_hash, code_len)


def sign_hash(mask, vector, projection, **attrs) -> torch.Tensor:
    codes = _codes(sign_projections(mask, vector, projection, **attrs) > 0)
    return torch.where(mask[..., None] != 0, codes, 0).int()


def top1_dispatch(probs, **attrs) -> tuple[torch.Tensor, ...]:
    attrs, env = _check(TOP1_DISPATCH, (probs,), attrs)
    batch, length, num_experts = env["B"], env["S"], env["E"]
    capacity = attrs["expert_capacity"]
    # torch.argmax returns the first maximum, and a NaN as the maximum.
    expert = probs.argmax(-1)
    gate = probs.gather(-1, expert[..., None])[..., 0]
    onehot = torch.nn.functional.one_hot(expert, num_experts)
    priority = onehot.cumsum(1).gather(-1, expert[..., None])[..., 0]
    kept = priority <= capacity
    flat = torch.arange(batch * length, device=probs.device)
    key = torch.where(kept, expert, num_experts).reshape(-1) * (batch * length) + flat
    ranked = flat[key.argsort()]
    total = int(kept.sum())
    order = torch.full((batch * length,), -1, dtype=torch.int32, device=probs.device)
    order[:total] = ranked[:total].int()
    counts = torch.bincount(expert[kept], minlength=num_experts).int()
    return (
        torch.where(kept, expert, -1).int(),
        gate,
        priority.int(),
        counts,
        order.view(batch, length),
    )


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


# The formula of every activation function ExpertFFN knows (spec.ACTIVATION_FUNCTIONS); the names
# that select them are spec.EXPERT_ACTIVATIONS. They agree with transformers' own versions to float
# rounding (e.g. gelu_fast's 0.7978845608 is sqrt(2/pi) to 1e-11).
ACTIVATION_FUNCTIONS = {
    "relu": torch.relu,
    "gelu": _gelu,
    "gelu_10": lambda x: _gelu(x).clamp(-10.0, 10.0),
    "gelu_tanh": _gelu_tanh,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": lambda x: x * torch.sigmoid(x),
    "relu2": lambda x: torch.relu(x) ** 2,
    "relu6": lambda x: x.clamp(0.0, 6.0),
    "leaky_relu": lambda x: torch.where(x >= 0, x, 0.01 * x),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "hardswish": lambda x: x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
    "mish": lambda x: x * torch.tanh(torch.nn.functional.softplus(x)),
    "laplace": lambda x: 0.5 * (1.0 + torch.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),
    "sqrt_softplus": lambda x: torch.nn.functional.softplus(x).sqrt(),
    "linear": lambda x: x,
}
assert tuple(ACTIVATION_FUNCTIONS) == ACTIVATION_FUNCTION_NAMES, "one formula per spec.ACTIVATION_FUNCTIONS entry"
# Every activation by its transformers name.
EXPERT_ACTIVATIONS = {name: ACTIVATION_FUNCTIONS[function] for name, function in SPEC_EXPERT_ACTIVATIONS.items()}


def _check_dispatch(op: str, order: torch.Tensor, counts: torch.Tensor) -> int:
    """Checks `counts`/`order` as the kernels do; returns the number of listed tokens."""
    tokens = order.numel()
    if counts.numel() and int(counts.min()) < 0:
        raise ValueError(f"{op}: input 'counts' has a negative count {int(counts.min())}")
    total = int(counts.long().sum())
    if total > tokens:
        raise ValueError(f"{op}: input 'counts' sums to {total}, more than the {tokens} tokens of 'order'")
    listed = order.reshape(-1)[:total]
    if total and (int(listed.min()) < 0 or int(listed.max()) >= tokens):
        raise ValueError(
            f"{op}: input 'order' lists token indices in [{int(listed.min())}, {int(listed.max())}], "
            f"outside [0, {tokens})"
        )
    seen = set()
    for token in listed.tolist():
        if token in seen:
            raise ValueError(f"{op}: input 'order' lists token {token} twice")
        seen.add(token)
    return total


def expert_ffn(hidden, order, counts, gate, wi, wo, **attrs) -> torch.Tensor:
    attrs, env = _check(EXPERT_FFN, (hidden, order, counts, gate, wi, wo), attrs)
    if hidden.dtype != torch.float32:  # float16: the float32 computation, rounded once at the end
        return expert_ffn(hidden.float(), order, counts, gate.float(), wi.float(), wo.float(), **attrs).to(hidden.dtype)
    _check_dispatch("ExpertFFN", order, counts)
    act = EXPERT_ACTIVATIONS[attrs["activation"]]
    return _each_expert(hidden, order, counts, gate, env["D"], lambda e, x: act(x @ wi[e].T) @ wo[e].T)


def _each_expert(hidden, order, counts, gate, dim, ffn) -> torch.Tensor:
    """The experts' dispatch, shared by ExpertFFN and ExpertFFNInt8: ffn(e, rows) for the tokens
    routed to expert e (order[start : start + counts[e]]), scaled by their gate; others stay 0."""
    x = hidden.reshape(-1, dim)
    g = gate.reshape(-1)
    out = torch.zeros_like(x)
    start = 0
    for e, n in enumerate(counts.tolist()):
        if n:
            tokens = order.reshape(-1)[start : start + n].long()
            out[tokens] = ffn(e, x[tokens]) * g[tokens, None]
            start += n
    return out.view_as(hidden)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ExpertFFNInt8's activation quantization of each row of x [R, K] (float32): (q, zp, s), with q
    [R, K] and zp [R] the uint8 codes as int64, and s [R] the float32 scales (NaN for a row with a
    NaN or Inf, whose codes are 0). Every step is one float32 operation, as the kernels do it."""
    finite = torch.isfinite(x).all(dim=1)
    x = torch.where(finite[:, None], x, 0.0)
    lo = torch.clamp(x.amin(dim=1), max=0.0)
    hi = torch.clamp(x.amax(dim=1), min=0.0)
    s = hi / 255 - lo / 255
    s = torch.where(s == 0, 1.0, s)
    zp = torch.clamp(torch.round(-lo / s), 0, 255)
    q = torch.clamp(torch.round(x / s[:, None]) + zp[:, None], 0, 255)
    s = torch.where(finite, s, float("nan"))
    return q.long(), torch.where(finite, zp, 0.0).long(), s


def quantized_linear(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """One ExpertFFNInt8 layer: rows x [R, K] float32 through int8 weights w [N, K] with per-row
    scales w_scale [N]: float32(sum_k (q - zp) w) * (s * w_scale)."""
    q, zp, s = quantize_rows(x)
    q = torch.where(torch.isnan(s)[:, None], 0, q)
    # float64 sums of integers below 2^53 are exact: the int32 sums the kernels take.
    acc = (q - zp[:, None]).double() @ w.double().T
    return acc.float() * (s[:, None] * w_scale[None, :])


def expert_ffn_int8(hidden, order, counts, gate, wi, wi_scale, wo, wo_scale, **attrs) -> torch.Tensor:
    attrs, env = _check(EXPERT_FFN_INT8, (hidden, order, counts, gate, wi, wi_scale, wo, wo_scale), attrs)
    check_int8_sum_length("ExpertFFNInt8", env["D"], env["F"])
    _check_dispatch("ExpertFFNInt8", order, counts)
    act = EXPERT_ACTIVATIONS[attrs["activation"]]

    def ffn(e, x):
        return quantized_linear(act(quantized_linear(x, wi[e], wi_scale[e])), wo[e], wo_scale[e])

    return _each_expert(hidden, order, counts, gate, env["D"], ffn)


def check_int8_sum_length(op: str, dim: int, ff: int, names: tuple[str, str] = ("wi", "wo")) -> None:
    """The int32 sums' bound on D and F, named by the inputs whose dim 2 they are (the kernels word it
    alike)."""
    for name, axis, sym, size in ((names[0], 2, "D", dim), (names[1], 2, "F", ff)):
        if size > MAX_INT8_SUM_LENGTH:
            raise ValueError(
                f"{op}: input '{name}' dim {axis} ({sym}) is {size}, more than {MAX_INT8_SUM_LENGTH} "
                "(the int32 sums could overflow)"
            )


def check_bucket_sizes(sizes: list[int], num_hash: int, columns: int) -> None:
    """ArgmaxHash's checks on bucket_sizes and the projection width (the kernel words them alike)."""
    if not sizes:
        raise ValueError("ArgmaxHash: input 'bucket_sizes' must not be empty")
    total = 1
    for size in sizes:
        if size < 2 or size % 2:
            raise ValueError(f"ArgmaxHash: input 'bucket_sizes' must hold even sizes >= 2, got {sizes}")
        total *= size
        if total >= 2**31 - 1:
            raise ValueError(f"ArgmaxHash: input 'bucket_sizes' {sizes}: the bucket count must be below 2^31 - 1")
    half = sum(sizes) // 2
    if columns != num_hash * half:
        raise ValueError(
            f"ArgmaxHash: input 'projection' has {columns} columns, but num_hash={num_hash} rounds of "
            f"bucket_sizes {sizes} need num_hash * sum(bucket_sizes) / 2 = {num_hash * half}"
        )


def argmax_projections(mask, vector, projection, bucket_sizes, **attrs) -> torch.Tensor:
    """ArgmaxHash before the argmax: [B, H, num_hash, N, S], S = sum(bucket_sizes) / 2.

    Exposed so that a cross-backend check can tell a bucket changed by rounding (two candidates
    within rounding of each other) from a real difference.
    """
    attrs, env = _check(ARGMAX_HASH, (mask, vector, projection, bucket_sizes), attrs)
    num_hash = attrs["num_hash"]
    check_bucket_sizes([int(s) for s in bucket_sizes.tolist()], num_hash, env["C"])
    # float16 inputs are hashed in float32 (widening is exact).
    y = projections(vector.float(), projection.float()[None])  # [B, H, N, C]
    return y.reshape(env["B"], env["H"], env["N"], num_hash, -1).transpose(2, 3)


def argmax_candidates(y: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Per factor, the 2 * n_f/2 candidates concat(y_f, -y_f) whose argmax is the factor's digit."""
    out, start = [], 0
    for size in sizes:
        part = y[..., start : start + size // 2]
        out.append(torch.cat([part, -part], dim=-1))
        start += size // 2
    return out


def argmax_hash(mask, vector, projection, bucket_sizes, **attrs) -> torch.Tensor:
    y = argmax_projections(mask, vector, projection, bucket_sizes, **attrs)
    sizes = [int(s) for s in bucket_sizes.tolist()]
    buckets = torch.zeros(y.shape[:-1], dtype=torch.int64)
    stride = 1
    for candidates, size in zip(argmax_candidates(y, sizes), sizes):
        buckets += stride * candidates.argmax(dim=-1)
        stride *= size
    padding = (mask == 0)[:, None, None, :]
    return torch.where(padding, stride, buckets).int()


def bucket_sum(bucket, weight, vector, **attrs) -> tuple[torch.Tensor, torch.Tensor]:
    attrs, env = _check(BUCKET_SUM, (bucket, weight, vector), attrs)
    groups, dim, capacity = env["G"], env["D"], attrs["num_buckets"]
    if bucket.numel() and (int(bucket.min()) < 0 or int(bucket.max()) >= capacity):
        raise ValueError(
            f"BucketSum: input 'bucket' has ids in [{int(bucket.min())}, {int(bucket.max())}], "
            f"outside [0, num_buckets={capacity})"
        )
    if vector.dtype != torch.float32:  # float16: the float32 sums, rounded once at the end
        sums, weights = bucket_sum(bucket, weight.float(), vector.float(), **attrs)
        return sums.to(vector.dtype), weights.to(weight.dtype)
    # One flat table of groups x buckets rows; index_add_ accumulates in input order.
    index = (bucket.long() + torch.arange(groups, device=bucket.device)[:, None] * capacity).reshape(-1)
    sums = torch.zeros(groups * capacity, dim, dtype=vector.dtype, device=vector.device)
    sums.index_add_(0, index, vector.reshape(-1, dim))
    weights = torch.zeros(groups * capacity, dtype=weight.dtype, device=weight.device)
    weights.index_add_(0, index, weight.reshape(-1))
    return sums.view(groups, capacity, dim), weights.view(groups, capacity)


# SortedChunkAttention's fixed scores (Reformer's float32 values).
MASKED_SCORE = -1e9
SELF_SCORE = -1e5


def check_chunk_attention(attrs: dict, length: int) -> None:
    """SortedChunkAttention's checks beyond the spec's (the kernel words them alike)."""
    if attrs["max_length"] and length > attrs["max_length"]:
        raise ValueError(
            f"SortedChunkAttention: input 'query' has sequence length {length}, beyond the model's limit "
            f"max_length={attrs['max_length']}"
        )
    chunk = attrs["chunk_length"]
    if length > chunk and length % chunk:
        raise ValueError(
            f"SortedChunkAttention: input 'query' has sequence length {length}, which must be a multiple of "
            f"chunk_length={chunk} (or at most one chunk)"
        )


def _attend(query, key, value, q_pos, k_pos, key_live, causal, mask_self):
    """Scores of queries at positions q_pos [..., Q] against keys at k_pos [..., K]; returns
    (softmax · value [..., Q, D], logsumexp [..., Q])."""
    scores = query @ key.transpose(-1, -2)
    allowed = key_live[..., None, :]
    if causal:
        allowed = allowed & (k_pos[..., None, :] <= q_pos[..., :, None])
    scores = torch.where(allowed, scores, MASKED_SCORE)
    if mask_self:
        scores = torch.where(k_pos[..., None, :] == q_pos[..., :, None], SELF_SCORE, scores)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return weighted_sum(_flush(torch.exp(scores - lse)), value), lse[..., 0]


# The smallest normal float32, 2^-126: softmax weights below it are flushed to 0 (the kernels' exp
# saturates there), and a weight of exactly 0 takes its key (or round) out of the sum.
WEIGHT_FLOOR = torch.finfo(torch.float32).tiny


def _flush(p: torch.Tensor) -> torch.Tensor:
    return torch.where(p < WEIGHT_FLOOR, 0.0, p)


def weighted_sum(p: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """p @ value [..., K] x [..., K, D] where a key of weight exactly 0 contributes nothing, whatever
    its value (Inf, NaN): the non-finite values of the keys with p > 0 add as IEEE does (a NaN, or
    both +Inf and -Inf, gives NaN; else ±Inf). One matmul when every value is finite."""
    finite = torch.isfinite(value)
    if bool(finite.all()):
        return p @ value
    out = p @ torch.where(finite, value, 0.0)
    used = (p > 0).to(value.dtype)
    nan = (used @ torch.isnan(value).to(value.dtype)) > 0
    pos = (used @ (value == float("inf")).to(value.dtype)) > 0
    neg = (used @ (value == float("-inf")).to(value.dtype)) > 0
    extra = torch.where(pos, float("inf"), 0.0) + torch.where(neg, float("-inf"), 0.0)  # both: NaN
    return out + torch.where(nan, float("nan"), extra)


def sorted_chunk_attention(query, key, value, mask, buckets, **attrs) -> torch.Tensor:
    attrs, env = _check(SORTED_CHUNK_ATTENTION, (query, key, value, mask, buckets), attrs)
    if query.dtype != torch.float32:  # float16: the float32 computation, rounded once at the end
        return sorted_chunk_attention(query.float(), key.float(), value.float(), mask, buckets, **attrs).to(query.dtype)
    batch, heads, length, dim, rounds = env["B"], env["H"], env["N"], env["D"], env["R"]
    check_chunk_attention(attrs, length)
    chunk, causal, mask_self = attrs["chunk_length"], attrs["causal"], attrs["mask_self"]
    live = (mask != 0)[:, None, :].expand(batch, heads, length)
    positions = torch.arange(length).expand(batch, heads, length)
    if length <= chunk:
        out, _ = _attend(query, key, value, positions, positions, live, causal, mask_self)
        return out
    if int(buckets.min()) < 0:
        raise ValueError("SortedChunkAttention: input 'buckets' must be >= 0")

    # Stable sort of each round by bucket; round r's slots follow round r-1's.
    order = torch.sort(buckets.long(), dim=-1, stable=True).indices.reshape(batch, heads, rounds * length)
    gather = lambda t: t.gather(2, order[..., None].expand(-1, -1, -1, dim))  # noqa: E731
    q, k, v = gather(query), gather(key), gather(value)
    k_live = live.gather(2, order)

    def chunks(t):
        return t.reshape(batch, heads, -1, chunk, *t.shape[3:])

    def window(t):  # chunk c sees chunks c - before .. c + after, wrapping around all rounds
        t = chunks(t)
        shifted = [torch.roll(t, -j, dims=2) for j in range(-attrs["chunks_before"], attrs["chunks_after"] + 1)]
        return torch.cat(shifted, dim=3)

    out, lse = _attend(chunks(q), window(k), window(v), chunks(order), window(order), window(k_live), causal, mask_self)
    # Unsort: slot i of round r holds position order[i]; scatter back to [B, H, R, N].
    slot_round = (torch.arange(rounds * length) // length).expand(batch, heads, -1)
    target = slot_round * length + order
    out_unsorted = torch.empty(batch, heads, rounds * length, dim, dtype=out.dtype)
    out_unsorted.scatter_(2, target[..., None].expand(-1, -1, -1, dim), out.reshape(batch, heads, -1, dim))
    lse_unsorted = torch.empty(batch, heads, rounds * length, dtype=lse.dtype).scatter_(
        2, target, lse.reshape(batch, heads, -1)
    )
    out_unsorted = out_unsorted.reshape(batch, heads, rounds, length, dim)
    lse_unsorted = lse_unsorted.reshape(batch, heads, rounds, length, 1)
    if rounds == 1:
        return out_unsorted[:, :, 0]
    weights = _flush(torch.exp(lse_unsorted - torch.logsumexp(lse_unsorted, dim=2, keepdim=True)))
    # A round of weight 0 contributes nothing, whatever its output (as a key of weight 0).
    return torch.where(weights == 0, 0.0, out_unsorted * weights).sum(dim=2)


def _torch_clamp(x: torch.Tensor, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    return x.clamp(lo, hi)


def gating_function(gating: str, act, limit: float, clamp=_torch_clamp):
    """TopKExperts' gating functions (catalogue.EXPERT_GATINGS), h [..., G] -> [..., F]. `clamp(x,
    lo, hi)` is torch.clamp's semantics (NaN kept); the standard-op lowering passes its own, written
    as comparisons, because ONNX's Clip does not say what it does with NaN."""
    if gating == "none":
        return act

    def gated(h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)
        if gating == "glu":
            return act(gate) * up
        up = clamp(up, -limit, limit)
        if gating == "glu_clamped":
            return act(clamp(gate, hi=limit)) * up
        if gating == "glu_clamped_after":
            return clamp(act(gate), hi=limit) * up
        return act(clamp(gate, hi=limit)) * (up + 1)  # glu_clamped_offset

    return gated


def check_topk_experts_attributes(attrs: dict, env: dict, op: str = TOPK_EXPERTS.name) -> None:
    """TopKExperts' checks beyond the spec's, and TopKExpertsInt8's (the kernels word them alike): G
    against F and the gating, and the limit against the gating."""
    gating, limit = attrs["gating"], attrs["limit"]
    width = env["F"] if gating == "none" else 2 * env["F"]
    if env["G"] != width:
        rule = "F" if gating == "none" else "2*F"
        raise ValueError(
            f"{op}: input 'gate_up' dim 1 (G) must be {rule} = {width} for gating '{gating}', got {env['G']}"
        )
    if gating in LIMITED_GATINGS and limit <= 0:
        raise ValueError(f"{op}: attribute 'limit' must be > 0 for gating '{gating}', got {limit:g}")
    if gating not in LIMITED_GATINGS and limit != 0:
        raise ValueError(
            f"{op}: attribute 'limit' applies to gatings {', '.join(LIMITED_GATINGS)} only; "
            f"it must be 0 for gating '{gating}', got {limit:g}"
        )


def _check_expert_index(op: str, expert_index: torch.Tensor, experts: int) -> None:
    if expert_index.numel() and (int(expert_index.min()) < 0 or int(expert_index.max()) > experts):
        bad = ((expert_index < 0) | (expert_index > experts)).nonzero()[0].tolist()
        raise ValueError(
            f"{op}: input 'expert_index' has {int(expert_index[tuple(bad)])} at {bad}, outside [0, E={experts}] "
            f"(E: no expert)"
        )


def _sum_over_picks(hidden, expert_index, expert_weight, experts: int, dim: int, expert) -> torch.Tensor:
    """TopKExperts' routing, shared with TopKExpertsInt8: expert(e, rows) [R, D] is expert e's output for
    the hidden rows routed to it; each token sums its live picks' weighted outputs in pick order."""
    # y[t, j]: the output of token t's j-th expert, before its weight (0 where it has none).
    y = torch.zeros(*expert_index.shape, dim, dtype=torch.float32)
    for e in expert_index.unique().tolist():
        if e == experts:
            continue
        tokens, picks = (expert_index == e).nonzero(as_tuple=True)
        y[tokens, picks] = expert(e, hidden[tokens])
    live = expert_index != experts
    out = torch.zeros_like(hidden)
    for j in range(expert_index.shape[1]):  # the spec's order: picks j = 0, 1, ...
        out = out + torch.where(live[:, j, None], expert_weight[:, j, None] * y[:, j], 0.0)
    return out


def topk_experts(hidden, expert_index, expert_weight, gate_up, gate_up_bias, down, down_bias, **attrs) -> torch.Tensor:
    tensors = (hidden, expert_index, expert_weight, gate_up, gate_up_bias, down, down_bias)
    attrs, env = _check(TOPK_EXPERTS, tensors, attrs)
    check_topk_experts_attributes(attrs, env)
    if hidden.dtype != torch.float32:  # float16: the float32 computation, rounded once at the end
        return topk_experts(*(t.float() if t.is_floating_point() else t for t in tensors), **attrs).to(hidden.dtype)
    experts = env["E"]
    _check_expert_index(TOPK_EXPERTS.name, expert_index, experts)
    ffn = gating_function(attrs["gating"], EXPERT_ACTIVATIONS[attrs["activation"]], attrs["limit"])

    def expert(e, x):
        return ffn(x @ gate_up[e].T + gate_up_bias[e]) @ down[e].T + down_bias[e]

    return _sum_over_picks(hidden, expert_index, expert_weight, experts, env["D"], expert)


def topk_experts_int8(
    hidden, expert_index, expert_weight, gate_up, gate_up_scale, gate_up_bias, down, down_scale, down_bias, **attrs
) -> torch.Tensor:
    tensors = (hidden, expert_index, expert_weight, gate_up, gate_up_scale, gate_up_bias, down, down_scale, down_bias)
    attrs, env = _check(TOPK_EXPERTS_INT8, tensors, attrs)
    check_topk_experts_attributes(attrs, env, TOPK_EXPERTS_INT8.name)
    check_int8_sum_length(TOPK_EXPERTS_INT8.name, env["D"], env["F"], names=("gate_up", "down"))
    experts = env["E"]
    _check_expert_index(TOPK_EXPERTS_INT8.name, expert_index, experts)
    ffn = gating_function(attrs["gating"], EXPERT_ACTIVATIONS[attrs["activation"]], attrs["limit"])

    # A row's quantization depends on the row alone: the token's hidden row quantized once per pick
    # is the same codes and scale as once per token.
    def expert(e, x):
        h = quantized_linear(x, gate_up[e], gate_up_scale[e]) + gate_up_bias[e]
        return quantized_linear(ffn(h), down[e], down_scale[e]) + down_bias[e]

    return _sum_over_picks(hidden, expert_index, expert_weight, experts, env["D"], expert)


def linear_int8(input, weight, weight_scale, bias, **attrs) -> torch.Tensor:
    tensors = (input, weight, weight_scale, bias)
    attrs, env = _check(LINEAR_INT8, tensors, attrs)
    if env["K"] > MAX_INT8_SUM_LENGTH:
        raise ValueError(
            f"LinearInt8: input 'weight' dim 1 (K) is {env['K']}, more than {MAX_INT8_SUM_LENGTH} "
            "(the int32 sums could overflow)"
        )
    rows = input.reshape(-1, env["K"])
    if env["K"] == 0:  # rows of nothing: range 0, so s = 1 and every sum 0
        out = torch.zeros(rows.shape[0], env["N"]) * weight_scale + bias
    else:
        out = quantized_linear(rows, weight, weight_scale) + bias
    return out.reshape(env["B"], env["S"], env["N"])


def check_masked_attention_heads(op: str, heads: int, kv_heads: int) -> None:
    """MaskedAttention's check beyond the spec's: every query head has its key/value head."""
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(
            f"{op}: input 'query' dim 1 (H = {heads}) must be a multiple of input 'key' dim 1 (N = {kv_heads})"
        )


def grouped_attention(query, key, value, mask, sinks, scale: float, weighted) -> torch.Tensor:
    """MaskedAttention's arithmetic, shared with its lowering: the query heads of each key/value head
    side by side ([B, N, g*S, D], no copy of the keys), the logits of the keys that take part, their
    weights and `weighted(p, value)`. Returns [B, S, H, Dv]."""
    batch, heads, length, _ = query.shape
    kv_heads, dv = key.shape[1], value.shape[-1]
    group = heads // kv_heads
    logits = (query.reshape(batch, kv_heads, group * length, -1) @ key.transpose(-1, -2)) * scale
    logits = logits.reshape(batch, kv_heads, group, length, -1)
    live = (mask != 0)[:, None, None]  # [B, 1, 1, S, T]
    logits = torch.where(live, logits, float("-inf"))
    sink = sinks.reshape(1, kv_heads, group, 1, 1)
    top = torch.maximum(logits.amax(-1, keepdim=True), sink)
    w = torch.where(live, torch.exp(logits - top), 0.0)
    p = w / (w.sum(-1, keepdim=True) + torch.exp(sink - top))
    out = weighted(p.reshape(batch, kv_heads, group * length, -1), value)
    out = torch.where(live.any(-1, keepdim=True), out.reshape(batch, kv_heads, group, length, dv), 0.0)
    return out.permute(0, 3, 1, 2, 4).reshape(batch, length, heads, dv)


def masked_attention(query, key, value, mask, sinks, **attrs) -> torch.Tensor:
    tensors = (query, key, value, mask, sinks)
    attrs, env = _check(MASKED_ATTENTION, tensors, attrs)
    check_masked_attention_heads(MASKED_ATTENTION.name, env["H"], env["N"])
    if query.dtype != torch.float32:  # float16: the float32 computation, rounded once at the end
        return masked_attention(*(t.float() if t.is_floating_point() else t for t in tensors), **attrs).to(query.dtype)
    return grouped_attention(query, key, value, mask, sinks, attrs["scale"], weighted_sum)


REFERENCES = {
    LSH_CUMULATION.name: lsh_cumulation,
    SIGN_HASH.name: sign_hash,
    ARGMAX_HASH.name: argmax_hash,
    SORTED_CHUNK_ATTENTION.name: sorted_chunk_attention,
    BUCKET_SUM.name: bucket_sum,
    TOP1_DISPATCH.name: top1_dispatch,
    EXPERT_FFN.name: expert_ffn,
    EXPERT_FFN_INT8.name: expert_ffn_int8,
    TOPK_EXPERTS.name: topk_experts,
    TOPK_EXPERTS_INT8.name: topk_experts_int8,
    LINEAR_INT8.name: linear_int8,
    MASKED_ATTENTION.name: masked_attention,
}
