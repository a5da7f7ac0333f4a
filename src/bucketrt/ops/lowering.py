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


@lowers(EXPERT_FFN)
def expert_ffn(hidden, order, counts, gate, wi, wo, *, activation: str) -> torch.Tensor:
    """Each token's expert found from `order` and `counts` without a sort: place i of `order`
    belongs to expert #{e : end_e <= i} (end_e the inclusive cumsum of counts), and is listed where
    i < sum(counts); a ScatterElements gives each listed token its expert (the others a place past
    the tokens, sliced off). Then a per-token gathered-weights FFN: the work is the kernel's (one
    expert per listed token), the memory B*S*2*F*D gathered weights (see docs/ops.md)."""
    dtype = hidden.dtype
    batch, length, dim = hidden.shape
    x = hidden.float().reshape(-1, dim)
    tokens = x.shape[0]
    ends = counts.to(torch.int64).cumsum(0)  # [E]
    places = torch.arange(tokens, device=hidden.device)
    listed = places < ends[-1:]
    place_expert = (ends[None, :] <= places[:, None]).to(torch.int64).sum(-1)  # [T]; E past the listed
    target = torch.where(listed, order.reshape(-1).to(torch.int64), tokens + places)  # unlisted: past the end
    token_expert = torch.full((2 * tokens,), -1, dtype=torch.int64, device=hidden.device)
    token_expert = token_expert.scatter(0, target, torch.where(listed, place_expert, -1))[:tokens]
    has_expert = token_expert >= 0
    experts = wi.shape[0]
    index = _clamp_index(token_expert, experts)
    act = _activation(activation)
    y = _gathered_linear(act(_gathered_linear(x, wi.float(), index)), wo.float(), index)
    out = torch.where(has_expert[:, None], gate.float().reshape(-1, 1) * y, 0.0)
    return out.reshape(batch, length, dim).to(dtype)


def _clamp_index(index: torch.Tensor, experts: int) -> torch.Tensor:
    """An index in [0, E) for gathering: a token or pick without an expert gathers expert 0's weights,
    and its output is dropped by a select (never multiplied by 0: NaN * 0 is NaN)."""
    return torch.where((index >= 0) & (index < experts), index, 0)


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
    """Per-token gathered weights: each (token, pick) pair gathers its expert's gate_up [G, D] and
    down [D, F] and runs one small matmul each, so only the chosen experts are computed (T*K
    expert evaluations, the kernel's work) at the price of T*K*(G*D + D*F) gathered weights in
    memory; a pick of expert E (none) gathers expert 0 and is dropped by a select, whatever its
    weight. The picks' weighted outputs are summed by one ReduceSum, whose order the runtime picks
    (the reference sums j = 0, 1, ...: within float32 rounding)."""
    dtype = hidden.dtype
    tokens, dim = hidden.shape
    picks = expert_index.shape[1]
    experts = gate_up.shape[0]
    index = expert_index.to(torch.int64)
    live = index < experts  # the spec's E: no expert
    flat = _clamp_index(index, experts).reshape(-1)  # [T*K]
    x = hidden.float()[:, None, :].expand(tokens, picks, dim).reshape(-1, dim)
    h = _gathered_linear(x, gate_up.float(), flat) + gate_up_bias.float()[flat]
    a = _gating(gating, _activation(activation), limit)(h)
    y = (_gathered_linear(a, down.float(), flat) + down_bias.float()[flat]).reshape(tokens, picks, dim)
    weighted = torch.where(live[..., None], expert_weight.float()[..., None] * y, 0.0)
    return weighted.sum(1).to(dtype)
