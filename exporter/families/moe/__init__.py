"""Mixture-of-experts causal LMs through transformers' experts interface: Mixtral, Qwen2-MoE,
Qwen3-MoE, OLMoE, GPT-OSS, DeepSeek-V3, and any model type whose causal LM declares its experts
with `@use_experts_implementation` (claims.py finds them from transformers' classes).

The experts become bucketrt's TopKExperts, one node per MoE layer, through the exporter's one hook
(bucketrt.exporter.experts), and the attention core bucketrt's MaskedAttention, one node per layer,
through transformers' attention interface (bucketrt.exporter.attention: grouped-query heads, sliding
windows and padding through the mask, GPT-OSS's sinks); nothing here is specific to a model type.
Routers, shared experts and their gates, projections, rotary positions, norms and heads are the
model's own code, exported as standard ONNX ops.

Tasks: text-generation (one graph with the key/value cache, Optimum's convention: decoder.py),
feature-extraction and text-classification where the model type has those heads.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bucketrt.errors import BucketrtError
from bucketrt.export_format.tasks import (
    BATCH,
    BUFFER_SEQUENCE,
    CACHED_SEQUENCE,
    SEQUENCE,
    TOTAL_SEQUENCE,
    WINDOW_CACHED_SEQUENCE,
    Task,
    task_table,
)

from ...attention import patch_attention
from ...experts import patch_experts
from ...family import EXAMPLE_BATCH, Component, Family, Patch, register
from ...presets import Preset
from . import claims
from .decoder import CausalLMStep, HeadOutputs, cache_shapes, past_names, sliding_windows

# The text-generation graph's dims beside batch_size and sequence_length (the new tokens).
PAST, TOTAL, WINDOW_PAST, BUFFER = CACHED_SEQUENCE, TOTAL_SEQUENCE, WINDOW_CACHED_SEQUENCE, BUFFER_SEQUENCE
# Tracing sizes: distinct and above 1, so that every axis stays symbolic (a shared buffer longer
# than the mask, past + new).
_EXAMPLE = {BATCH: EXAMPLE_BATCH, SEQUENCE: 5, PAST: 7, WINDOW_PAST: 6, BUFFER: 15}
GENERATION = "text-generation"

# The model types this bucketrt has exported and checked (tests/test_export_moe.py, docs/moe.md);
# for the "not supported" message: the family claims every type whose experts use the interface.
VERIFIED = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v3", "phimoe")

_MIXTRAL_TINY = {
    "model_type": "mixtral",
    "architectures": ["MixtralForCausalLM"],
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 4096,
}
_QWEN3_MOE_TINY = {
    "model_type": "qwen3_moe",
    "architectures": ["Qwen3MoeForCausalLM"],
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "max_position_embeddings": 4096,
}

# Phi-3.5-MoE's architecture (sparsemixer router, biased attention, layer norms), the size of
# mixtral-mid: a family onnxruntime-genai's model builder takes and Mixtral is not (its 0.18 builds
# PhiMoE for CUDA only: docs/benchmarks.md, benchmarks/moe.py).
_PHIMOE_MID = {
    "model_type": "phimoe",
    "architectures": ["PhimoeForCausalLM"],
    "vocab_size": 32064,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 4,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 4096,
}


@register
class MoeFamily(Family):
    name = "moe"
    # For the "not supported" message only: `matches` claims every model type whose causal LM's
    # experts use transformers' experts interface; these are the ones verified.
    model_types = VERIFIED
    order = 50
    # Auto classes here; `resolve_task` names the model type's own (MixtralForCausalLM, ...).
    tasks = task_table(
        "AutoModel",
        GENERATION,
        "feature-extraction",
        "text-classification",
        classes={"feature-extraction": "AutoModel"},
    )
    default_task = GENERATION
    options = {"shared_kv_buffer": False}
    option_flags = {
        "shared_kv_buffer": "MoE text-generation: past and present share one buffer of the generation's length, "
        "written in place (onnxruntime-genai's past_present_share_buffer), so that a step copies no cache; "
        "bucketrt's generate, check and serving bind it. Default: Optimum's growing past."
    }
    # Not batched across requests: a token's experts see the other rows' tokens in one call, and
    # whether that keeps rows bit-identical is not checked.
    batch_rows_independent = False
    presets = {
        "mixtral-tiny": Preset(
            "Mixtral architecture, tiny: hidden 64, 2 layers, 4 heads (2 key/value heads) of 16, 8 experts of "
            "128 top-2, vocab 512; random weights",
            _MIXTRAL_TINY,
        ),
        "mixtral-mid": Preset(
            "Mixtral architecture, mid-size: hidden 1024, 4 layers, 16 heads (4 key/value heads) of 64, 8 "
            "experts of 2816 top-2, vocab 32000 (0.35 B parameters, 1.4 GB); random weights",
            dict(
                _MIXTRAL_TINY,
                vocab_size=32000,
                hidden_size=1024,
                intermediate_size=2816,
                num_hidden_layers=4,
                num_attention_heads=16,
                num_key_value_heads=4,
            ),
        ),
        "phimoe-mid": Preset(
            "Phi-3.5-MoE architecture at mixtral-mid's size: hidden 1024, 4 layers, 16 heads (4 key/value heads) "
            "of 64, 8 experts of 2816 top-2 (sparsemixer router), vocab 32064; random weights",
            _PHIMOE_MID,
        ),
        "qwen3-moe-tiny": Preset(
            "Qwen3-MoE architecture, tiny: hidden 64, 2 layers, 4 heads (2 key/value heads) of 16, 64 experts "
            "of 32 top-8, vocab 512; random weights",
            _QWEN3_MOE_TINY,
        ),
        "qwen3-moe-mid": Preset(
            "Qwen3-MoE architecture, mid-size: hidden 1024, 4 layers, 16 heads (4 key/value heads) of 64, "
            "64 experts of 384 top-8, vocab 32000 (0.38 B parameters, 1.5 GB); random weights",
            dict(
                _QWEN3_MOE_TINY,
                vocab_size=32000,
                hidden_size=1024,
                intermediate_size=2816,
                moe_intermediate_size=384,
                num_hidden_layers=4,
                num_attention_heads=16,
                num_key_value_heads=4,
                head_dim=64,
            ),
        ),
    }

    # -- configs and models ------------------------------------------------------------------
    def matches(self, config: dict) -> bool:
        return claims.claims(config)

    def make_config(self, values: dict):
        from transformers import AutoConfig

        values = dict(values)
        return AutoConfig.for_model(values.pop("model_type"), **values)

    def build_model(self, task: Task, config, ref: str | None, **kwargs):
        # transformers' eager attention (every model type has it) for the model as built: the PyTorch
        # side of comparisons. The export switches it to MaskedAttention (patch); sdpa would not do
        # for either: torch.onnx's decomposition turns its boolean mask into a float one in every
        # layer and guards the softmax against fully masked rows with IsNaN and Where over [batch,
        # heads, query, key] (docs/moe.md).
        config._attn_implementation = "eager"
        return super().build_model(task, config, ref, **kwargs)

    def check_config(self, config) -> None:
        found = claims.experts_classes(config.model_type)
        if not found:
            raise BucketrtError(
                f"the experts of {config.model_type} models do not use transformers' experts interface: no class "
                f"of its modeling module is declared with @use_experts_implementation",
                "bucketrt exports mixture-of-experts models through that interface (transformers.integrations.moe)",
            )

    def resolve_task(self, task: Task, config) -> Task:
        name = claims.class_name(config.model_type, task.name)
        if name is None:
            heads = [t for t in self.tasks if claims.class_name(config.model_type, t)]
            raise BucketrtError(
                f"{config.model_type} models have no {task.name} head in transformers",
                f"export one of: {', '.join(heads)}",
            )
        return dataclasses.replace(task, model_class=name)

    def infer_task(self, config) -> str:
        for arch in getattr(config, "architectures", None) or ():
            for task in self.tasks:
                if claims.class_name(config.model_type, task) == arch:
                    return task
        return self.default_task

    # -- export --------------------------------------------------------------------------------
    def patch(self, model, task: Task, seed: int, options: dict) -> Patch:
        config = model.config
        if task.name == "text-classification" and getattr(config, "pad_token_id", None) is None:
            raise BucketrtError(
                f"{task.model_class} needs the config's pad_token_id (it classifies each row's last non-padding "
                "token, and a batch of several rows cannot be read without it)",
                "set it, e.g. --config-override pad_token_id=0",
            )
        records = patch_experts(model)
        if not records:
            raise BucketrtError(
                f"{type(model).__name__} has no experts module that uses transformers' experts interface",
                "bucketrt exports mixture-of-experts models whose experts are declared with @use_experts_implementation",
            )
        # Attention through MaskedAttention, from here on (build_model's eager stays the model's own).
        patch_attention(model)
        first = records[0]
        manifest = {
            "experts": {
                "layers": len(records),
                "num_experts": first["num_experts"],
                "top_k": _top_k(config),
                "gating": first["gating"],
                "activation": first["activation"],
                "limit": first["limit"],
                "modules": records,
            }
        }
        if task.name == GENERATION:
            components = self._generation(model, options["shared_kv_buffer"])
            manifest["kv_cache"] = "shared-buffer" if options["shared_kv_buffer"] else "concat"
        else:
            components = self._head(model, task)
        return Patch("topk-experts", components, manifest)

    def _head(self, model, task: Task) -> list[Component]:
        [component] = super().components(model, task)
        component.module = HeadOutputs(model, task.outputs).eval()
        return [component]

    def _generation(self, model, shared_buffer: bool) -> list[Component]:
        from torch.export import Dim

        try:
            shapes = cache_shapes(model)
        except Exception as e:
            raise BucketrtError(
                f"{type(model).__name__} does not run with a plain key/value cache (DynamicCache): "
                f"{' '.join(str(e).split())[:200]}",
                "bucketrt's text-generation export caches every layer's keys and values (attention layers only)",
            ) from None
        layers = len(shapes)
        pasts, presents = past_names(layers, "past_key_values"), past_names(layers, "present")
        # A sliding-window layer's past has a length of its own (its last tokens, see decoder.py).
        layer_windows = sliding_windows(model.config, layers)
        windows = [w for w in layer_windows for _ in ("key", "value")]
        writes = {}
        if shared_buffer:  # every layer's past and present: one buffer (decoder.py)
            past_dims = [BUFFER] * len(windows)
            present_dims = {name: {2: BUFFER} for name in presents}
            # A buffer too short for the mask fails in the write (ScatterND: "invalid indice").
            writes = {
                present: f"{present}: the new tokens written into {past} after its first {TOTAL} - {SEQUENCE} "
                f"(its {BUFFER} must be at least {TOTAL})"
                for present, past in zip(presents, pasts)
            }
        else:
            past_dims = [PAST if window is None else WINDOW_PAST for window in windows]
            # Its present's length, named (the traced expression is a nest of Max).
            present_dims = {
                name: {2: f"min({WINDOW_PAST} + {SEQUENCE}, {window - 1})"}
                for name, window in zip(presents, windows)
                if window is not None
            }
        batch, new = _EXAMPLE[BATCH], _EXAMPLE[SEQUENCE]
        past_shapes = {
            name: [batch, shape[1], _EXAMPLE[dim], shape[3]]
            for name, shape, dim in zip(pasts, [s for pair in shapes for s in pair], past_dims)
        }
        feeds = self.example_inputs(
            model.config,
            {
                "input_ids": [batch, new],
                "attention_mask": [batch, _EXAMPLE[PAST] + new],
                "position_ids": [batch, new],
                **past_shapes,
            },
            dict.fromkeys(pasts, "float32"),
        )
        dims = {name: Dim(name) for name in (BATCH, SEQUENCE, PAST, TOTAL, WINDOW_PAST, BUFFER)}

        def pack(feeds: dict) -> dict:
            out = {k: v for k, v in feeds.items() if not k.startswith("past_key_values.")}
            out["past_key_values"] = tuple(feeds[n] for n in pasts)
            return out

        dynamic = {
            "input_ids": {0: dims[BATCH], 1: dims[SEQUENCE]},
            "attention_mask": {0: dims[BATCH], 1: dims[TOTAL]},
            "position_ids": {0: dims[BATCH], 1: dims[SEQUENCE]},
            "past_key_values": tuple({0: dims[BATCH], 2: dims[dim]} for dim in past_dims),
        }
        step = CausalLMStep(model, layer_windows, shared_buffer).eval()
        names = ("input_ids", "attention_mask", "position_ids", *pasts)
        return [
            Component(
                "model",
                step,
                names,
                ("logits", *presents),
                pack(feeds),
                dynamic,
                pack_inputs=pack,
                logits_to_keep=True,
                output_dims=present_dims,
                output_nodes=writes,
            )
        ]

    # -- inputs --------------------------------------------------------------------------------
    def input_sizes(self, component: str, sizes: dict[str, int]) -> dict[str, int]:
        """The check's sequence length is the attention mask's: a quarter of it new tokens (at least
        one), the rest cached (a sliding-window layer's cache too: the whole history is a suffix of
        itself; a shared buffer holds them and as many positions again as new tokens, a tail the
        mask hides)."""
        total = sizes[SEQUENCE]
        new = max(1, total // 4)
        return {**sizes, SEQUENCE: new, PAST: total - new, WINDOW_PAST: total - new, TOTAL: total, BUFFER: total + new}

    def dummy_inputs(self, config: dict, shapes: dict, dtypes: dict, rng, padding: bool) -> dict:
        """As the default, except that with past key/values the inputs are one consistent decoding
        step: the mask covers past + new tokens, with `padding` the last row's first quarter is left
        padding (as generate pads a batch), and position_ids number the new tokens as transformers'
        generate does (the mask's cumulative sum less one, 0 at padding)."""
        out = super().dummy_inputs(config, shapes, dtypes, rng, padding)
        if "position_ids" not in shapes:
            return out
        mask = np.ones(shapes["attention_mask"], dtype=np.int64)
        total = mask.shape[-1]
        if padding and total > 1:
            mask[-1, : max(1, total // 4)] = 0
        positions = np.where(mask == 0, 0, np.cumsum(mask, axis=-1) - 1)
        out["attention_mask"] = mask
        out["position_ids"] = np.ascontiguousarray(positions[:, total - shapes["position_ids"][-1] :])
        return out


def _top_k(config) -> int | None:
    for name in ("num_experts_per_tok", "moe_topk", "top_k"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
