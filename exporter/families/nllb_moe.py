"""NLLB-MoE (transformers' `NllbMoeForConditionalGeneration`) for export: its top-2 router in
standard ONNX ops, its experts as bucketrt's TopKExperts, and the model split into the seq2seq
components Switch exports (encoder, decoder, decoder with past key/values; exporter/seq2seq.py).

`patch_model` rewrites every `NllbMoeSparseMLP.forward` (in place, on the exporter's own copy) to
reproduce transformers 5.x's eval-mode routing (`NllbMoeTop2Router.route_tokens`) as tensor code:

* the classifier in `router_dtype`, softmax in it, probabilities cast back; the first expert is the
  argmax of the probabilities, the second the argmax of the logits with the first masked out
  (second_expert_policy "all": "random" and "sampling" draw random numbers in eval too, refused);
* tokens the layer's 4-D attention mask marks as padding (its last query row, flattened, its last
  T entries, as transformers reads it) get no expert and take no capacity, unless
  router_ignore_padding_tokens;
* each expert's places are counted over the whole call (every row of the batch together), in token
  order or, with batch_prioritized_routing, by decreasing top probability (a stable sort); second
  picks count after all first picks; a pick at a place >= the capacity is dropped. The capacity in
  eval is ceil(moe_eval_capacity_token_fraction * T) (T: the call's tokens, padding included), so
  with the default fraction 1.0 nothing is ever dropped; with a fraction <= 0 it is expert_capacity;
* the two weights are the picks' probabilities divided by their sum (clamped at eps), before or after
  the drops (normalize_router_prob_before_dropping); in eval each expert output is scaled by
  1 - moe_token_dropout, folded into the weights here.

Which expert runs each pick is probed from transformers' own `NllbMoeExperts` (`expert_dispatch`):
transformers 5.x passes the router's one-hot [T, E] mask where its experts module expects expert
indices, so every first pick runs expert 1 and every second pick expert 0 ("one_hot_slots"); the
NLLB-MoE design (and transformers 4.x) runs the picked experts ("picked"). The export computes what
the installed transformers computes (the reference `bucketrt check` and generation compare with),
and the manifest records which. A dropped pick is TopKExperts' "no expert" index E.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from bucketrt.errors import BucketrtError
from bucketrt.export_format.tasks import task_table
from bucketrt.ops.catalogue import EXPERT_ACTIVATIONS, TOPK_EXPERTS
from bucketrt.ops.dispatch import call

from ..family import Patch, register
from ..presets import Preset
from ..seq2seq import Seq2SeqFamily

SUPPORTED_MODEL_TYPES = ("nllb-moe",)
# Each pick's expert, by how transformers' NllbMoeExperts dispatches (see the module docstring).
PICKED, ONE_HOT_SLOTS = "picked", "one_hot_slots"
# The experts that transformers 5.x's NllbMoeExperts runs for the first and the second pick.
_ONE_HOT_SLOT_EXPERTS = (1, 0)


def check_config(config) -> None:
    """Raises BucketrtError for a config bucketrt cannot export faithfully."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise BucketrtError(f"model type '{config.model_type}' is not an NLLB-MoE model")
    if config.second_expert_policy != "all":
        raise BucketrtError(
            f"second_expert_policy='{config.second_expert_policy}' is not supported",
            "it draws random numbers in eval mode too (transformers' NllbMoeTop2Router), so no export can "
            "reproduce it; use 'all' (the default, and that of facebook/nllb-moe-54b)",
        )
    act = config.activation_function
    if act not in EXPERT_ACTIVATIONS:
        raise BucketrtError(
            f"activation_function='{act}' is not supported", "supported: " + ", ".join(EXPERT_ACTIVATIONS)
        )
    if config.router_dtype != "float32":
        raise BucketrtError(
            f"router_dtype='{config.router_dtype}' is not supported",
            "ONNX Runtime's CPU provider has no half-precision MatMul/Softmax for the router; use float32 "
            "(the default)",
        )
    if config.num_experts < 2:
        raise BucketrtError(f"num_experts={config.num_experts} is not supported", "a top-2 router needs 2 experts")
    if config.pad_token_id is None:
        raise BucketrtError(
            "NLLB-MoE needs pad_token_id", "its positions count from it (NllbMoeSinusoidalPositionalEmbedding)"
        )


# -- the router, as tensor code ------------------------------------------------------------------


def _normalized(probs: torch.Tensor, first: torch.Tensor, second: torch.Tensor):
    """transformers' normalize_router_probabilities: each pick's probability over their sum."""
    p1 = (probs * first).sum(dim=1)
    p2 = (probs * second).sum(dim=1)
    denominator = torch.clamp(p1 + p2, min=torch.finfo(probs.dtype).eps)
    return p1 / denominator, p2 / denominator


def _places(first: torch.Tensor, second: torch.Tensor, importance: torch.Tensor | None):
    """Each pick's place in its expert's queue (meaningful where the one-hot mask is 1): tokens in
    order, or by decreasing top probability, equal ones in token order; second picks after every
    first pick. The prioritized order compares every pair of tokens ([T, T]: no sort, which the ONNX
    exporter does not translate stably) and counts with a float32 MatMul (exact below 2^24 tokens)."""
    if importance is None:
        places1 = torch.cumsum(first, dim=0) - 1
        places2 = torch.cumsum(second, dim=0) - 1
    else:
        index = torch.arange(importance.shape[0], device=importance.device)
        ahead = (importance[None, :] < importance[:, None]) | (
            (importance[None, :] == importance[:, None]) & (index[None, :] < index[:, None])
        )  # [t, s]: token s queues before token t
        ahead = ahead.to(torch.float32)
        places1 = (ahead @ first.to(torch.float32)).to(first.dtype)
        places2 = (ahead @ second.to(torch.float32)).to(second.dtype)
    return places1, places2 + first.sum(dim=0, keepdim=True)


def route(router, hidden: torch.Tensor, padding_mask: torch.Tensor | None):
    """NllbMoeTop2Router in eval: (first, second) experts [T], whether each is kept [T] and their
    weights [T] (before moe_token_dropout), for hidden [T, D]."""
    experts = router.num_experts
    tokens = hidden.shape[0]
    classifier = router.classifier
    bias = classifier.bias.to(router.dtype) if classifier.bias is not None else None
    logits = nn.functional.linear(hidden.to(router.dtype), classifier.weight.to(router.dtype), bias)
    probs = nn.functional.softmax(logits, dim=-1, dtype=router.dtype).to(hidden.dtype)
    ids = torch.arange(experts, device=hidden.device)
    top1 = torch.argmax(probs, dim=-1)
    first = (ids == top1[:, None]).to(torch.int64)
    top2 = torch.argmax(logits.masked_fill(first.bool(), float("-inf")), dim=-1)
    second = (ids == top2[:, None]).to(torch.int64)
    if router.normalize_router_prob_before_dropping:
        p1, p2 = _normalized(probs, first, second)
    if padding_mask is not None and not router.router_ignore_padding_tokens:
        if padding_mask.dim() == 4:  # as transformers reads it: the last query row, its last T entries
            padding_mask = padding_mask[:, :, -1, :].reshape(-1)[-tokens:]
        real = (~padding_mask.bool()).unsqueeze(-1).to(first.dtype)
        first, second = first * real, second * real
    fraction = router.moe_eval_capacity_token_fraction
    # A capacity of ceil(fraction * T) >= T drops nothing: an expert's places count its first picks,
    # then its second picks, of distinct tokens, so every place is below T. No graph for it then.
    if fraction < 1:
        importance = -probs.max(dim=1).values if router.batch_prioritized_routing else None
        places1, places2 = _places(first, second, importance)
        if fraction > 0:  # ceil(fraction * T) in float64, as Python computes it
            count = torch.ones_like(top1).sum().to(torch.float64)
            capacity = torch.ceil(count * fraction).to(torch.int64)
        else:
            capacity = torch.tensor(int(router.expert_capacity), dtype=torch.int64)
        first = first * (places1 < capacity)
        second = second * (places2 < capacity)
    if not router.normalize_router_prob_before_dropping:
        p1, p2 = _normalized(probs, first, second)
    kept1, kept2 = first.sum(dim=1) > 0, second.sum(dim=1) > 0
    return (top1, top2), (kept1, kept2), (p1, p2)


def _sparse_mlp_forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None):
    batch, length, width = hidden_states.shape
    hidden = hidden_states.reshape(-1, width)
    picks, kept, weights = route(self.router, hidden, padding_mask)
    if self.bucketrt_dispatch == ONE_HOT_SLOTS:
        picks = tuple(torch.full_like(pick, expert) for pick, expert in zip(picks, _ONE_HOT_SLOT_EXPERTS))
    none = self.router.num_experts  # TopKExperts' "no expert"
    index = torch.stack([torch.where(k, p, none) for p, k in zip(picks, kept)], dim=-1)
    weight = torch.stack(weights, dim=-1) * self.bucketrt_output_scale
    out = call(
        TOPK_EXPERTS,
        hidden,
        index.to(torch.int32),
        weight.to(hidden.dtype),
        self.bucketrt_fc1,
        self.bucketrt_fc1_bias,
        self.bucketrt_fc2,
        self.bucketrt_fc2_bias,
        activation=self.bucketrt_activation,
        gating="none",
        limit=0.0,
    )
    return out.reshape(batch, length, width)


def expert_dispatch(module) -> str:
    """Which expert transformers' NllbMoeExperts runs for each pick (PICKED or ONE_HOT_SLOTS), probed
    on its own forward: one token whose first pick is expert 0 (weight 0.75), second expert 1 (0.25)."""
    experts = module.experts
    width = module.router.classifier.in_features
    count = module.router.num_experts
    hidden = torch.randn(1, width, generator=torch.Generator().manual_seed(0))
    first = torch.zeros(1, count, dtype=torch.int64)
    first[0, 0] = 1
    probs = torch.zeros(1, count)
    probs[0, 0], probs[0, 1] = 0.75, 0.25
    scale = 1.0 - experts.moe_token_dropout if experts.moe_token_dropout > 0 else 1.0
    try:
        with torch.no_grad():
            got = experts(hidden, first, probs)
            y0, y1 = experts["expert_0"](hidden), experts["expert_1"](hidden)
    except Exception as e:
        raise BucketrtError(
            f"{type(experts).__name__} cannot be probed for its expert dispatch ({' '.join(str(e).split())[:200]})",
            "bucketrt reproduces transformers 5.x's NllbMoeExperts(hidden, router_mask, router_probs)",
        ) from None
    if torch.allclose(y0, y1, rtol=1e-5, atol=1e-6):
        raise BucketrtError(
            "experts 0 and 1 of the first sparse layer compute the same output, so the probe cannot tell which "
            "experts transformers' NllbMoeExperts runs for each pick",
            "--picked-experts exports the experts the router picked without probing",
        )
    candidates = {PICKED: (0.75 * y0 + 0.25 * y1) * scale, ONE_HOT_SLOTS: (0.75 * y1 + 0.25 * y0) * scale}
    for name, want in candidates.items():
        if torch.allclose(got, want, rtol=1e-5, atol=1e-6):
            return name
    raise BucketrtError(
        f"{type(experts).__name__} computes neither the picked experts nor transformers 5.x's one-hot dispatch",
        "bucketrt reproduces those two; this transformers computes something else",
    )


def _positions_forward(self, input_ids=None, inputs_embeds=None, cache_length=0):
    """NllbMoeSinusoidalPositionalEmbedding without growing its table: the export holds the table of
    max_position_embeddings positions (the manifest's max_sequence_length), and a Python branch on
    the symbolic length would narrow the traced shapes."""
    batch, length = input_ids.shape
    positions = self.create_position_ids_from_input_ids(input_ids, self.padding_idx, cache_length)
    return self.weights.index_select(0, positions.reshape(-1)).reshape(batch, length, -1).detach()


def _float32_only(forward):
    """A layer's forward that refuses float16 states: transformers' NLLB-MoE layers clamp float16
    states only when some are infinite, a Python branch on values that torch.export cannot trace."""

    def checked(hidden_states, *args, **kwargs):
        if hidden_states.dtype == torch.float16:
            raise BucketrtError(
                "NLLB-MoE does not export in fp16",
                "its layers clamp float16 states only when one is infinite (a Python branch on values, which "
                "torch.export cannot trace); export with --dtype fp32",
            )
        return forward(hidden_states, *args, **kwargs)

    return checked


def patch_model(model: nn.Module, picked_experts: bool = False) -> tuple[int, str]:
    """Routes every sparse MLP of `model` through TopKExperts; returns how many were patched and the
    expert dispatch exported: transformers' own (probed), or PICKED with `picked_experts`."""
    from transformers.models.nllb_moe.modeling_nllb_moe import (
        NllbMoeDecoderLayer,
        NllbMoeEncoderLayer,
        NllbMoeSinusoidalPositionalEmbedding,
        NllbMoeSparseMLP,
    )

    config = model.config
    check_config(config)
    sparse = [m for m in model.modules() if isinstance(m, NllbMoeSparseMLP)]
    if not sparse:
        raise BucketrtError(f"{type(model).__name__} has no sparse layer (encoder/decoder_sparse_step)")
    dispatch = PICKED if picked_experts else expert_dispatch(sparse[0])
    for module in sparse:
        experts = [module.experts[f"expert_{e}"] for e in range(module.router.num_experts)]
        with torch.no_grad():
            stacked = {
                "fc1": torch.stack([e.fc1.weight for e in experts]),
                "fc1_bias": torch.stack([e.fc1.bias for e in experts]),
                "fc2": torch.stack([e.fc2.weight for e in experts]),
                "fc2_bias": torch.stack([e.fc2.bias for e in experts]),
            }
        # The per-expert Linear layers stay (same state dict); the stacked copies are what the graph uses.
        for name, tensor in stacked.items():
            module.register_buffer(f"bucketrt_{name}", tensor.contiguous(), persistent=False)
        module.bucketrt_activation = config.activation_function
        module.bucketrt_dispatch = dispatch
        dropout = module.experts.moe_token_dropout
        module.bucketrt_output_scale = 1.0 - dropout if dropout > 0 else 1.0
        module.router.classifier.to(module.router.dtype)
        module.forward = types.MethodType(_sparse_mlp_forward, module)
    for module in model.modules():
        if isinstance(module, NllbMoeSinusoidalPositionalEmbedding):
            module.forward = types.MethodType(_positions_forward, module)
        if isinstance(module, (NllbMoeEncoderLayer, NllbMoeDecoderLayer)):
            module.forward = _float32_only(module.forward)
    return len(sparse), dispatch


# -- the family ---------------------------------------------------------------------------------


@register
class NllbMoeFamily(Seq2SeqFamily):
    name = "nllb_moe"
    model_types = SUPPORTED_MODEL_TYPES
    order = 35
    config_class = "NllbMoeConfig"
    # transformers has no NllbMoe encoder-only class: the encoder component of NllbMoeModel.
    tasks = task_table(
        "NllbMoe",
        "text2text-generation",
        # before feature-extraction: infer_task maps a saved NllbMoeModel to the last task of its class
        "feature-extraction-encoder",
        "feature-extraction",
        classes={"feature-extraction-encoder": "NllbMoeModel"},
    )
    # picked_experts: each pick runs the expert the router chose, as NLLB-MoE was trained (fairseq,
    # transformers 4.x), rather than what the installed transformers runs (5.x: experts 1 and 0).
    options = {"picked_experts": False}
    option_flags = {
        "picked_experts": "NLLB-MoE: run the experts the router picked, as the model was trained (transformers 4.x), "
        "not transformers 5.x's experts 1 and 0 for every first and second pick. Default: as the installed "
        "transformers computes, which generation then matches token for token."
    }
    # Not batched across requests: the router counts capacity and places over every row of a call.
    batch_rows_independent = False
    presets = {
        "nllb-moe-tiny": Preset(
            "NLLB-MoE architecture, tiny: d_model 32, 2+2 layers (the second of each sparse), 4 heads of 8, "
            "4 experts of 64 top-2, relu, vocab 256, 128 positions; random weights",
            {
                "vocab_size": 256,
                "d_model": 32,
                "encoder_layers": 2,
                "decoder_layers": 2,
                "encoder_ffn_dim": 64,
                "decoder_ffn_dim": 64,
                "encoder_attention_heads": 4,
                "decoder_attention_heads": 4,
                "encoder_sparse_step": 2,
                "decoder_sparse_step": 2,
                "num_experts": 4,
                "max_position_embeddings": 128,
                "architectures": ["NllbMoeForConditionalGeneration"],
            },
        ),
    }

    def check_config(self, config) -> None:
        check_config(config)

    def patch(self, model, task, seed: int, options: dict) -> Patch:
        layers, dispatch = patch_model(model, options["picked_experts"])
        config = model.config
        return Patch(
            "top2-moe",
            self.components(model, task),
            {
                "moe": {
                    "sparse_layers": layers,
                    "num_experts": config.num_experts,
                    "top_k": 2,
                    "activation": config.activation_function,
                    "router_dtype": config.router_dtype,
                    "eval_capacity_token_fraction": config.moe_eval_capacity_token_fraction,
                    "expert_capacity": config.expert_capacity,
                    "batch_prioritized_routing": config.batch_prioritized_routing,
                    "normalize_router_prob_before_dropping": config.normalize_router_prob_before_dropping,
                    "router_ignore_padding_tokens": config.router_ignore_padding_tokens,
                    "moe_token_dropout": config.moe_token_dropout,
                    "expert_dispatch": dispatch,
                }
            },
        )

    def max_length(self, config: dict) -> int | None:
        """The sinusoidal table's reach: positions pad_token_id + 1 ... max_position_embeddings + 1
        (decoder: the cached tokens and the new ones together)."""
        return int(config["max_position_embeddings"]) + 1 - int(config.get("pad_token_id") or 0)

    def cache_layout(self, config) -> tuple[int, int, int]:
        heads = config.decoder_attention_heads
        return config.decoder_layers, heads, config.d_model // heads
