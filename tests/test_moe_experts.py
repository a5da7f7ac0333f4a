"""The experts hook (bucketrt.exporter.experts) and the moe family's claims, errors and inputs, on
tiny modules and configs from transformers: no whole-model export here (tests/test_export_moe.py
exports and checks whole models).

Every experts module is checked against transformers' own batched_mm implementation on the same
weights: the hook's canonical layout (transposed weights transposed, GPT-OSS's interleaved gate/up
rows de-interleaved, zero biases made) and its recognised gating must compute what the module did.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

from bucketrt.errors import BucketrtError
from bucketrt.exporter import experts
from bucketrt.exporter.family import Component, family_for, family_named

MOE = family_named("moe")


def _experts_of(model_type: str, **values):
    """The first experts module of a tiny random causal LM of `model_type` (transformers' classes)."""
    config = transformers.AutoConfig.for_model(model_type, **values)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # non-zero biases, so that their layout matters
        for name, p in model.named_parameters():
            if name.endswith("_bias"):
                p.normal_(0.0, 0.5)
    return model, experts.experts_modules(model)[0][1]


TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
CASES = {
    "mixtral": (dict(TINY, intermediate_size=48, num_local_experts=6, num_experts_per_tok=2), ("glu", "silu", 0.0)),
    # transposed weights, biases, interleaved gate/up rows, clamped SwiGLU with x*sigmoid(1.702x)
    "gpt_oss": (
        dict(TINY, intermediate_size=48, num_local_experts=6, num_experts_per_tok=2, head_dim=8),
        ("glu_clamped_offset", "quick_gelu", 7.0),
    ),
    "qwen2_moe": (
        dict(TINY, moe_intermediate_size=24, shared_expert_intermediate_size=40, num_experts=8, num_experts_per_tok=3),
        ("glu", "silu", 0.0),
    ),
}


def _batched_mm(module, hidden, index, weights):
    from transformers.integrations.moe import batched_mm_experts_forward

    with torch.no_grad():
        return batched_mm_experts_forward(module, hidden, index, weights)


def _routing(tokens: int, experts_count: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(experts_count, generator=g)[:k] for _ in range(tokens)])
    index[0, -1] = experts_count  # the "no expert" index: adds nothing
    return index, torch.rand(tokens, k, generator=g)


@pytest.mark.parametrize("model_type", list(CASES))
def test_the_hook_computes_what_the_module_did(model_type):
    values, expected = CASES[model_type]
    _, module = _experts_of(model_type, **values)
    original = copy.deepcopy(module)
    attrs = experts.patch_module(module)
    assert (attrs["gating"], attrs["activation"], attrs["limit"]) == expected
    experts_count = module.down_proj.shape[0]
    # canonical layout, one copy: gate_up [E, 2F, D], down [E, D, F], biases [E, 2F] and [E, D]
    e, g, d = module.gate_up_proj.shape
    assert module.down_proj.shape == (e, d, g // 2) and module.gate_up_proj_bias.shape == (e, g)
    assert not module.is_transposed and module.is_concatenated and module.has_bias
    assert sum(p.numel() for p in module.parameters()) <= sum(p.numel() for p in original.parameters())
    hidden = torch.randn(11, d)
    index, weights = _routing(11, experts_count, 2 if model_type != "qwen2_moe" else 3)
    want = _batched_mm(original, hidden, index.clamp(max=experts_count - 1), weights * (index < experts_count))
    with torch.no_grad():
        got = experts.experts_forward(module, hidden, index, weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _ergo():
    """Ergo's expert projections: no gate, transposed weights, relu2."""
    from transformers.models.ergo.modeling_ergo import ErgoExpertProjections

    return ErgoExpertProjections(transformers.ErgoConfig(hidden_size=16, moe_intermediate_size=24, num_experts=5))


def _nemotron_h():
    """NemotronH's experts: no gate, relu2, nn.Linear's layout."""
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHExperts

    return NemotronHExperts(transformers.NemotronHConfig(hidden_size=16, moe_intermediate_size=24, n_routed_experts=5))


@pytest.mark.parametrize("make", [_ergo, _nemotron_h])
def test_experts_without_a_gate(make):
    torch.manual_seed(0)
    module = make()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    original = copy.deepcopy(module)
    attrs = experts.patch_module(module)
    assert attrs == {"activation": "relu2", "gating": "none", "limit": 0.0}
    assert module.up_proj.shape == (5, 24, 16) and module.down_proj.shape == (5, 16, 24)
    hidden = torch.randn(7, 16)
    index, weights = _routing(7, 5, 2)
    want = _batched_mm(original, hidden, index.clamp(max=4), weights * (index < 5))
    with torch.no_grad():
        got = experts.experts_forward(module, hidden, index, weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_patched_model_matches_transformers_and_keeps_its_fingerprint():
    """The whole model on the hook (eager: TopKExperts' reference) against transformers' own eager
    experts; the weights fingerprint is taken before the patch, so a rebuild compares equal."""
    from bucketrt.exporter.family import fingerprint

    model, _ = _experts_of("gpt_oss", **CASES["gpt_oss"][0])
    before = fingerprint(sorted(model.state_dict().items()))
    reference = copy.deepcopy(model)
    reference.set_experts_implementation("eager")
    records = experts.patch_experts(model)
    assert [r["class"] for r in records] == ["GptOssExperts"] and model.config._experts_implementation == "bucketrt"
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-4)
    again, _ = _experts_of("gpt_oss", **CASES["gpt_oss"][0])
    assert fingerprint(sorted(again.state_dict().items())) == before


def test_unknown_gates_and_post_expert_norms_are_refused_by_name():
    _, module = _experts_of("gpt_oss", **dict(CASES["gpt_oss"][0], swiglu_alpha=1.5))
    with pytest.raises(
        BucketrtError, match=r"no TopKExperts gating computes GptOssExperts._apply_gate \(limit=7, alpha=1.5"
    ):
        experts.patch_module(module)
    _, module = _experts_of("mixtral", **CASES["mixtral"][0])
    module.has_post_expert_norm = True
    with pytest.raises(BucketrtError, match="MixtralExperts applies a norm after each expert"):
        experts.patch_module(module)


def test_the_experts_must_get_tokens_and_their_picks():
    """A model whose MoE block hands its experts something other than [tokens, hidden] states and
    [tokens, k] picks gets an error naming the experts class."""
    _, module = _experts_of("mixtral", **CASES["mixtral"][0])
    experts.patch_module(module)
    index, weights = _routing(6, 6, 2)
    with pytest.raises(BucketrtError, match=r"MixtralExperts gets hidden states \[2, 3, 32\]"):
        experts.experts_forward(module, torch.randn(2, 3, 32), index, weights)


def test_the_family_claims_interface_models_and_names_what_others_lack():
    for model_type in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v3", "granitemoe"):
        assert family_for({"model_type": model_type}).name == "moe", model_type
    assert family_for({"model_type": "switch_transformers"}).name == "switch"
    with pytest.raises(BucketrtError, match="model type 'bert' is not supported"):
        family_for({"model_type": "bert"})
    # A mixture of experts whose experts do not use the interface: claimed, then refused by name.
    dbrx = transformers.DbrxConfig(ffn_config={"moe_num_experts": 4}).to_dict()
    assert family_for(dbrx) is MOE
    with pytest.raises(BucketrtError, match="the experts of dbrx models do not use transformers' experts interface"):
        MOE.check_config(transformers.DbrxConfig())


def test_tasks_name_the_model_types_own_classes():
    config = MOE.make_config(dict(MOE.presets["mixtral-tiny"].config))
    assert MOE.resolve_task(MOE.get_task("text-generation"), config).model_class == "MixtralForCausalLM"
    assert MOE.resolve_task(MOE.get_task("feature-extraction"), config).model_class == "MixtralModel"
    olmoe = transformers.OlmoeConfig()
    with pytest.raises(BucketrtError, match="olmoe models have no text-classification head"):
        MOE.resolve_task(MOE.get_task("text-classification"), olmoe)


def test_check_inputs_are_one_consistent_decoding_step():
    """make_inputs for a text-generation export: the mask covers past + new tokens (the check's
    sequence length), the padded row is left-padded, positions number the real tokens."""
    entry = {
        "name": "model",
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
            {"name": "attention_mask", "dtype": "int64", "shape": ["batch_size", "total_sequence_length"]},
            {"name": "position_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
            {
                "name": "past_key_values.0.key",
                "dtype": "float32",
                "shape": ["batch_size", 2, "past_sequence_length", 8],
            },
        ],
    }
    sizes = {"batch_size": 2, "sequence_length": 12}
    feeds = MOE.make_inputs({"config": {"vocab_size": 50}}, entry, sizes, np.random.default_rng(0), padding=True)
    assert feeds["input_ids"].shape == (2, 3) and feeds["past_key_values.0.key"].shape == (2, 2, 9, 8)
    assert feeds["attention_mask"].tolist() == [[1] * 12, [0] * 3 + [1] * 9]
    assert feeds["position_ids"].tolist() == [[9, 10, 11], [6, 7, 8]]


def test_the_export_refuses_silently_narrowed_dynamic_shapes():
    """torch.onnx.export retries a constraint violation with narrowed shapes and reports success;
    the export's guard finds the narrowed dim (here a Python branch on the cache length)."""
    from torch.export import Dim

    from bucketrt.exporter.onnx_export import _trace
    from bucketrt.exporter.sources import PresetSource

    class Branchy(torch.nn.Module):
        def forward(self, x, past=()):
            if past[0].shape[1] >= 4:
                return x[:, -4:] * 2 + past[0].sum()
            return x + past[0].sum()

    def component(dims):
        example = {"x": torch.randn(2, 7), "past": (torch.randn(2, 6),)}
        return Component("model", Branchy(), ("x", "past.0"), ("y",), example, dims)

    with pytest.raises(
        BucketrtError, match=r"narrowed .* past\[0\] dim 1 \(past\) takes \[4, int_oo\], declared \[0, int_oo\]"
    ):
        _trace(component({"x": {1: Dim("n")}, "past": ({1: Dim("past")},)}), 20, PresetSource("mixtral-tiny"))
    # declared from 4 on, the same trace passes the guard
    _trace(component({"x": {1: Dim("n")}, "past": ({1: Dim("past", min=4)},)}), 20, PresetSource("mixtral-tiny"))


def test_a_router_that_does_not_trace_is_refused_by_its_block(monkeypatch):
    """Python on the routing's values (here: a branch on the router logits) cannot be one graph;
    the patch traces each kind of MoE block alone and names it."""
    from transformers.models.mixtral import modeling_mixtral

    original = modeling_mixtral.MixtralTopKRouter.forward

    def branching(self, hidden_states):
        logits, scores, indices = original(self, hidden_states)
        if bool((logits > 100).any()):  # data-dependent control flow
            scores = scores * 0
        return logits, scores, indices

    model, _ = _experts_of("mixtral", **CASES["mixtral"][0])
    experts.patch_experts(copy.deepcopy(model))  # the stock router traces
    monkeypatch.setattr(modeling_mixtral.MixtralTopKRouter, "forward", branching)
    with pytest.raises(
        BucketrtError, match=r"the router of MixtralSparseMoeBlock \(model.layers.0.mlp\) does not trace"
    ):
        experts.patch_experts(model)
