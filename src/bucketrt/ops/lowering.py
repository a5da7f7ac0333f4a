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

from .schema import OpSpec

__all__ = ["LOWERINGS", "lowers"]

LOWERINGS: dict[str, Callable] = {}


def lowers(spec: OpSpec) -> Callable[[Callable], Callable]:
    """Registers the decorated function as `spec`'s standard-op lowering."""

    def register(fn: Callable) -> Callable:
        if spec.name in LOWERINGS:
            raise ValueError(f"{spec.name} has two lowerings: {LOWERINGS[spec.name].__name__} and {fn.__name__}")
        LOWERINGS[spec.name] = fn
        return fn

    return register


# -- mixture of experts: Top1Dispatch, ExpertFFN, TopKExperts ------------------------------------
# Costs against the custom kernels and a dense all-experts formulation: docs/ops.md, "Standard-op
# lowering" (ops/lowering_costs.py).

import torch  # noqa: E402 - the MoE section is kept whole, at the end of the file

from .catalogue import EXPERT_FFN, TOP1_DISPATCH, TOPK_EXPERTS  # noqa: E402
from .reference import ACTIVATION_FUNCTIONS as _REFERENCE_ACTIVATIONS  # noqa: E402


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
    """Every row of x [..., R, In] (or [R, In]) through every expert's weight [E, N, In]: [E, R, N]."""
    return x @ weight.transpose(1, 2)


def _choose(pairs, experts: int, gathered, dense, operands: tuple) -> torch.Tensor:
    """gathered(*operands) where the (token, expert) pairs are at most the experts (decoding: the
    gathered weights are then no more than the experts' own), dense(*operands) otherwise. Exported,
    the choice is an ONNX If on the dynamic token count; eager, a plain branch."""
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


def _gating(gating: str, act, limit: float):
    """reference.gating_function with its clamps as comparisons (NaN kept, as torch.clamp)."""
    if gating == "none":
        return act

    def gated(h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)
        if gating == "glu":
            return act(gate) * up
        up = _clamp(up, -limit, limit)
        if gating == "glu_clamped":
            return act(_clamp(gate, hi=limit)) * up
        if gating == "glu_clamped_after":
            return _clamp(act(gate), hi=limit) * up
        return act(_clamp(gate, hi=limit)) * (up + 1)  # glu_clamped_offset

    return gated


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
    ffn = _gating(gating, _activation(activation), limit)

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
