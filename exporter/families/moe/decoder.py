"""The modules the family's components trace: a causal LM step with its key/value cache, and a
head without a cache (feature extraction, sequence classification).

The text-generation component is one graph in Optimum's (and onnxruntime-genai's) convention:
inputs input_ids, attention_mask (past + new tokens), position_ids and past_key_values.{i}.key /
.value; outputs logits and present.{i}.key / .value (the past with the new tokens appended). The
first step runs with an empty past (past length 0). The flat past tensors become a `DynamicCache`
whose full-attention layers keep every token.

A sliding-window layer (the config's `layer_types`, as GPT-OSS's every other layer) keeps only the
last `sliding_window - 1` tokens in its present, as transformers' own `DynamicCache` keeps them for
`generate`: no query of a later step can attend an older one, and the step would otherwise copy
the whole history of the layer into its present, every step. Its past may be any suffix of the
history (those last tokens, or more of it): the attention mask covers the whole history, and the
layer places its past at the mask's end. Its length is a dim of its own
(`sliding_past_sequence_length`). No layer branches in Python on a cache length, which would narrow
the traced shapes (see onnx_export's guard).
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def past_names(num_layers: int, prefix: str) -> list[str]:
    """PREFIX.{i}.key, PREFIX.{i}.value, layer by layer (past_key_values or present)."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def sliding_windows(config, num_layers: int) -> list[int | None]:
    """Each cached layer's sliding window (None: full attention), from the config's `layer_types`
    ("sliding_attention") and `sliding_window`. A config without `layer_types` has none: its layers
    keep every token (a window that the mask applies to every layer, as Mistral's, stays the mask's
    business)."""
    types = list(getattr(config, "layer_types", None) or [])
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        return [None] * num_layers
    return [window if i < len(types) and types[i] == "sliding_attention" else None for i in range(num_layers)]


@functools.cache
def _window_layer_class():
    """transformers' full cache layer, as a sliding-window one for one traced step (defined on first
    use: transformers is imported only when a model is exported)."""
    from transformers.cache_utils import DynamicLayer

    class WindowLayer(DynamicLayer):
        """`keys`/`values`: the last of the `seen` tokens before the step (the attention mask's length
        less the new tokens). The mask's sizes and the queries' offset are transformers' for a sliding
        layer (keys from position seen - kept on); the step appends the new tokens, and the caller
        keeps the last window - 1."""

        is_sliding = True

        def __init__(self, keys, values, seen):
            super().__init__()
            self.lazy_initialization(keys, values)
            self.keys, self.values, self.seen = keys, values, seen

        def get_seq_length(self):
            return self.seen

        def get_mask_sizes(self, query_length):
            kept = self.keys.shape[-2]
            return kept + query_length, self.seen - kept

    return WindowLayer


class CausalLMStep(nn.Module):
    """One decoding step (or the prefill: any number of new tokens) of a causal LM with its cache."""

    def __init__(self, model: nn.Module, windows: list[int | None]):
        """`windows`: each cached layer's sliding window, None for full attention (`sliding_windows`)."""
        super().__init__()
        self.model = model
        self.windows = windows

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=()):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        seen = attention_mask.shape[-1] - input_ids.shape[-1]
        for layer, window in enumerate(self.windows):
            keys, values = past_key_values[2 * layer], past_key_values[2 * layer + 1]
            if window is None:
                cache.update(keys, values, layer)
            else:
                cache.layers.append(_window_layer_class()(keys, values, seen))
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        presents = []
        for layer, window in zip(cache.layers, self.windows):
            if window is None:
                presents += [layer.keys, layer.values]
            else:  # a later query attends at most the last window - 1 of them
                keep = slice(1 - window, None) if window > 1 else slice(0, 0)
                presents += [layer.keys[:, :, keep], layer.values[:, :, keep]]
        return (out.logits, *presents)


class HeadOutputs(nn.Module):
    """input_ids, attention_mask -> the task's outputs, without a cache (positions 0, 1, ... as the
    model numbers them when given none)."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids, attention_mask):
        result = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True)
        return tuple(result[name] for name in self.outputs)


def cache_shapes(model: nn.Module) -> list[tuple[list[int], list[int]]]:
    """Each cached layer's (key shape, value shape) for one token of one row: [1, heads, 1, dim]
    (keys and values may differ: DeepSeek's latent attention caches wider keys)."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        model(
            input_ids=torch.zeros(1, 1, dtype=torch.long),
            attention_mask=torch.ones(1, 1, dtype=torch.long),
            position_ids=torch.zeros(1, 1, dtype=torch.long),
            cache=cache,
            use_cache=True,
        )
    return [(list(layer.keys.shape), list(layer.values.shape)) for layer in cache.layers]
