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

With the family's `shared_kv_buffer` option the cache is onnxruntime-genai's shared buffer
instead: every past_key_values.{i}.* is a buffer of the whole generation's length
(`buffer_sequence_length`) whose first tokens hold the cache, and present.{i}.* is that buffer with
the step's keys and values written at the mask's offset (attention_mask's length less the new
tokens), every other position as it was: one ScatterND whose data is the past input itself. A loop
that binds each present to its past's memory (ONNX Runtime's IO binding: runtime/decoding.py) makes
that write in place, so a step copies no cache at all, where the default graph concatenates past
and new keys into a fresh present in every layer. The attention reads the whole buffer under a
mask padded with zeros to its length, and MaskedAttention's kernels skip the keys no query attends
(the tail not yet written; a sliding-window layer's keys out of its window), so a step costs what
the history costs, not the buffer.
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


def _write_rows(buffer: torch.Tensor, rows: torch.Tensor, start) -> torch.Tensor:
    """`buffer` [B, N, L, D] with `rows` [B, N, S, D] at positions start .. start + S - 1 of every
    batch row and head (one ScatterND reading `buffer` as its data, out of place when traced)."""
    batch, heads, length, _ = rows.shape
    where = (
        torch.arange(batch, device=rows.device)[:, None, None],
        torch.arange(heads, device=rows.device)[None, :, None],
        (torch.arange(length, device=rows.device) + start)[None, None, :],
    )
    return buffer.index_put(where, rows)


@functools.cache
def _step_layers():
    """transformers' cache layers for one traced step, (WindowLayer, BufferLayer) (defined on first
    use: transformers is imported only when a model is exported)."""
    from transformers.cache_utils import DynamicLayer

    class StepLayer(DynamicLayer):
        """A layer's cache as the step's inputs give it, and `seen`: the tokens before the step (the
        attention mask's length less the new tokens)."""

        def __init__(self, keys, values, seen, sliding: bool):
            super().__init__()
            self.lazy_initialization(keys, values)
            self.keys, self.values, self.seen = keys, values, seen
            self.is_sliding = sliding

        def get_seq_length(self):
            return self.seen

    class WindowLayer(StepLayer):
        """A sliding-window layer whose `keys`/`values` are the last of the `seen` tokens. The mask's
        sizes and the queries' offset are transformers' for a sliding layer (keys from position seen
        - kept on); the step appends the new tokens, and the caller keeps the last window - 1."""

        def __init__(self, keys, values, seen):
            super().__init__(keys, values, seen, sliding=True)

        def get_mask_sizes(self, query_length):
            kept = self.keys.shape[-2]
            return kept + query_length, self.seen - kept

    class BufferLayer(StepLayer):
        """`keys`/`values`: buffers [B, N, L, D] whose first `seen` positions hold the history. The
        mask spans the whole buffer from position 0 (its keys past the history are masked as
        padding); a sliding layer's mask adds its window."""

        def update(self, key_states, value_states, *args, **kwargs):
            self.keys = _write_rows(self.keys, key_states, self.seen)
            self.values = _write_rows(self.values, value_states, self.seen)
            return self.keys, self.values

        def get_mask_sizes(self, query_length):
            return self.keys.shape[-2], 0

    return WindowLayer, BufferLayer


def _pad_mask(attention_mask: torch.Tensor, length) -> torch.Tensor:
    """attention_mask [B, T] padded with zeros to [B, length] (length >= T), without a Python branch
    on the two lengths (transformers' own padding tests their difference, which would tie the traced
    dims): each column reads the mask's column min(k, T - 1), kept where k < T."""
    total = attention_mask.shape[-1]
    columns = torch.arange(length, device=attention_mask.device)
    gathered = attention_mask[:, columns.clamp(max=total - 1)]
    return gathered * (columns < total).to(attention_mask.dtype)


class CausalLMStep(nn.Module):
    """One decoding step (or the prefill: any number of new tokens) of a causal LM with its cache."""

    def __init__(self, model: nn.Module, windows: list[int | None], shared_buffer: bool = False):
        """`windows`: each cached layer's sliding window, None for full attention (`sliding_windows`);
        `shared_buffer`: the cache is a buffer of the generation's length, written in place (module
        doc)."""
        super().__init__()
        self.model = model
        self.windows = windows
        self.shared_buffer = shared_buffer

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=()):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        seen = attention_mask.shape[-1] - input_ids.shape[-1]
        window_layer, buffer_layer = _step_layers()
        for layer, window in enumerate(self.windows):
            keys, values = past_key_values[2 * layer], past_key_values[2 * layer + 1]
            if self.shared_buffer:
                cache.layers.append(buffer_layer(keys, values, seen, window is not None))
            elif window is None:
                cache.update(keys, values, layer)
            else:
                cache.layers.append(window_layer(keys, values, seen))
        if self.shared_buffer and self.windows:
            attention_mask = _pad_mask(attention_mask, past_key_values[0].shape[-2])
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
            if window is None or self.shared_buffer:
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
