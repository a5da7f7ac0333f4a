"""transformers' experts interface through bucketrt's TopKExperts: one hook for every model family
whose experts module is declared with `@use_experts_implementation` (transformers.integrations.moe).

Such a module is called as `experts(hidden_states [T, D], top_k_index [T, k], top_k_weights [T, k])`
and carries its stacked weights and layout flags. `patch_experts(model)` brings every such module of
a model to TopKExperts' canonical layout once (gate_up [E, G, D] with the gate rows first, then the
up rows; down [E, D, F]; biases always, zeros where the module has none), replacing the module's
own parameters rather than keeping two copies, recognises its gating and activation among those of
the op spec, and switches the model's experts implementation to "bucketrt", an entry of
transformers' ALL_EXPERTS_FUNCTIONS registered here once. That function is a single call of the
op: its PyTorch reference when eager, one `bucketrt::TopKExperts` node per layer when exporting.
Routers, shared experts and everything else stay the model's own code (standard ONNX ops).

The gating and the activation are recognised numerically, not by class name: the module's
`_apply_gate` (transformers' default one: "glu" with the module's act_fn; GPT-OSS's, DeepSeek-V4's,
... their own) is probed against each gating of catalogue.EXPERT_GATINGS with each activation
function of catalogue.EXPERT_ACTIVATIONS, with the module's clamp limit where it has one; experts
without a gate probe their act_fn alone. A module that matches none, or that the op cannot express
(a post-expert norm, expert parallelism), is refused with a BucketrtError naming its class and
what is missing.
"""

from __future__ import annotations

import contextvars
import functools

import torch

from bucketrt.errors import BucketrtError
from bucketrt.ops.catalogue import EXPERT_ACTIVATIONS, EXPERT_GATINGS, LIMITED_GATINGS, TOPK_EXPERTS
from bucketrt.ops.dispatch import call
from bucketrt.ops.reference import EXPERT_ACTIVATIONS as ACTIVATION_FORMULAS
from bucketrt.ops.reference import gating_function

IMPLEMENTATION = "bucketrt"
# The module attribute the patch leaves on every experts module: TopKExperts' attributes.
ATTRIBUTES = "bucketrt_topk_experts"
# The module attributes that hold a clamp limit (GPT-OSS: limit; others: swiglu_limit).
_LIMIT_NAMES = ("limit", "swiglu_limit")
_ALPHA_NAMES = ("alpha", "swiglu_alpha")
# Set while check_routers traces the MoE blocks: the experts function then stands in for the op.
_PROBING = contextvars.ContextVar("bucketrt_probing_routers", default=False)


def experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
    """The "bucketrt" experts implementation: TopKExperts over the canonical weights the patch left."""
    attrs = getattr(self, ATTRIBUTES, None)
    if attrs is None:
        raise RuntimeError(
            f"{type(self).__name__} runs the 'bucketrt' experts implementation without bucketrt's patch "
            "(bucketrt.exporter.experts.patch_experts)"
        )
    tokens = hidden_states.shape[0] if hidden_states.dim() == 2 else None
    if (
        tokens is None
        or top_k_index.dim() != 2
        or top_k_index.shape[0] != tokens
        or top_k_weights.shape != top_k_index.shape
    ):
        raise BucketrtError(
            f"{type(self).__name__} gets hidden states {list(hidden_states.shape)}, expert indices "
            f"{list(top_k_index.shape)} and weights {list(top_k_weights.shape)} from its MoE block",
            "TopKExperts takes a router's picks as transformers' experts interface defines them: hidden states "
            "[tokens, hidden], indices and weights [tokens, k]",
        )
    if _PROBING.get():  # check_routers: the routing only, the experts' shape of output
        return hidden_states * top_k_weights.sum(-1, keepdim=True).to(hidden_states.dtype) + 0 * top_k_index[:, :1]
    out = call(
        TOPK_EXPERTS,
        hidden_states,
        top_k_index.to(torch.int32),
        top_k_weights.to(hidden_states.dtype),
        self.gate_up_proj if attrs["gating"] != "none" else self.up_proj,
        self.gate_up_proj_bias if attrs["gating"] != "none" else self.up_proj_bias,
        self.down_proj,
        self.down_proj_bias,
        **attrs,
    )
    return out


@functools.cache
def register() -> str:
    """Registers "bucketrt" in transformers' ALL_EXPERTS_FUNCTIONS (once); returns the name."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, experts_forward)
    return IMPLEMENTATION


@functools.cache
def _interface_code():
    """The code object of the forward `@use_experts_implementation` gives a class: every class
    decorated with it shares this one (the closures differ, the code does not)."""
    from transformers.integrations.moe import use_experts_implementation

    class Probe(torch.nn.Module):
        def __init__(self, config):
            super().__init__()

        def forward(self, hidden_states, top_k_index, top_k_weights):
            return hidden_states

    return use_experts_implementation(Probe).forward.__code__


def uses_interface(cls) -> bool:
    """Whether a module class is declared with transformers' `@use_experts_implementation`."""
    forward = getattr(cls, "forward", None)
    return getattr(forward, "__code__", None) is _interface_code()


def interface_classes(module) -> list[type]:
    """The classes of a Python module (a transformers modeling module) that use the interface."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, torch.nn.Module) and uses_interface(value)
    ]


def experts_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(qualified name, module) of every experts module of `model` that uses the interface."""
    return [(name, module) for name, module in model.named_modules() if uses_interface(type(module))]


# -- recognising the gating and the activation -------------------------------------------------------


def _limit(module) -> float | None:
    for name in _LIMIT_NAMES:
        value = getattr(module, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _describe(module) -> str:
    parts = []
    for name in (*_LIMIT_NAMES, *_ALPHA_NAMES):
        value = getattr(module, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{name}={value:g}")
    act = getattr(module, "act_fn", None)
    if act is not None:
        parts.append(f"act_fn={type(act).__name__}")
    return ", ".join(parts)


def _activations() -> list[str]:
    """One transformers name per activation function of the spec, in the spec's order."""
    return list({function: name for name, function in reversed(EXPERT_ACTIVATIONS.items())}.values())[::-1]


def _probe(width: int, limit: float | None, rows: int = 16) -> torch.Tensor:
    """Probe rows [rows, width] in float64 that tell the spec's functions apart: small values (where
    the activations differ most), values past gelu_10's 10 and past the clamp limit on both sides."""
    generator = torch.Generator().manual_seed(0)
    reach = max(12.0, 2.0 * limit) if limit is not None else 12.0
    small = torch.randn(rows // 2, width, generator=generator, dtype=torch.float64) * 2.0
    wide = (torch.rand(rows - rows // 2, width, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * reach
    return torch.cat([small, wide])


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.shape != want.shape:
        return False
    tolerance = 1e-6 * (1.0 + want.abs())
    return bool(((got - want).abs() <= tolerance).all())


def _to_native(h: torch.Tensor, concatenated: bool) -> torch.Tensor:
    """Canonical [gate; up] rows in the module's own layout (interleaved: g0, u0, g1, u1, ...)."""
    if concatenated:
        return h
    gate, up = h.chunk(2, dim=-1)
    return torch.stack([gate, up], dim=-1).flatten(-2)


def recognise(module) -> dict:
    """TopKExperts' attributes (activation, gating, limit) for an experts module; BucketrtError when
    none of the spec's gatings and activations computes what the module does."""
    name = type(module).__name__
    if getattr(module, "has_post_expert_norm", False):
        raise BucketrtError(
            f"{name} applies a norm after each expert (has_post_expert_norm), which TopKExperts does not compute",
            "bucketrt exports experts whose output is the down projection, weighted and summed",
        )
    if getattr(module, "_is_expert_parallel", False):
        raise BucketrtError(f"{name} is set up for expert parallelism", "export the model on one device")
    limit = _limit(module)
    candidates = []
    if getattr(module, "has_gate", True):
        width = module.down_proj.shape[2 if not getattr(module, "is_transposed", False) else 1]
        h = _probe(2 * width, limit)
        from transformers.integrations.moe import _default_apply_gate

        gate_fn = type(module)._apply_gate
        gatings = ["glu"] if gate_fn is _default_apply_gate else [g for g in EXPERT_GATINGS if g != "none"]
        with torch.no_grad():
            try:
                got = module._apply_gate(_to_native(h, getattr(module, "is_concatenated", True)))
            except Exception as e:
                raise BucketrtError(f"{name}._apply_gate cannot be probed ({e})") from None
        for gating in gatings:
            if gating in LIMITED_GATINGS and limit is None:
                continue
            candidates += [(gating, act, limit if gating in LIMITED_GATINGS else 0.0) for act in _activations()]
    else:
        act_fn = getattr(module, "act_fn", None)
        if act_fn is None:
            raise BucketrtError(f"{name} has neither a gate nor an act_fn", "TopKExperts needs one of them")
        h = _probe(8, None)
        with torch.no_grad():
            got = act_fn(h)
        candidates = [("none", act, 0.0) for act in _activations()]
    for gating, act, lim in candidates:
        with torch.no_grad():
            want = gating_function(gating, ACTIVATION_FORMULAS[act], lim)(h)
        if _close(got, want):
            return {"activation": act, "gating": gating, "limit": float(lim)}
    what = "_apply_gate" if getattr(module, "has_gate", True) else "act_fn"
    detail = _describe(module)
    raise BucketrtError(
        f"no TopKExperts gating computes {name}.{what}" + (f" ({detail})" if detail else ""),
        "TopKExperts knows the gatings "
        + ", ".join(EXPERT_GATINGS)
        + " with the activations "
        + ", ".join(_activations()),
    )


# -- the canonical layout -----------------------------------------------------------------------------


def _deinterleave(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """[g0, u0, g1, u1, ...] along `dim` -> [g0, g1, ...; u0, u1, ...]."""
    index = torch.arange(tensor.shape[dim])
    order = torch.cat([index[0::2], index[1::2]])
    return tensor.index_select(dim, order)


def canonical_weights(module) -> dict[str, torch.Tensor]:
    """The module's weights in TopKExperts' layout: {first, first_bias, down, down_bias}."""
    gated = getattr(module, "has_gate", True)
    transposed = getattr(module, "is_transposed", False)
    first = module.gate_up_proj if gated else module.up_proj
    down = module.down_proj
    with torch.no_grad():
        first = first.detach()
        down = down.detach()
        if transposed:  # [E, D, G] and [E, F, D]
            first, down = first.transpose(1, 2), down.transpose(1, 2)
        experts, width, hidden = first.shape
        if getattr(module, "has_bias", False):
            first_bias = (module.gate_up_proj_bias if gated else module.up_proj_bias).detach()
            down_bias = module.down_proj_bias.detach()
        else:
            first_bias = first.new_zeros(experts, width)
            down_bias = down.new_zeros(experts, hidden)
        if gated and not getattr(module, "is_concatenated", True):
            first, first_bias = _deinterleave(first, 1), _deinterleave(first_bias, 1)
        out = {
            "first": first.contiguous().clone(),
            "first_bias": first_bias.contiguous().clone(),
            "down": down.contiguous().clone(),
            "down_bias": down_bias.contiguous().clone(),
        }
    if out["down"].shape[:2] != (experts, hidden) or out["first_bias"].shape != (experts, width):
        raise BucketrtError(
            f"{type(module).__name__}'s weights do not have the shapes its layout flags say "
            f"(gate_up {tuple(first.shape)}, down {tuple(out['down'].shape)})"
        )
    return out


def _replace(module, name: str, tensor: torch.Tensor, parameter: bool) -> None:
    if name in module._parameters:
        del module._parameters[name]
    if name in module._buffers:
        del module._buffers[name]
    if hasattr(module, name):
        delattr(module, name)
    if parameter:
        module.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
    else:
        # Zero biases the module did not have: not weights of the model (not in its state dict).
        module.register_buffer(name, tensor, persistent=False)


def patch_module(module) -> dict:
    """Brings one experts module to TopKExperts' layout, in place; returns the op's attributes."""
    attrs = recognise(module)
    weights = canonical_weights(module)
    gated = attrs["gating"] != "none"
    had_bias = getattr(module, "has_bias", False)
    first_name = "gate_up_proj" if gated else "up_proj"
    _replace(module, first_name, weights["first"], parameter=True)
    _replace(module, first_name + "_bias", weights["first_bias"], parameter=had_bias)
    _replace(module, "down_proj", weights["down"], parameter=True)
    _replace(module, "down_proj_bias", weights["down_bias"], parameter=had_bias)
    # The module's flags now describe its (canonical) weights.
    module.is_transposed, module.is_concatenated, module.has_bias = False, True, True
    setattr(module, ATTRIBUTES, attrs)
    return attrs


def patch_experts(model: torch.nn.Module) -> list[dict]:
    """Routes every interface experts module of `model` through TopKExperts (in place) and switches
    the model to the "bucketrt" experts implementation; returns each module's record (its name,
    class, experts, top-k where known, and the op's attributes), in module order."""
    modules = experts_modules(model)
    records = []
    for qualified, module in modules:
        attrs = patch_module(module)
        records.append(
            {
                "module": qualified,
                "class": type(module).__name__,
                "num_experts": int(module.down_proj.shape[0]),
                **attrs,
            }
        )
    if not modules:
        return records
    name = register()
    model.set_experts_implementation(name)
    stale = sorted({type(m).__name__ for _, m in modules if getattr(m.config, "_experts_implementation", None) != name})
    if stale:
        raise BucketrtError(
            f"the experts implementation of {', '.join(stale)} did not switch to '{name}'",
            "its config is not the model's (set_experts_implementation did not reach it)",
        )
    check_routers(model, modules)
    return records


# -- the routers ----------------------------------------------------------------------------------


def check_routers(model: torch.nn.Module, modules) -> None:
    """Traces each kind of MoE block (an experts module's parent: router, experts, shared experts)
    alone with torch.export, over any number of tokens, the experts standing in for the op: a router
    that does not trace (Python on the routing's values, an op without a tracing rule) is refused here
    with one error naming the block, rather than deep inside the whole model's export. A block that
    does not run on plain hidden states [batch, tokens, hidden] (or [tokens, hidden]) is left to the
    export itself."""
    from torch.export import Dim

    seen = set()
    for qualified, experts in modules:
        parent_name = qualified.rpartition(".")[0]
        block = model.get_submodule(parent_name) if parent_name else None
        if block is None or type(block) in seen:
            continue
        seen.add(type(block))
        hidden = int(experts.down_proj.shape[1])
        token = _PROBING.set(True)
        try:
            for shape, dims in (
                ((2, 3, hidden), {0: Dim("batch"), 1: Dim("tokens")}),
                ((5, hidden), {0: Dim("tokens")}),
            ):
                example = torch.randn(*shape)
                try:
                    with torch.no_grad():
                        block(example)
                except Exception:
                    continue  # not this signature
                try:
                    with torch.no_grad():
                        torch.export.export(block, (example,), dynamic_shapes=(dims,), strict=False)
                except Exception as e:
                    reason = " ".join(str(e).split())[:300]
                    raise BucketrtError(
                        f"the router of {type(block).__name__} ({parent_name}) does not trace: {reason}",
                        "bucketrt exports routers that are plain tensor code (no Python on the routing's values)",
                    ) from None
                break
        finally:
            _PROBING.reset(token)
