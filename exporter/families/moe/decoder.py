"""The modules the family's components trace: a causal LM step with its key/value cache, and a
head without a cache (feature extraction, sequence classification).

The text-generation component is one graph in Optimum's (and onnxruntime-genai's) convention:
inputs input_ids, attention_mask (past + new tokens), position_ids and past_key_values.{i}.key /
.value; outputs logits and present.{i}.key / .value (the past with the new tokens appended). The
first step runs with an empty past (past length 0). The flat past tensors become a plain
`DynamicCache` (every layer a full-length cache: sliding windows are the attention mask's
business, so that no layer branches in Python on the cache length, which would narrow the traced
shapes; see onnx_export's guard).
"""

from __future__ import annotations

import torch
from torch import nn


def past_names(num_layers: int, prefix: str) -> list[str]:
    """PREFIX.{i}.key, PREFIX.{i}.value, layer by layer (past_key_values or present)."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


class CausalLMStep(nn.Module):
    """One decoding step (or the prefill: any number of new tokens) of a causal LM with its cache."""

    def __init__(self, model: nn.Module, num_layers: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=()):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        for layer in range(self.num_layers):
            cache.update(past_key_values[2 * layer], past_key_values[2 * layer + 1], layer)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        presents = []
        for layer in cache.layers[: self.num_layers]:
            presents += [layer.keys, layer.values]
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
