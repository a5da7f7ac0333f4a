"""SwitchTransformers for export: the sparse MLP through bucketrt's MoE ops, and the model split into
the ONNX components Optimum users expect (encoder, decoder, decoder with past key/values:
exporter/seq2seq.py).

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
from bucketrt.export_format.tasks import Task, task_table
from bucketrt.ops.catalogue import EXPERT_ACTIVATIONS, EXPERT_FFN, TOP1_DISPATCH
from bucketrt.ops.dispatch import call

from ..family import Patch, register
from ..presets import Preset
from ..seq2seq import Seq2SeqFamily

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


# -- the family ---------------------------------------------------------------------------------
@register
class SwitchFamily(Seq2SeqFamily):
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

    def cache_layout(self, config) -> tuple[int, int, int]:
        """The decoder's key/value cache: (layers, heads, head size)."""
        return config.num_decoder_layers, config.num_heads, config.d_kv

    def logits_scale(self, config) -> float:
        """What the decoder's output is multiplied by before the LM head: T5's d_model**-0.5 where the
        head is tied to the embeddings, as transformers' SwitchTransformers does."""
        return config.d_model**-0.5 if config.tie_word_embeddings else 1.0
