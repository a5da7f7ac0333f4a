"""Seq2seq export in Optimum's layout, shared by the encoder-decoder families (Switch, NLLB-MoE):
encoder_model (input_ids, attention_mask -> last_hidden_state), decoder_model (the first decoder
pass: decoder input_ids, encoder_attention_mask, encoder_hidden_states -> logits or
last_hidden_state, and every layer's present.{i}.{decoder|encoder}.{key|value}) and
decoder_with_past_model (new input_ids, encoder_attention_mask and the past key/values -> logits and
the decoder's present key/values), which bucketrt.runtime's seq2seq generation drives.

A family derives from `Seq2SeqFamily` and says what its config calls the decoder's cache layout
(`cache_layout`) and how its LM head scales the decoder's output (`logits_scale`); tasks outside
text2text-generation and feature-extraction export the encoder alone (one model.onnx).
"""

from __future__ import annotations

from torch import nn

from bucketrt.export_format.manifest import DECODER, DECODER_WITH_PAST, ENCODER
from bucketrt.export_format.tasks import (
    BATCH,
    DECODER_SEQUENCE,
    ENCODER_SEQUENCE,
    PAST_SEQUENCE,
    SEQUENCE,
    Task,
)

from .family import Component, Family

# Example sizes for tracing: distinct and above 1 so that every axis stays symbolic.
_EXAMPLE = {BATCH: 2, ENCODER_SEQUENCE: 13, DECODER_SEQUENCE: 5, PAST_SEQUENCE: 7}
# The tasks exported as encoder + decoder + decoder with past; the others are the encoder alone.
SEQ2SEQ_TASKS = ("text2text-generation", "feature-extraction")


def past_names(num_layers: int, prefix: str) -> list[str]:
    """past_key_values.{i}.{decoder|encoder}.{key|value} (or present.*), layer by layer."""
    return [
        f"{prefix}.{i}.{part}.{kind}"
        for i in range(num_layers)
        for part in ("decoder", "encoder")
        for kind in ("key", "value")
    ]


class Encoder(nn.Module):
    """input_ids, attention_mask -> last_hidden_state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.encoder

    def forward(self, input_ids, attention_mask):
        return (self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state,)


class Decoder(nn.Module):
    """One decoder step over `input_ids` given the encoder's output and, with `with_past`, the
    key/values of earlier steps (self-attention) and of the encoder (cross-attention).

    Outputs logits (ForConditionalGeneration: the LM head over the decoder's output times
    `logits_scale`, SwitchFamily.logits_scale) or last_hidden_state (the bare model), then
    present.* : every layer's decoder key/value and, without past, its encoder key/value (with past
    these do not change: Optimum's convention is to output only the decoder ones).
    """

    def __init__(self, model: nn.Module, with_past: bool, num_layers: int, logits_scale: float):
        super().__init__()
        self.decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.decoder
        self.lm_head = getattr(model, "lm_head", None)
        self.scale = logits_scale
        self.num_layers = num_layers
        self.d_model = model.config.d_model
        self.with_past = with_past

    def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states=None, past_key_values=()):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        if self.with_past:
            past = past_key_values
            cache = EncoderDecoderCache([tuple(past[4 * i : 4 * i + 4]) for i in range(self.num_layers)])
            # Cross-attention reads the cached encoder key/values (the cache marks them as such);
            # the encoder states are only needed for their shape.
            cross_key = past[2]
            encoder_hidden_states = cross_key.new_zeros(cross_key.shape[0], cross_key.shape[2], self.d_model)
        else:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        out = self.decoder(
            input_ids=input_ids,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        hidden = out.last_hidden_state
        if self.lm_head is None:
            first = hidden
        else:
            first = self.lm_head(hidden * self.scale if self.scale != 1.0 else hidden)
        presents = []
        for i in range(self.num_layers):
            self_layer = cache.self_attention_cache.layers[i]
            presents += [self_layer.keys, self_layer.values]
            if not self.with_past:
                cross_layer = cache.cross_attention_cache.layers[i]
                presents += [cross_layer.keys, cross_layer.values]
        return (first, *presents)


class Seq2SeqFamily(Family):
    """An encoder-decoder family: the three components above (or the encoder alone)."""

    default_task = "text2text-generation"

    def cache_layout(self, config) -> tuple[int, int, int]:
        """The decoder's key/value cache: (layers, heads, head size)."""
        raise NotImplementedError

    def logits_scale(self, config) -> float:
        """What the decoder's output is multiplied by before the LM head (1.0: nothing)."""
        return 1.0

    def components(self, model, task: Task) -> list[Component]:
        from torch.export import Dim

        config = model.config
        dims = {name: Dim(name) for name in _EXAMPLE}
        batch, enc_len = _EXAMPLE[BATCH], _EXAMPLE[ENCODER_SEQUENCE]
        encoder_inputs = self.example_inputs(
            config, {"input_ids": [batch, enc_len], "attention_mask": [batch, enc_len]}
        )
        encoder_dims = {name: {0: dims[BATCH], 1: dims[ENCODER_SEQUENCE]} for name in encoder_inputs}
        encoder = Encoder(model).eval()
        if task.name not in SEQ2SEQ_TASKS:
            return [Component("model", encoder, tuple(encoder_inputs), task.outputs, encoder_inputs, encoder_dims)]

        layers, heads, head_size = self.cache_layout(config)
        scale = self.logits_scale(config)
        first = task.outputs[0]
        decoder = Decoder(model, False, layers, scale).eval()
        decoder_inputs = self.example_inputs(
            config,
            {
                "input_ids": [batch, _EXAMPLE[DECODER_SEQUENCE]],
                "encoder_attention_mask": [batch, enc_len],
                "encoder_hidden_states": [batch, enc_len, config.d_model],
            },
            {"encoder_hidden_states": "float32"},
        )
        decoder_dims = {
            "input_ids": {0: dims[BATCH], 1: dims[DECODER_SEQUENCE]},
            "encoder_attention_mask": {0: dims[BATCH], 1: dims[ENCODER_SEQUENCE]},
            "encoder_hidden_states": {0: dims[BATCH], 1: dims[ENCODER_SEQUENCE]},
        }
        presents = past_names(layers, "present")
        pasts = past_names(layers, "past_key_values")
        past_shapes = {
            n: [batch, heads, _EXAMPLE[PAST_SEQUENCE] if ".decoder." in n else enc_len, head_size] for n in pasts
        }
        feeds = self.example_inputs(
            config,
            {"input_ids": [batch, 2], "encoder_attention_mask": [batch, enc_len], **past_shapes},
            dict.fromkeys(pasts, "float32"),
        )
        with_past = Decoder(model, True, layers, scale).eval()

        def pack_past(feeds: dict) -> dict:
            out = {k: v for k, v in feeds.items() if not k.startswith("past_key_values.")}
            out["past_key_values"] = tuple(feeds[n] for n in pasts)
            return out

        with_past_inputs = pack_past(feeds)
        with_past_dims = {
            "input_ids": {0: dims[BATCH], 1: dims[DECODER_SEQUENCE]},
            "encoder_attention_mask": {0: dims[BATCH], 1: dims[ENCODER_SEQUENCE]},
            "past_key_values": tuple(
                {0: dims[BATCH], 2: dims[PAST_SEQUENCE] if ".decoder." in n else dims[ENCODER_SEQUENCE]} for n in pasts
            ),
        }

        return [
            Component(ENCODER, encoder, tuple(encoder_inputs), ("last_hidden_state",), encoder_inputs, encoder_dims),
            Component(DECODER, decoder, tuple(decoder_inputs), (first, *presents), decoder_inputs, decoder_dims),
            Component(
                DECODER_WITH_PAST,
                with_past,
                ("input_ids", "encoder_attention_mask", *pasts),
                (first, *[n for n in presents if ".decoder." in n]),
                with_past_inputs,
                with_past_dims,
                pack_inputs=pack_past,
            ),
        ]

    def input_sizes(self, component: str, sizes: dict[str, int]) -> dict[str, int]:
        """Encoder: the sequence. Decoder: a quarter of it in ids; with past, one new token after
        3/4 of it."""
        length = sizes[SEQUENCE]
        return {
            BATCH: sizes[BATCH],
            ENCODER_SEQUENCE: length,
            DECODER_SEQUENCE: 1 if component == DECODER_WITH_PAST else max(1, length // 4),
            PAST_SEQUENCE: max(1, 3 * length // 4),
        }
