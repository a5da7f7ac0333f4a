"""transformers' attention interface through bucketrt's MaskedAttention: one hook for every decoder
whose attention modules call `ALL_ATTENTION_FUNCTIONS` (every model of transformers 5).

Such a module is called as `attention(module, query [B, H, S, D], key [B, N, T, D], value, mask, *,
scaling, dropout, **kwargs)` and returns `[B, S, H, Dv]`; the model makes its mask once per forward
through the mask interface registered under the same name. `patch_attention(model)` registers
"bucketrt" in both (once) and switches the model to it:
- the mask: transformers' boolean (sdpa) mask, always made, never skipped for an implicit causal
  one (`allow_is_causal_skip`), so that the graph computes one [B, 1, S, T] mask per kind (full,
  sliding) for all layers;
- the attention: a single MaskedAttention call, its PyTorch reference when eager, one
  `bucketrt::MaskedAttention` node per layer when exporting. Its kernels skip the keys the mask
  hides (half of a causal prefill's scores) and read a key/value head once for its query heads,
  where the eager formulation computes every score, writes the [B, H, S, T] weights three times and
  repeats the keys per head. GPT-OSS's sink logits (`s_aux`) are the op's `sinks`.
A call the op cannot express (a logit soft-cap, dropout while training, a mask that is not
boolean) runs the model's own eager attention with the boolean mask made additive, as `eager` would;
so does a standard-op export (`--ops standard`): without the kernel there is nothing to skip, and
the model's own formulation is cheaper than MaskedAttention's lowering (lowering_costs.py says why).
"""

from __future__ import annotations

import functools
import sys

import torch

from bucketrt.ops.catalogue import MASKED_ATTENTION
from bucketrt.ops.dispatch import call, lowering_ops

IMPLEMENTATION = "bucketrt"


def _standard_export() -> bool:
    """A standard-op export is being traced: the model's own eager attention runs (module doc)."""
    return torch.onnx.is_in_onnx_export() and lowering_ops()


def _mask(*args, **kwargs):
    """transformers' sdpa mask ([B, 1, S, T], True: attend), always materialised; in a standard-op
    export its eager mask (0 and the dtype's lowest), made once for every layer, as `eager` would."""
    from transformers.masking_utils import eager_mask, sdpa_mask

    if _standard_export():
        return eager_mask(*args, **kwargs)
    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def _model_eager(module, query, key, value, mask, **kwargs):
    """The module's own eager attention (its modeling file's `eager_attention_forward`), with the
    boolean mask made additive as transformers' eager mask is."""
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(f"{type(module).__name__}: no eager_attention_forward in {type(module).__module__}")
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.where(mask, 0.0, torch.finfo(query.dtype).min).to(query.dtype)
    return eager(module, query, key, value, mask, **kwargs)


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The "bucketrt" attention implementation: MaskedAttention over the module's query, key/value
    heads and boolean mask."""
    softcap = kwargs.get("softcap")
    mask_ok = attention_mask is None or (
        attention_mask.dtype == torch.bool and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
    )
    if softcap is not None or (dropout and module.training) or not mask_ok or _standard_export():
        return _model_eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    batch, heads, length, dim = query.shape
    keys = key.shape[-2]
    if attention_mask is None:  # eager's meaning: every key
        mask = torch.ones(batch, length, keys, dtype=torch.int32, device=query.device)
    else:
        mask = attention_mask[:, 0, :, :keys].to(torch.int32).expand(batch, length, keys)
    sinks = kwargs.get("s_aux")
    if sinks is None:
        sinks = torch.full((heads,), float("-inf"), dtype=query.dtype, device=query.device)
    scale = dim**-0.5 if scaling is None else float(scaling)
    out = call(MASKED_ATTENTION, query, key, value, mask, sinks.to(query.dtype), scale=scale)
    return out, None


@functools.cache
def register() -> str:
    """Registers "bucketrt" in transformers' attention and mask interfaces (once); returns the name."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(IMPLEMENTATION, attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, _mask)
    return IMPLEMENTATION


def patch_attention(model) -> None:
    """Switches every attention module of `model` (one config) to MaskedAttention."""
    model.config._attn_implementation = register()
