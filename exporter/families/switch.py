"""SwitchTransformers for export: the sparse MLP through bucketrt's MoE ops, and the model split into
the ONNX components Optimum users expect (encoder, decoder, decoder with past key/values).

`patch_model` rewrites every `SwitchTransformersSparseMLP.forward` (in place, on the exporter's own
copy of the model) so that it reproduces transformers 5.x's eval-mode maths with two ops:

* the router stays PyTorch (it exports as MatMul + Softmax): hidden states cast to `router_dtype`,
  the classifier in that dtype, softmax in it, the probabilities cast back; no jitter (eval only);
* `Top1Dispatch` takes the probabilities: argmax (first maximum), per-sequence priority by
  cumulative count, tokens beyond `expert_capacity` dropped, the unrenormalised top probability as
  gate, and the kept tokens listed expert by expert;
* `ExpertFFN` runs each expert's wi -> act -> wo on its listed tokens only, scaled by the gate;
  dropped tokens get zero, so the layer's residual passes them through unchanged (as in HF).

The experts' weights are stacked once into [E, d_ff, d_model] / [E, d_model, d_ff] buffers, which
the exported graph holds as two initializers per sparse layer. Nothing in the graph depends on which
experts an example input hits.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from bucketrt.errors import BucketrtError
from bucketrt.export_format.manifest import DECODER, DECODER_WITH_PAST, ENCODER
from bucketrt.export_format.tasks import (
    BATCH,
    DECODER_SEQUENCE,
    ENCODER_SEQUENCE,
    PAST_SEQUENCE,
    SEQUENCE,
    Task,
    task_table,
)
from bucketrt.ops.catalogue import EXPERT_ACTIVATIONS, EXPERT_FFN, TOP1_DISPATCH
from bucketrt.ops.dispatch import call

from ..family import Component, Family, Patch, register
from ..presets import Preset

SUPPORTED_MODEL_TYPES = ("switch_transformers",)
# transformers' ACT2FN entries that carry learned parameters of their own (one set per expert).
_PARAMETRIC_ACTIVATIONS = ("prelu", "xielu")


def check_config(config) -> None:
    """Raises BucketrtError for a config bucketrt cannot export faithfully."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise BucketrtError(f"model type '{config.model_type}' is not a SwitchTransformers model")
    act = config.dense_act_fn
    if act == "gated-gelu" or act.startswith("gated-"):
        raise BucketrtError(
            f"dense_act_fn='{act}' is not supported",
            "transformers 5.x itself cannot build this model (ACT2FN has no such key: KeyError); T5's "
            "'gated-gelu' splitting is not implemented by SwitchTransformers. Use e.g. 'relu' or 'gelu_new'",
        )
    if act in _PARAMETRIC_ACTIVATIONS:
        raise BucketrtError(
            f"dense_act_fn='{act}' is not supported",
            "its learned per-expert parameters have no place in ExpertFFN; supported: " + ", ".join(EXPERT_ACTIVATIONS),
        )
    if act not in EXPERT_ACTIVATIONS:
        raise BucketrtError(f"dense_act_fn='{act}' is not supported", "supported: " + ", ".join(EXPERT_ACTIVATIONS))
    if config.router_dtype != "float32":
        raise BucketrtError(
            f"router_dtype='{config.router_dtype}' is not supported",
            "ONNX Runtime's CPU provider has no half-precision MatMul/Softmax for the router; use float32 "
            "(the default, and that of every released Switch checkpoint)",
        )


def _sparse_mlp_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    router = self.router
    x = hidden_states.to(router.dtype)
    # The classifier in router_dtype even in an fp16 export (whose weights are all float16): a
    # float32 export casts nothing.
    classifier = router.classifier
    bias = classifier.bias.to(router.dtype) if classifier.bias is not None else None
    logits = nn.functional.linear(x, classifier.weight.to(router.dtype), bias)
    probs = torch.softmax(logits, dim=-1, dtype=router.dtype).to(hidden_states.dtype)
    _, gate, _, counts, order = call(TOP1_DISPATCH, probs, expert_capacity=int(router.expert_capacity))
    return call(
        EXPERT_FFN,
        hidden_states,
        order,
        counts,
        gate,
        self.bucketrt_wi,
        self.bucketrt_wo,
        activation=self.bucketrt_activation,
    )


def patch_model(model: nn.Module) -> int:
    """Routes every sparse MLP of `model` through bucketrt's ops; returns how many were patched."""
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersSparseMLP

    check_config(model.config)
    patched = 0
    for module in model.modules():
        if not isinstance(module, SwitchTransformersSparseMLP):
            continue
        experts = [module.experts[f"expert_{e}"] for e in range(module.router.num_experts)]
        with torch.no_grad():
            wi = torch.stack([expert.wi.weight for expert in experts]).contiguous()
            wo = torch.stack([expert.wo.weight for expert in experts]).contiguous()
        # The per-expert Linear layers stay (same state dict); the stacked copies are what the graph uses.
        module.register_buffer("bucketrt_wi", wi, persistent=False)
        module.register_buffer("bucketrt_wo", wo, persistent=False)
        module.bucketrt_activation = model.config.dense_act_fn
        module.router.classifier.to(module.router.dtype)
        module.forward = types.MethodType(_sparse_mlp_forward, module)
        patched += 1
    return patched


# -- components ---------------------------------------------------------------------------------


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

    Outputs logits (ForConditionalGeneration, scaled by d_model**-0.5 before the tied LM head as HF
    does) or last_hidden_state (SwitchTransformersModel), then present.* : every layer's decoder
    key/value and, without past, its encoder key/value (with past these do not change: Optimum's
    convention is to output only the decoder ones).
    """

    def __init__(self, model: nn.Module, with_past: bool):
        super().__init__()
        self.decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.decoder
        self.lm_head = getattr(model, "lm_head", None)
        self.scale = model.config.d_model**-0.5 if model.config.tie_word_embeddings else 1.0
        self.num_layers = model.config.num_decoder_layers
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
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        hidden = out.last_hidden_state
        first = self.lm_head(hidden * self.scale) if self.lm_head is not None else hidden
        presents = []
        for i in range(self.num_layers):
            self_layer = cache.self_attention_cache.layers[i]
            presents += [self_layer.keys, self_layer.values]
            if not self.with_past:
                cross_layer = cache.cross_attention_cache.layers[i]
                presents += [cross_layer.keys, cross_layer.values]
        return (first, *presents)


# -- the family ---------------------------------------------------------------------------------
# Example sizes for tracing: distinct and above 1 so that every axis stays symbolic.
_EXAMPLE = {BATCH: 2, ENCODER_SEQUENCE: 13, DECODER_SEQUENCE: 5, PAST_SEQUENCE: 7}
_SEQ2SEQ_TASKS = ("text2text-generation", "feature-extraction")


@register
class SwitchFamily(Family):
    name = "switch"
    model_types = SUPPORTED_MODEL_TYPES
    order = 30
    config_class = "SwitchTransformersConfig"
    # Optimum's names: a seq2seq export is encoder + decoder + decoder with past;
    # feature-extraction-encoder is the encoder stack alone (one model.onnx).
    tasks = task_table("SwitchTransformers", "text2text-generation", "feature-extraction", "feature-extraction-encoder")
    default_task = "text2text-generation"
    # Not batched across requests: its rows are independent in exact arithmetic (expert capacity
    # counts one sequence's tokens), but its expert GEMMs round differently with the batch (4.8e-7
    # measured on switch-tiny), so serving runs each request alone.
    batch_rows_independent = False
    presets = {
        "switch-base-8": Preset(
            "the google/switch-base-8 architecture: d_model 768, d_ff 3072, 12+12 layers (every other "
            "one sparse), 12 heads of 64, 8 experts of capacity 64, relu, router in float32; random weights",
            {
                "vocab_size": 32128,
                "d_model": 768,
                "d_kv": 64,
                "d_ff": 3072,
                "num_layers": 12,
                "num_decoder_layers": 12,
                "num_sparse_encoder_layers": 6,
                "num_sparse_decoder_layers": 6,
                "num_heads": 12,
                "num_experts": 8,
                "expert_capacity": 64,
                "dense_act_fn": "relu",
                "router_dtype": "float32",
                "decoder_start_token_id": 0,
                "architectures": ["SwitchTransformersForConditionalGeneration"],
            },
        ),
        "switch-tiny": Preset(
            "2+2 layers (the second of each sparse), d_model 32, d_ff 64, 4 heads of 8, 4 experts of "
            "capacity 8, vocab 256; random weights",
            {
                "vocab_size": 256,
                "d_model": 32,
                "d_kv": 8,
                "d_ff": 64,
                "num_layers": 2,
                "num_decoder_layers": 2,
                "num_sparse_encoder_layers": 1,
                "num_sparse_decoder_layers": 1,
                "num_heads": 4,
                "num_experts": 4,
                "expert_capacity": 8,
                "decoder_start_token_id": 0,
                "architectures": ["SwitchTransformersForConditionalGeneration"],
            },
        ),
    }

    def check_config(self, config) -> None:
        check_config(config)

    def patch(self, model, task: Task, seed: int, options: dict) -> Patch:
        layers = patch_model(model)
        config = model.config
        return Patch(
            "top1-moe",
            self.components(model, task),
            {
                "moe": {
                    "sparse_layers": layers,
                    "num_experts": config.num_experts,
                    "expert_capacity": config.expert_capacity,
                    "activation": config.dense_act_fn,
                    "router_dtype": config.router_dtype,
                }
            },
        )

    def max_length(self, config: dict) -> int | None:
        return None  # relative position buckets: any length

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
        if task.name not in _SEQ2SEQ_TASKS:
            return [Component("model", encoder, tuple(encoder_inputs), task.outputs, encoder_inputs, encoder_dims)]

        layers = config.num_decoder_layers
        first = task.outputs[0]
        decoder = Decoder(model, with_past=False).eval()
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
            n: [batch, config.num_heads, _EXAMPLE[PAST_SEQUENCE] if ".decoder." in n else enc_len, config.d_kv]
            for n in pasts
        }
        feeds = self.example_inputs(
            config,
            {"input_ids": [batch, 2], "encoder_attention_mask": [batch, enc_len], **past_shapes},
            dict.fromkeys(pasts, "float32"),
        )
        with_past = Decoder(model, with_past=True).eval()

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
