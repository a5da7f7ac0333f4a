"""Comparing models that hash, across backends.

Hash codes are signs of random projections. A rounding difference of 1e-7 in a query flips the bit
of any projection that lies that close to zero, moves the query to another bucket, and later
layers amplify the change: an element-wise comparison of an LSH model's outputs across backends
fails at long sequences even when both backends are right. So a check runs in two parts:

1. The backend's codes are captured (every integer output of a bucketrt node becomes a graph
   output) and the PyTorch reference runs on them, through `bucketrt.ops.intercept`. The model
   outputs then compare element-wise everything except the choice of buckets.
2. The hashing is checked code by code: where the backend's code differs from the one PyTorch
   computes from its own inputs, every differing bit must belong to a projection within
   `margin` (relative to the RMS projection of its row) of zero - a rounding flip. Any other
   difference is a real one and fails the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from bucketrt.ops import reference
from bucketrt.ops.catalogue import ARGMAX_HASH, BY_NAME, SIGN_HASH, TOP1_DISPATCH, TOPK_EXPERTS
from bucketrt.ops.schema import DOMAIN, OpSpec

# A flip is rounding when the projection is this close to zero relative to its row's RMS.
DEFAULT_MARGIN = 1e-4


def code_outputs(model: onnx.ModelProto) -> list[str]:
    """Names of every integer (code) output of a hashing bucketrt node, in graph order.

    Only hashing ops: other integer outputs (routing decisions) are compared through their effect
    on the model's outputs."""
    names = []
    for node in model.graph.node:
        spec = BY_NAME.get(node.op_type) if node.domain == DOMAIN else None
        if spec is not None and spec.name in _FLIP_MARGINS:
            names += [name for name, out in zip(node.output, spec.outputs) if out.dtype == "int32"]
    return names


# Where each routing op's decision is, per node: (output index or None, input index or None).
# Top1Dispatch outputs each token's expert (-1 where dropped); TopKExperts takes each token's k
# experts as its expert_index input (from the router's standard TopK).
_ROUTES = {TOP1_DISPATCH.name: ("output", 0), TOPK_EXPERTS.name: ("input", 1)}


def route_outputs(model: onnx.ModelProto) -> list[str]:
    """Names of every routing decision in graph order, one per routing node: Top1Dispatch's
    `expert` output (each token's expert, -1 where dropped), TopKExperts' `expert_index` input (each
    token's k experts): what RouteAudit compares."""
    names = []
    for node in model.graph.node:
        where = _ROUTES.get(node.op_type) if node.domain == DOMAIN else None
        if where is None:
            continue
        values = node.output if where[0] == "output" else node.input
        if len(values) > where[1] and values[where[1]]:
            names.append(values[where[1]])
    return names


def _match_unused(tensors: list[np.ndarray], used: list[bool], ours: torch.Tensor, what: str) -> torch.Tensor:
    """The unused captured tensor of ours's shape that agrees most with ours, marked used (graph
    order and call order need not coincide; a layer's query and key codes differ almost everywhere)."""
    best, best_agree = None, -1
    for index, candidate in enumerate(tensors):
        if used[index] or tuple(candidate.shape) != tuple(ours.shape):
            continue
        agree = int((torch.from_numpy(candidate) == ours).sum())
        if agree > best_agree:
            best, best_agree = index, agree
    if best is None:
        raise RuntimeError(f"{what}: the backend produced no matching tensor of shape {list(ours.shape)}")
    used[best] = True
    return torch.from_numpy(tensors[best]).to(ours.dtype)


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs the int32 tensors `names`."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT32, None))
    return copy


def _sign_hash_flip_margins(inputs: tuple, attrs: dict, ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """For each differing SignHash code: max over its differing bits of |projection| / row RMS."""
    mask = inputs[0]
    y = reference.sign_projections(*inputs, **attrs)  # [B, N, m, L]
    rms = y.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(torch.finfo(y.dtype).tiny)
    bits = 2 ** torch.arange(y.shape[-1], dtype=torch.int64)
    flipped = ((ours.long() ^ theirs.long())[..., None] & bits) != 0  # [B, N, m, L]
    ratio = torch.where(flipped, y.abs() / rms, 0.0)
    differing = (ours != theirs) & (mask[..., None] != 0)
    return ratio.amax(-1)[differing]


def _argmax_hash_flip_margins(inputs: tuple, attrs: dict, ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """For each differing ArgmaxHash bucket: max over its differing factor digits of the gap between
    the two competing candidates, relative to the RMS projection of its round."""
    mask, bucket_sizes = inputs[0], inputs[3]
    sizes = [int(s) for s in bucket_sizes.tolist()]
    y = reference.argmax_projections(*inputs, **attrs)  # [B, H, R, N, S]
    rms = y.pow(2).mean(dim=-1).sqrt().clamp_min(torch.finfo(y.dtype).tiny)
    padding = 1
    for size in sizes:
        padding *= size
    live = (mask != 0)[:, None, None, :] & (ours != padding) & (theirs != padding)
    ratio = torch.zeros(ours.shape, dtype=y.dtype)
    # A bucket that is the padding one on one side only is a real difference (infinite margin).
    ratio = torch.where((ours != theirs) & ~live, torch.inf, ratio)
    a, b, stride = ours.long(), theirs.long(), 1
    for candidates, size in zip(reference.argmax_candidates(y, sizes), sizes):
        da = (a.clamp_min(0) // stride % size)[..., None]
        db = (b.clamp_min(0) // stride % size)[..., None]
        gap = (candidates.gather(-1, da) - candidates.gather(-1, db)).abs()[..., 0] / rms
        ratio = torch.where(live & (da[..., 0] != db[..., 0]), torch.maximum(ratio, gap), ratio)
        stride *= size
    return ratio[ours != theirs]


# How to tell a rounding flip from a real difference, per hashing op.
_FLIP_MARGINS = {SIGN_HASH.name: _sign_hash_flip_margins, ARGMAX_HASH.name: _argmax_hash_flip_margins}


@dataclass
class CodeSync:
    """An `intercept` hook that hands the reference another backend's codes, and audits them."""

    codes: list[np.ndarray]
    margin: float = DEFAULT_MARGIN
    used: list[bool] = field(init=False)
    total: int = 0
    differing: int = 0
    unexplained: int = 0
    worst_margin: float = 0.0
    calls: int = 0

    def __post_init__(self):
        self.used = [False] * len(self.codes)

    def __call__(self, spec: OpSpec, inputs: tuple, attrs: dict, result: torch.Tensor) -> torch.Tensor:
        margins_of = _FLIP_MARGINS.get(spec.name)
        if margins_of is None:  # not a hashing op: its result is the reference's own
            return result
        self.calls += 1
        ours = result.detach().cpu()
        theirs = self._match(spec, ours)
        differing = ours != theirs
        self.total += ours.numel()
        count = int(differing.sum())
        if count:
            self.differing += count
            margins = margins_of(inputs, attrs, ours, theirs)
            self.unexplained += int((margins > self.margin).sum())
            if margins.numel():
                self.worst_margin = max(self.worst_margin, float(margins.max()))
        return theirs.to(result.device)

    def _match(self, spec: OpSpec, ours: torch.Tensor) -> torch.Tensor:
        return _match_unused(self.codes, self.used, ours, spec.name)

    @property
    def complete(self) -> bool:
        return all(self.used) and self.calls == len(self.codes)

    @property
    def ok(self) -> bool:
        return self.complete and self.unexplained == 0


@dataclass
class LayerRoutes:
    """One routing layer's audit: its tokens, and those whose experts differ (flat token indices)."""

    layer: int  # the routing call's index, in call order (= the nodes' graph order)
    op: str
    tokens: int
    differing: int
    differing_tokens: list[int] = field(default_factory=list)  # the first MAX_LISTED of them


@dataclass
class RouteAudit:
    """An `intercept` hook that counts, layer by layer, the tokens whose experts differ between another
    backend and the reference: Top1Dispatch's expert (or drop), TopKExperts' set of k experts (their
    order within the k does not count). It changes nothing: routing differences reach the outputs,
    and this says where there were some (a quantized Switch model's routers can flip near-ties; so
    can any top-k router where two experts' scores are within rounding of each other)."""

    routes: list[np.ndarray]
    used: list[bool] = field(init=False)
    calls: int = 0
    total: int = 0  # tokens routed, over every call
    differing: int = 0
    layers: list[LayerRoutes] = field(default_factory=list)

    MAX_LISTED = 32

    def __post_init__(self):
        self.used = [False] * len(self.routes)

    def __call__(self, spec: OpSpec, inputs: tuple, attrs: dict, result):
        if spec.name == TOP1_DISPATCH.name:
            ours = result[0].detach().cpu()
            theirs = _match_unused(self.routes, self.used, ours, spec.name)
            differ = (ours != theirs).reshape(-1)
        elif spec.name == TOPK_EXPERTS.name:
            ours = inputs[1].detach().cpu()
            theirs = self._in_order(ours, spec.name)
            differ = (ours.sort(dim=-1).values != theirs.sort(dim=-1).values).any(dim=-1)
        else:
            return result
        listed = differ.nonzero().reshape(-1)[: self.MAX_LISTED].tolist()
        count = int(differ.sum())
        self.layers.append(LayerRoutes(self.calls, spec.name, int(differ.numel()), count, listed))
        self.calls += 1
        self.total += int(differ.numel())
        self.differing += count
        return result

    def _in_order(self, ours: torch.Tensor, what: str) -> torch.Tensor:
        """The captured tensor of this call's index (graph order is call order in a traced graph);
        the best-agreeing unused one of the same shape where that one does not fit."""
        index = self.calls
        if index < len(self.routes) and not self.used[index] and tuple(self.routes[index].shape) == tuple(ours.shape):
            self.used[index] = True
            return torch.from_numpy(self.routes[index]).to(ours.dtype)
        return _match_unused(self.routes, self.used, ours, what)

    @property
    def complete(self) -> bool:
        return all(self.used) and self.calls == len(self.routes)
