"""Mixture-of-experts causal LMs end to end (the moe family): tiny random configs of transformers'
own classes, saved with save_pretrained beside a local tokenizer, exported from the folder, checked
in ONNX Runtime against the PyTorch reference, and generating token for token what transformers'
greedy generate does with the same weights, for single prompts and left-padded batches.

Each model type runs through the same code: the experts become TopKExperts through the exporter's
one hook (bucketrt.exporter.experts), everything else is the model's own code in standard ops.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import pytest
import torch
import transformers
from click.testing import CliRunner

import bucketrt
from bucketrt.check import check
from bucketrt.check.generation import ReferenceSession
from bucketrt.exporter import export, load_reference, make_inputs
from bucketrt.runtime import decoding

pytestmark = pytest.mark.slow

WORDS = (
    "the a river stone light north house sings under over quiet storm garden city bridge old new red blue green "
    "small large early late runs walks reads writes opens closes paper window road train ship bird tree winter"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
PROMPTS = ["the old bridge over the quiet river", "a bird sings", "the small train runs over the long road early"]
STEPS = 12
# Every config: 2 layers, hidden 32, 4 heads (2 key/value heads) of 8, a few small experts; large
# random weights (initializer_range), so that greedy decoding does not repeat one token.
COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
    initializer_range=0.2,
    tie_word_embeddings=False,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=3,
)
CONFIGS = {
    "mixtral": dict(intermediate_size=48, num_local_experts=6, num_experts_per_tok=2),
    # a shared expert with its sigmoid gate beside the routed experts (standard ops)
    "qwen2_moe": dict(
        intermediate_size=48,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=6,
        num_experts_per_tok=2,
        norm_topk_prob=False,
    ),
    "qwen3_moe": dict(intermediate_size=48, moe_intermediate_size=16, num_experts=16, num_experts_per_tok=4),
    "olmoe": dict(intermediate_size=48, num_experts=6, num_experts_per_tok=2),
    # sliding-window layers, attention sinks, biased router, clamped SwiGLU, interleaved transposed weights
    "gpt_oss": dict(
        intermediate_size=48,
        num_local_experts=6,
        num_experts_per_tok=2,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    ),
    # Phi-3.5-MoE: the sparsemixer router (top-2 by masked softmaxes over the router logits, in
    # standard ops), biased attention projections, layer norms, a biased lm_head
    "phimoe": dict(intermediate_size=48, num_local_experts=6, num_experts_per_tok=2),
    # latent attention (keys wider than values), grouped top-k router with a bias correction, a shared
    # expert, the first layer dense
    "deepseek_v3": dict(
        intermediate_size=48,
        moe_intermediate_size=16,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        num_key_value_heads=4,
        kv_lora_rank=16,
        q_lora_rank=24,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
    ),
}
# MoE layers per model (DeepSeek-V3's first layer is dense).
MOE_LAYERS = {name: 1 if name == "deepseek_v3" else 2 for name in CONFIGS}


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        padding_side="left",
    )


def _config(model_type: str, vocab_size: int):
    return transformers.AutoConfig.for_model(model_type, vocab_size=vocab_size, **dict(COMMON, **CONFIGS[model_type]))


@pytest.fixture(scope="module")
def source(tmp_path_factory, tokenizer):
    """source(model_type, head) -> a save_pretrained folder of a tiny random model with its tokenizer."""

    @functools.cache
    def make(model_type: str, head: str = "AutoModelForCausalLM"):
        torch.manual_seed(0)
        model = getattr(transformers, head).from_config(_config(model_type, len(tokenizer))).eval()
        folder = tmp_path_factory.mktemp(f"{model_type}-src")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return make


@pytest.fixture(scope="module")
def exported(tmp_path_factory, source):
    """exported(model_type, task) -> (export folder, source folder), exported once per module."""

    @functools.cache
    def make(model_type: str, task: str = "text-generation", **options):
        head = {"text-generation": "AutoModelForCausalLM", "text-classification": "AutoModelForSequenceClassification"}
        src = source(model_type, head.get(task, "AutoModel"))
        folder = tmp_path_factory.mktemp(f"{model_type}-{task}")
        export(str(src), folder, task=task, options=options)
        return folder, src

    return make


def _hf(src, head=transformers.AutoModelForCausalLM):
    """transformers' model from the folder, its own experts implementation (not bucketrt's)."""
    return head.from_pretrained(src).eval()


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_one_topk_experts_node_per_moe_layer_one_masked_attention_per_layer_and_standard_routers(exported, model_type):
    folder, _ = exported(model_type)
    manifest = json.loads((folder / "bucketrt.json").read_text())
    assert manifest["family"] == "moe" and manifest["model_class"].endswith("ForCausalLM")
    assert manifest["experts"]["layers"] == MOE_LAYERS[model_type]
    model = onnx.load(str(folder / "model.onnx"))
    nodes = list(model.graph.node)
    ours = [n for n in nodes if n.domain == "bucketrt"]
    topk_experts = [n for n in ours if n.op_type == "TopKExperts"]
    assert len(topk_experts) == MOE_LAYERS[model_type]
    # Every attention layer's core is one MaskedAttention (the mask made once per kind, not per layer).
    attention = [n for n in ours if n.op_type == "MaskedAttention"]
    assert len(attention) == COMMON["num_hidden_layers"] and len(ours) == len(topk_experts) + len(attention)
    assert not [n for n in nodes if n.op_type == "Softmax" and n.name.count("self_attn")], "an eager attention left"
    kinds = {n.op_type for n in nodes}
    assert not kinds & {"Loop", "Scan", "If", "NonZero"}, "a dense or data-dependent expert loop in the graph"
    # The RMS norms (two per layer and the final one; PhiMoE's are LayerNormalization) in the form
    # ONNX Runtime fuses (exporter/rms_norm.py): a Div by the Sqrt, no Reciprocal.
    norms = 0 if model_type == "phimoe" else 2 * COMMON["num_hidden_layers"] + 1
    assert "Reciprocal" not in kinds and sum(n.op_type == "Sqrt" for n in nodes) >= norms
    # The routers: standard ops (PhiMoE's sparsemixer picks its two experts by two maxima: ArgMax).
    picker = "ArgMax" if model_type == "phimoe" else "TopK"
    assert sum(n.op_type == picker for n in nodes) >= MOE_LAYERS[model_type] * (2 if model_type == "phimoe" else 1)
    # The expert weights (gate_up, its bias, down, its bias) feed TopKExperts nodes only.
    initializers = {i.name for i in model.graph.initializer}
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    for node in topk_experts:
        for name in node.input[3:7]:
            assert name in initializers and consumers[name] == {"TopKExperts"}, name
    names = [i.name for i in model.graph.input]
    layers = len([n for n in names if n.startswith("past_key_values.")]) // 2
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"] and layers == 2
    assert [o.name for o in model.graph.output] == ["logits"] + [
        f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")
    ]
    if model_type == "qwen2_moe":
        assert "Sigmoid" in kinds  # the shared expert's gate


@pytest.mark.parametrize("model_type", ["mixtral", "qwen3_moe"])
def test_onnx_runtime_fuses_every_rms_norm(exported, model_type, tmp_path):
    """What exporter/rms_norm.py is for: ONNX Runtime runs each RMS norm of the export as one
    SimplifiedLayerNormalization kernel (Qwen3-MoE's query and key norms included)."""
    folder, _ = exported(model_type)
    options = bucketrt.session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    bucketrt.ort_session(folder, options=options, library_registered=True)
    kinds = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    per_layer = 4 if model_type == "qwen3_moe" else 2
    assert kinds.count("SimplifiedLayerNormalization") == per_layer * COMMON["num_hidden_layers"] + 1
    assert not {"Pow", "Sqrt", "ReduceMean"} & set(kinds)


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_the_reference_is_transformers_model(exported, model_type, tokenizer):
    """The export's PyTorch reference (TopKExperts' reference for the experts) against transformers'
    own model from the source folder, on a left-padded batch's prefill."""
    folder, src = exported(model_type)
    reference = load_reference(folder)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="np")
    session = ReferenceSession(reference, reference.manifest["components"][0])  # the graph's inputs, in PyTorch
    feeds = decoding.first_step_feeds(session, batch["input_ids"], batch["attention_mask"])
    ours = reference.run(feeds)["logits"]
    with torch.no_grad():
        theirs = _hf(src)(
            input_ids=torch.from_numpy(feeds["input_ids"]),
            attention_mask=torch.from_numpy(feeds["attention_mask"]),
            position_ids=torch.from_numpy(feeds["position_ids"]),
        ).logits.numpy()
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)


def test_sliding_window_layers_cache_the_window_as_transformers_does(exported, tokenizer):
    """GPT-OSS's sliding layer (window 4) keeps the last window - 1 tokens in its present, as
    transformers' own cache for generate keeps them (the same values), its past a dim of its own;
    a past holding the layer's whole history gives the same next step as the window alone."""
    folder, src = exported("gpt_oss")
    hf = _hf(src)
    window = hf.config.sliding_window
    assert hf.config.layer_types == ["sliding_attention", "full_attention"] and window == 4
    session = bucketrt.ort_session(folder)
    past_dims = {i.name: i.shape[2] for i in session.get_inputs() if i.name.startswith("past_key_values.")}
    assert past_dims == {
        "past_key_values.0.key": "sliding_past_sequence_length",
        "past_key_values.0.value": "sliding_past_sequence_length",
        "past_key_values.1.key": "past_sequence_length",
        "past_key_values.1.value": "past_sequence_length",
    }
    present_dims = {o.name: o.shape[2] for o in session.get_outputs() if o.name.startswith("present.")}
    assert present_dims["present.0.key"] == "min(sliding_past_sequence_length + sequence_length, 3)"
    assert present_dims["present.1.value"] == "past_sequence_length + sequence_length"
    names = [o.name for o in session.get_outputs()]
    batch = tokenizer(PROMPTS, padding=True, return_tensors="np")
    length = batch["input_ids"].shape[1]
    assert length > window
    feeds = decoding.first_step_feeds(session, batch["input_ids"], batch["attention_mask"])
    first = dict(zip(names, session.run(None, feeds)))
    with torch.no_grad():
        theirs = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}, use_cache=True).past_key_values
        whole = transformers.DynamicCache()  # every layer its whole history
        hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}, cache=whole, use_cache=True)
    assert first["present.0.key"].shape[2] == window - 1 and first["present.1.key"].shape[2] == length
    for i, layer in enumerate(theirs.layers):
        np.testing.assert_allclose(first[f"present.{i}.key"], layer.keys.numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(first[f"present.{i}.value"], layer.values.numpy(), atol=1e-5, rtol=1e-5)

    # The next token, after the window and after the sliding layer's whole history.
    mask = np.concatenate([batch["attention_mask"], np.ones((len(PROMPTS), 1), np.int64)], axis=1)
    step = {
        "input_ids": first["logits"][:, -1].argmax(-1)[:, None].astype(np.int64),
        "attention_mask": mask,
        "position_ids": mask.sum(-1, keepdims=True) - 1,
    }
    past = {f"past_key_values.{name[len('present.') :]}": first[name] for name in names if name.startswith("present.")}
    after_window = dict(zip(names, session.run(None, {**step, **past})))
    past["past_key_values.0.key"] = whole.layers[0].keys.numpy()
    past["past_key_values.0.value"] = whole.layers[0].values.numpy()
    after_history = dict(zip(names, session.run(None, {**step, **past})))
    np.testing.assert_allclose(after_history["logits"], after_window["logits"], atol=1e-5, rtol=1e-5)
    for name in names[1:]:
        np.testing.assert_allclose(after_history[name], after_window[name], atol=1e-6, rtol=1e-6)
    assert after_window["present.0.key"].shape[2] == window - 1


@pytest.mark.parametrize("model_type", ["mixtral", "gpt_oss", "deepseek_v3"])
def test_a_shared_kv_buffer_is_written_in_place_and_generates_as_transformers(exported, model_type, tokenizer):
    """--shared-kv-buffer: each past and its present are one buffer [batch, heads,
    buffer_sequence_length, dim], the present a ScatterND of the step's rows into the past input
    itself; generate binds both to one OrtValue, which every step writes in place and which ends up
    holding transformers' own cache of the sequence; tokens and logits are
    transformers', sliding windows (GPT-OSS) and keys wider than values (DeepSeek) included."""
    folder, src = exported(model_type, shared_kv_buffer=True)
    manifest = json.loads((folder / "bucketrt.json").read_text())
    assert manifest["kv_cache"] == "shared-buffer" and manifest["options"] == {"shared_kv_buffer": True}
    graph = onnx.load(folder / "model.onnx", load_external_data=False).graph
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.output]
    }
    producer = {v: n for n in graph.node for v in n.output}
    presents = [o.name for o in graph.output if o.name.startswith("present.")]
    assert len(presents) == 2 * COMMON["num_hidden_layers"]
    for present in presents:
        past = "past_key_values." + present[len("present.") :]
        assert dims[present] == dims[past] and dims[past][2] == "buffer_sequence_length", present
        assert producer[present].op_type == "ScatterND" and producer[present].input[0] == past
    assert not any(
        n.op_type == "Concat" and set(n.input) & {"past_key_values." + p[8:] for p in presents} for n in graph.node
    )

    session = bucketrt.ort_session(folder)
    assert decoding.shares_buffer(session)
    # One step against the default export of the same weights: the same bits, whatever the buffer
    # holds past the history (NaN and Inf included).
    concat = bucketrt.ort_session(exported(model_type)[0])
    assert not decoding.shares_buffer(concat)
    rng = np.random.default_rng(0)
    past, new = 9, 3
    mask = np.ones((2, past + new), np.int64)
    mask[1, :4] = 0
    step = {
        "input_ids": rng.integers(4, len(tokenizer), (2, new)),
        "attention_mask": mask,
        "position_ids": np.where(mask == 0, 0, mask.cumsum(-1) - 1)[:, past:],
    }
    grown, shared = dict(step), dict(step)
    for spec in (i for i in concat.get_inputs() if i.name.startswith("past_key_values.")):
        history = rng.standard_normal((2, spec.shape[1], past, spec.shape[3])).astype(np.float32)
        tail = np.full((2, spec.shape[1], new + 5, spec.shape[3]), np.nan, np.float32)
        tail[:, :, ::2] = np.inf
        grown[spec.name], shared[spec.name] = history, np.concatenate([history, tail], axis=2)
    want = dict(zip([o.name for o in concat.get_outputs()], concat.run(None, grown)))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, shared)))
    np.testing.assert_array_equal(got["logits"], want["logits"])
    for name in presents:
        kept = want[name].shape[2]  # a sliding-window layer's: the last of the history
        np.testing.assert_array_equal(got[name][:, :, past + new - kept : past + new], want[name])
        tail = shared["past_key_values." + name[len("present.") :]][:, :, past + new :]
        np.testing.assert_array_equal(got[name][:, :, past + new :], tail)  # as it was
    # A buffer shorter than the mask: ONNX Runtime's error names the buffer and what it must hold.
    short = {k: v[:, :, : past + new - 1] if k.startswith("past_key_values.") else v for k, v in shared.items()}
    written = r"present\.0\.(key|value): the new tokens written into past_key_values\.0\.\1 after"
    with pytest.raises(Exception, match=written) as error:
        session.run(None, short)
    assert "buffer_sequence_length must be at least total_sequence_length" in str(error.value)
    steps, buffers = [], []

    class Recording:
        def __getattr__(self, name):
            return getattr(session, name)

        def run_with_ort_values(self, names, values):
            outputs = session.run_with_ort_values(names, values)
            steps.append([o.data_ptr() for o in outputs[1:]])
            return outputs

        def run_with_iobinding(self, binding):
            session.run_with_iobinding(binding)
            outputs = binding.get_outputs()
            steps.append([o.data_ptr() for o in outputs[1:]])
            buffers[:] = [o.numpy() for o in outputs[1:]]

    batch = tokenizer(PROMPTS, padding=True, return_tensors="np")
    tokens = np.stack(
        list(decoding.iter_causal(Recording(), batch["input_ids"], batch["attention_mask"], max_new_tokens=6)), 1
    )
    # The prompt's step makes the buffers; the 5 steps after it write into them.
    assert len(steps) == 6 and all(step == steps[0] for step in steps)
    hf = _hf(src)
    sequence = np.concatenate([batch["input_ids"], tokens[:, :-1]], axis=1)
    mask = np.concatenate([batch["attention_mask"], np.ones_like(tokens[:, :-1])], axis=1)
    cache = transformers.DynamicCache()
    with torch.no_grad():
        hf(
            input_ids=torch.from_numpy(sequence),
            attention_mask=torch.from_numpy(mask),
            position_ids=torch.from_numpy(np.where(mask == 0, 0, mask.cumsum(-1) - 1)),
            cache=cache,
            use_cache=True,
        )
    total = sequence.shape[1]
    assert buffers[0].shape[2] == total  # room for the prompt and the tokens run
    for i, layer in enumerate(cache.layers):  # transformers' cache (a window's: its last tokens)
        for kind, theirs in (("key", layer.keys.numpy()), ("value", layer.values.numpy())):
            ours = buffers[presents.index(f"present.{i}.{kind}")]
            np.testing.assert_allclose(ours[:, :, total - theirs.shape[2] :], theirs, atol=1e-5, rtol=1e-5)

    ort = bucketrt.ORTModelForCausalLM.from_pretrained(folder)
    for prompts in (PROMPTS[:1], PROMPTS):
        batch = tokenizer(prompts, padding=True, return_tensors="pt")
        ours = ort.generate(**batch, max_new_tokens=STEPS)
        with torch.no_grad():
            theirs = hf.generate(**batch, max_new_tokens=STEPS, do_sample=False)
        assert ours.tolist() == theirs.tolist(), (prompts, ours[:, -STEPS:], theirs[:, -STEPS:])
    logits = ort(**batch).logits
    with torch.no_grad():
        want = hf(**batch).logits
    torch.testing.assert_close(
        logits[batch["attention_mask"].bool()], want[batch["attention_mask"].bool()], atol=1e-4, rtol=1e-4
    )
    report = check(folder, batch_size=2, sequence_length=24)
    assert report.passed, report.to_json()
    assert report.components[0].inputs["past_key_values.0.key"][2] == 24 + 6  # a tail past the mask


def test_a_shared_kv_buffer_quantizes_and_the_check_generates_with_the_reference(tmp_path):
    """`bucketrt quantize` keeps each present a ScatterND into its own past, and the check's greedy
    comparison (a quantized export's) drives the PyTorch reference through the same buffers."""
    from bucketrt.quantization import quantize

    # The preset test_topk_experts_int8 quantizes (this module's configs' large random weights put
    # int8 at the edge of its criteria, where the check's random draws decide, whichever the cache).
    export("mixtral-tiny", tmp_path / "fp32", options={"shared_kv_buffer": True})
    quantize(tmp_path / "fp32", tmp_path / "int8")
    graph = onnx.load(tmp_path / "int8" / "model.onnx", load_external_data=False).graph
    producer = {v: n for n in graph.node for v in n.output}
    for output in graph.output[1:]:
        node = producer[output.name]
        assert node.op_type == "ScatterND" and node.input[0] == "past_key_values." + output.name[len("present.") :]
    reference = load_reference(tmp_path / "int8")
    assert decoding.shares_buffer(ReferenceSession(reference, reference.manifest["components"][0]))
    report = check(tmp_path / "int8")
    assert report.passed and report.generation is not None and report.generation.tokens == 16, report


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_onnx_runtime_passes_the_check_with_a_routing_audit_per_layer(exported, model_type):
    folder, _ = exported(model_type)
    report = check(folder, batch_size=2, sequence_length=24)
    assert report.passed, report.to_json()
    (component,) = report.components
    assert component.inputs["attention_mask"] == [2, 24] and component.inputs["input_ids"] == [2, 6]
    routing = component.routing
    assert routing is not None and routing.complete and routing.calls == MOE_LAYERS[model_type]
    assert [layer.layer for layer in routing.layers] == list(range(MOE_LAYERS[model_type]))
    assert all(layer.op == "TopKExperts" and layer.tokens == 12 for layer in routing.layers)
    assert routing.differing == sum(layer.differing for layer in routing.layers)
    assert report.to_dict()["components"][0]["routing"]["layers"][0]["tokens"] == 12


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_generate_is_transformers_greedy_generate(exported, model_type, tokenizer):
    folder, src = exported(model_type)
    ort = bucketrt.ORTModelForCausalLM.from_pretrained(folder)
    hf = _hf(src)
    for prompts in (PROMPTS[:1], PROMPTS):
        batch = tokenizer(prompts, padding=True, return_tensors="pt")
        if len(prompts) > 1:
            assert (batch["attention_mask"] == 0).any()  # left padding
        ours = ort.generate(**batch, max_new_tokens=STEPS)
        with torch.no_grad():
            theirs = hf.generate(**batch, max_new_tokens=STEPS, do_sample=False)
        assert isinstance(ours, torch.Tensor)
        assert ours.tolist() == theirs.tolist(), (prompts, ours[:, -STEPS:], theirs[:, -STEPS:])
        assert len(set(ours[0, -STEPS:].tolist())) > 1  # not one token repeated
    # forward: the whole sequence's logits, as transformers' model gives them
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    logits = ort(**batch).logits
    with torch.no_grad():
        want = hf(**batch).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[mask], want[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_logits_to_keep_is_an_optional_input_and_the_prompt_step_feeds_one(exported, tokenizer, model_type):
    """The export's optional `logits_to_keep` (default 0, every position) gives the last positions'
    logits; the manifest lists it; generation feeds 1 to the prompt's step, so that the LM head runs
    over one position per row there. The last layer runs its attention's queries, output projection
    and experts over the kept positions only (exporter/logits_to_keep.py): its products over fewer
    rows may round differently, so the logits agree within float32 rounding, and the cache, made
    before the cut, exactly."""
    folder, _ = exported(model_type)
    manifest = json.loads((folder / "bucketrt.json").read_text())
    (entry,) = manifest["components"]
    assert entry["optional_inputs"] == [{"name": "logits_to_keep", "dtype": "int64", "shape": [], "default": 0}]
    assert "logits_to_keep" not in {i["name"] for i in entry["inputs"]}
    graph = onnx.load(folder / "model.onnx", load_external_data=False).graph
    attention = [n for n in graph.node if n.op_type == "MaskedAttention"]
    experts = [n for n in graph.node if n.op_type == "TopKExperts"]
    sliced = {v for n in graph.node if n.op_type == "Slice" and n.name.startswith("logits_to_keep") for v in n.output}
    producer = {v: n for n in graph.node for v in n.output}

    def through_the_cut(value: str) -> bool:
        seen, stack = set(), [value]
        while stack:
            v = stack.pop()
            if v in sliced:
                return True
            if v not in seen and v in producer:
                seen.add(v)
                stack.extend(producer[v].input)
        return False

    # The cut: the last attention's query and mask are sliced, and the last experts' rows come
    # through it; no earlier layer's.
    assert attention[-1].input[0] in sliced and attention[-1].input[3] in sliced
    assert through_the_cut(experts[-1].input[0])
    assert not any(through_the_cut(v) for n in attention[:-1] + experts[:-1] for v in n.input)
    session = bucketrt.ort_session(folder)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="np")
    feeds = decoding.first_step_feeds(session, batch["input_ids"], batch["attention_mask"])
    names = [o.name for o in session.get_outputs()]
    every = dict(zip(names, session.run(None, feeds)))
    length = every["logits"].shape[1]
    assert length == batch["input_ids"].shape[1]
    for keep in (0, 1, 3, length, length + 5):
        kept = dict(zip(names, session.run(None, {**feeds, "logits_to_keep": np.array(keep, dtype=np.int64)})))
        want = every["logits"][:, -keep:] if 0 < keep <= length else every["logits"]
        assert kept["logits"].shape == want.shape, keep
        np.testing.assert_allclose(kept["logits"], want, rtol=1e-5, atol=1e-5, err_msg=f"logits_to_keep={keep}")
        for name in names[1:]:
            np.testing.assert_array_equal(kept[name], every[name], err_msg=f"{name}, logits_to_keep={keep}")

    fed = []

    class Recording:
        def __getattr__(self, name):
            return getattr(session, name)

        def run_with_ort_values(self, names, values):
            fed.append(values.get("logits_to_keep"))
            out = session.run_with_ort_values(names, values)
            fed[-1] = (None if fed[-1] is None else int(fed[-1].numpy()), out[0].shape())
            return out

    tokens = list(decoding.iter_causal(Recording(), batch["input_ids"], batch["attention_mask"], max_new_tokens=3))
    assert len(tokens) == 3
    rows = len(PROMPTS)
    vocab = every["logits"].shape[2]
    assert fed == [(1, [rows, 1, vocab]), (None, [rows, 1, vocab]), (None, [rows, 1, vocab])]


def test_text_generation_pipeline_is_transformers(exported, tokenizer):
    """bucketrt.pipeline on the export folder (its own tokenizer) writes what transformers' pipeline
    writes with the PyTorch model, for one prompt and a padded batch."""
    folder, src = exported("mixtral")
    ours = bucketrt.pipeline("text-generation", folder)
    theirs = transformers.pipeline("text-generation", model=_hf(src), tokenizer=tokenizer)
    for prompts, kwargs in ((PROMPTS[0], {}), (PROMPTS, {"batch_size": len(PROMPTS)})):
        got = ours(prompts, max_new_tokens=STEPS, do_sample=False, **kwargs)
        want = theirs(prompts, max_new_tokens=STEPS, do_sample=False, **kwargs)
        assert got == want
        first = got[0] if isinstance(prompts, str) else got[0][0]
        assert first["generated_text"].startswith(PROMPTS[0]) and len(first["generated_text"]) > len(PROMPTS[0])


@pytest.mark.parametrize(
    ("model_type", "task", "head"),
    [
        ("qwen2_moe", "feature-extraction", transformers.AutoModel),
        ("qwen2_moe", "text-classification", transformers.AutoModelForSequenceClassification),
        ("gpt_oss", "text-classification", transformers.AutoModelForSequenceClassification),
    ],
)
def test_heads_without_a_cache(exported, tokenizer, model_type, task, head):
    folder, src = exported(model_type, task)
    report = check(folder, batch_size=2, sequence_length=16)
    assert report.passed, report.to_json()
    assert report.components[0].routing.calls == MOE_LAYERS[model_type]
    model = bucketrt.ORTModel.from_pretrained(folder)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    name = "last_hidden_state" if task == "feature-extraction" else "logits"
    with torch.no_grad():
        want = getattr(_hf(src, head)(**batch), name)
    got = getattr(model(**batch), name)
    if task == "feature-extraction":
        mask = batch["attention_mask"].bool()
        got, want = got[mask], want[mask]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_cli_exports_a_folder_and_checks_it_with_the_routing_table(tmp_path, source):
    from bucketrt.cli.main import main

    src = source("mixtral")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", "--model", str(src), str(out)])
    assert result.exit_code == 0, result.output
    assert "text-generation" in result.output and "TopKExperts" in result.output
    result = CliRunner().invoke(main, ["check", str(out), "--sequence-length", "16"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "routing" in result.output and "per layer (differing/tokens): 0: " in result.output
    result = CliRunner().invoke(main, ["check", str(out), "--sequence-length", "16", "--json", "-"])
    routing = json.loads(result.output)["components"][0]["routing"]
    assert [layer["layer"] for layer in routing["layers"]] == [0, 1]


def test_exports_past_the_protobuf_limit_use_external_data(tmp_path, source, tokenizer, monkeypatch):
    """Above 2 GB an export writes its weights to model.onnx.data; here the limit is lowered."""
    from bucketrt.exporter import onnx_export

    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_BYTES", 1)
    out = tmp_path / "out"
    export(str(source("qwen3_moe")), out)
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    assert check(out, batch_size=2, sequence_length=12).passed
    batch = tokenizer(PROMPTS, padding=True, return_tensors="np")
    assert bucketrt.ORTModelForCausalLM.from_pretrained(out).generate(**batch, max_new_tokens=3).shape[1] > 3


def test_the_check_inputs_are_the_familys(exported):
    folder, _ = exported("mixtral")
    manifest = json.loads((folder / "bucketrt.json").read_text())
    feeds = make_inputs(manifest, batch_size=3, sequence_length=20)
    assert feeds["attention_mask"].shape == (3, 20) and feeds["input_ids"].shape == (3, 5)
    assert feeds["past_key_values.1.value"].shape == (3, 2, 15, 8)


def test_cli_bench_times_prefill_and_decode_of_a_cached_export(exported, tmp_path):
    """`bucketrt bench` on a text-generation export times the generation (bucketrt.benchmarking's
    bench_generation, which benchmarks/moe.py uses too), not a forward pass against PyTorch."""
    from bucketrt.cli.main import main

    folder, _ = exported("mixtral")
    figure = tmp_path / "moe.png"
    args = [
        "bench",
        str(folder),
        "--sequence-lengths",
        "4,9",
        "--batch-size",
        "2",
        "--new-tokens",
        "3",
        "--repeat",
        "1",
    ]
    result = CliRunner().invoke(main, [*args, "--plot", str(figure)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "decode tokens/s" in result.output and "prefill ms" in result.output
    rows = [line for line in result.output.splitlines() if line.strip().startswith("prompt ")]
    assert [row.split(":")[0].strip() for row in rows] == ["prompt 4", "prompt 9"]
    assert figure.stat().st_size > 0


def test_time_generation_counts_every_row_and_step(exported):
    from bucketrt.benchmarking import time_generation

    folder, _ = exported("mixtral")
    session = bucketrt.ort_session(folder)
    timing = time_generation(session, np.ones((3, 5), np.int64), new_tokens=4, repeat=2)
    assert (timing.batch_size, timing.prompt_length, timing.new_tokens) == (3, 5, 4)
    assert timing.prefill.runs == timing.step.runs == 2
    assert timing.tokens_per_s == pytest.approx(3 / timing.step.median_s)
    prefill_only = time_generation(session, np.ones((1, 5), np.int64), new_tokens=1, repeat=1)
    assert prefill_only.step is None and prefill_only.tokens_per_s is None


def test_cli_bench_refuses_prompts_that_generate_past_the_exports_limit(exported):
    from bucketrt.cli.main import main

    folder, _ = exported("mixtral")  # max_position_embeddings 256
    args = ["bench", str(folder), "--sequence-lengths", "250", "--new-tokens", "10"]
    result = CliRunner().invoke(main, args, terminal_width=200)
    assert result.exit_code != 0
    assert "plus --new-tokens 10 exceeds the export's longest sequence, 256" in result.output
