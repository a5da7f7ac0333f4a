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

from .catalogue import TOPK_EXPERTS
from .reference import EXPERT_ACTIVATIONS, gating_function
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


@lowers(TOPK_EXPERTS)
def topk_experts_dense(hidden, expert_index, expert_weight, gate_up, gate_up_bias, down, down_bias, **attrs):
    """TopKExperts as every expert on every token (what a dense export computes, and what Optimum's
    exporters write for MoE layers): [E, T, G] then [E, T, D] activations, summed with a [T, E]
    weight matrix that is zero where a token did not pick the expert. Costs tokens x experts, not
    tokens x k; the picks' "no expert" index E lands in a column that is dropped."""
    if hidden.dtype != torch.float32:  # float16: computed in float32 and rounded once, as the reference
        return topk_experts_dense(
            hidden.float(), expert_index, expert_weight.float(), gate_up.float(), gate_up_bias.float(),
            down.float(), down_bias.float(), **attrs,
        ).to(hidden.dtype)  # fmt: skip
    ffn = gating_function(attrs["gating"], EXPERT_ACTIVATIONS[attrs["activation"]], attrs["limit"])
    experts = gate_up.shape[0]
    h = torch.einsum("td,egd->etg", hidden, gate_up) + gate_up_bias[:, None, :]
    y = torch.einsum("etf,edf->etd", ffn(h), down) + down_bias[:, None, :]
    picks = expert_index.long()
    weights = torch.zeros(hidden.shape[0], experts + 1, dtype=hidden.dtype).scatter_add(1, picks, expert_weight)
    return torch.einsum("te,etd->td", weights[:, :experts], y)
