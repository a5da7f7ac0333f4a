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
from bucketrt.ops.catalogue import ARGMAX_HASH, BY_NAME, SIGN_HASH, TOP1_DISPATCH
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


def route_outputs(model: onnx.ModelProto) -> list[str]:
    """Names of every Top1Dispatch node's `expert` output (each token's expert, -1 where dropped),
    in graph order: what RouteAudit compares."""
    return [
        node.output[0]
        for node in model.graph.node
        if node.domain == DOMAIN and node.op_type == TOP1_DISPATCH.name and node.output
    ]


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
class RouteAudit:
    """An `intercept` hook that counts the tokens whose Top1Dispatch expert (or drop) differs between
    another backend and the reference. It changes nothing: routing differences reach the outputs,
    and this says how many there were (a quantized Switch model's routers can flip near-ties)."""

    routes: list[np.ndarray]
    used: list[bool] = field(init=False)
    calls: int = 0
    total: int = 0  # tokens routed, over every call
    differing: int = 0

    def __post_init__(self):
        self.used = [False] * len(self.routes)

    def __call__(self, spec: OpSpec, inputs: tuple, attrs: dict, result):
        if spec.name != TOP1_DISPATCH.name:
            return result
        self.calls += 1
        ours = result[0].detach().cpu()
        theirs = _match_unused(self.routes, self.used, ours, spec.name)
        self.total += ours.numel()
        self.differing += int((ours != theirs).sum())
        return result

    @property
    def complete(self) -> bool:
        return all(self.used) and self.calls == len(self.routes)
