"""NLLB-MoE (the nllb_moe family) against transformers' own NllbMoeForConditionalGeneration.

Quick: the router's tensor code against transformers' NllbMoeTop2Router, decision for decision,
under every eval-mode setting (capacity drops, batch-prioritized places, normalization before
dropping, padding), and the patched model (TopKExperts' PyTorch reference) against the unpatched one.

Slow: a tiny random model saved with save_pretrained beside a local tokenizer, exported from the
folder by the CLI (which picks the family from config.json), checked in ONNX Runtime with the
routing audit, generating token for token what transformers' greedy generate does, also served
through `bucketrt triton`'s Python-backend model; and a model whose experts overflow (capacity
fraction 0.25) compared logit for logit.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys

import numpy as np
import onnx
import pytest
import torch
import transformers
from click.testing import CliRunner

import bucketrt
from bucketrt.check import check
from bucketrt.errors import BucketrtError
from bucketrt.exporter import export
from bucketrt.exporter.families import nllb_moe

WORDS = (
    "the a river stone light north house sings under over quiet storm garden city bridge old new red blue green "
    "small large early late runs walks reads writes opens closes paper window road train ship bird tree winter"
).split()
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # NLLB's ids: bos 0, pad 1, eos 2, unk 3
PROMPTS = ["the old bridge over the quiet river", "a bird sings", "the small train runs over the long road early"]
STEPS = 12
TOL = 1e-4


def _config(**changes):
    values = dict(
        vocab_size=len(SPECIALS) + len(WORDS),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_sparse_step=2,  # the second layer of each stack is sparse
        decoder_sparse_step=2,
        num_experts=4,
        max_position_embeddings=64,
        # large random weights and an untied head, so that greedy decoding does not repeat one token
        init_std=0.5,
        tie_word_embeddings=False,
    )
    values.update(changes)
    return transformers.NllbMoeConfig(**values)


# -- quick: the router and the patched layers ---------------------------------------------------------

ROUTINGS = {
    "default": {},  # capacity fraction 1.0: nothing is ever dropped
    "dropping": dict(moe_eval_capacity_token_fraction=0.3),
    "prioritized": dict(moe_eval_capacity_token_fraction=0.3, batch_prioritized_routing=True),
    "normalize-first": dict(moe_eval_capacity_token_fraction=0.2, normalize_router_prob_before_dropping=True),
    "fixed-capacity": dict(moe_eval_capacity_token_fraction=0.0, expert_capacity=2, batch_prioritized_routing=True),
    "padding-routed": dict(moe_eval_capacity_token_fraction=0.3, router_ignore_padding_tokens=True),
}


def _padding_mask(batch: int, length: int, padded: int) -> torch.Tensor:
    """The 4-D additive mask transformers' encoder gives its layers: the last row's last keys masked."""
    mask = torch.zeros(batch, 1, length, length)
    mask[-1, :, :, length - padded :] = torch.finfo(torch.float32).min
    return mask


@pytest.mark.parametrize("name", list(ROUTINGS))
def test_router_decisions_are_transformers(name):
    from transformers.models.nllb_moe.modeling_nllb_moe import NllbMoeTop2Router

    config = _config(num_experts=6, **ROUTINGS[name])
    torch.manual_seed(1)
    router = NllbMoeTop2Router(config).eval()
    batch, length, padded = 3, 11, 4
    hidden = torch.randn(batch * length, config.d_model)
    if not config.batch_prioritized_routing:
        # Equal tokens: the same experts, queued in token order. (Batch-prioritized routing orders
        # equal top probabilities by token index, transformers by its unstable argsort: docs/moe.md.)
        hidden[5:9] = hidden[4]
    mask = _padding_mask(batch, length, padded)
    with torch.no_grad():
        (top1, top2), (kept1, kept2), (p1, p2) = nllb_moe.route(router, hidden, mask)
        want_mask, want_probs, _ = router(hidden, mask)
    experts = config.num_experts
    first = torch.nn.functional.one_hot(top1, experts) * kept1[:, None]
    probs = p1[:, None] * first + p2[:, None] * torch.nn.functional.one_hot(top2, experts) * kept2[:, None]
    assert torch.equal(first, want_mask)
    assert torch.equal(probs, want_probs)
    pads = torch.zeros(batch, length, dtype=torch.bool)
    pads[-1, length - padded :] = True
    pads = pads.reshape(-1)
    if name == "padding-routed":
        assert kept1[pads].any()
    else:
        assert not (kept1[pads] | kept2[pads]).any()
    dropped = (~kept1 | ~kept2)[~pads]
    assert bool(dropped.any()) == (name != "default"), dropped


def _pair(**changes):
    torch.manual_seed(0)
    hf = transformers.NllbMoeForConditionalGeneration(_config(**changes)).eval()
    patched = copy.deepcopy(hf)
    layers, dispatch = nllb_moe.patch_model(patched)
    return hf, patched, layers, dispatch


@pytest.mark.parametrize("name", ["default", "prioritized"])
def test_patched_model_is_transformers(name):
    """The patched model (TopKExperts through its PyTorch reference) against transformers' own, with
    padding, on the encoder, a decoder pass and a cached step."""
    hf, patched, layers, dispatch = _pair(**ROUTINGS[name])
    assert layers == 2
    # transformers 5.x runs expert 1 for every first pick and expert 0 for every second one (see
    # nllb_moe's docstring); the export follows what the installed transformers computes.
    assert dispatch == (nllb_moe.ONE_HOT_SLOTS if transformers.__version__ >= "5" else nllb_moe.PICKED)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(4, hf.config.vocab_size, (3, 15), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, 10:] = 0
    ids[-1, 10:] = hf.config.pad_token_id
    decoder_ids = torch.randint(4, hf.config.vocab_size, (3, 6), generator=gen)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids)
        got = patched(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids)
    real = mask.bool()
    encoder_error = (got.encoder_last_hidden_state - want.encoder_last_hidden_state)[real].abs().max()
    assert float(encoder_error) <= 1e-5
    assert float((got.logits - want.logits).abs().max()) <= 1e-5
    assert float(want.logits.abs().max()) > 0.1  # not a vanishing output


def test_picked_experts_option_runs_the_routers_picks():
    """--picked-experts: each kept pick runs the expert the router chose, weighted as transformers
    weights it, scaled by 1 - moe_token_dropout (NLLB-MoE's design); computed here expert by expert."""
    from transformers.models.nllb_moe.modeling_nllb_moe import NllbMoeSparseMLP

    torch.manual_seed(0)
    model = transformers.NllbMoeForConditionalGeneration(_config(num_experts=6, **ROUTINGS["dropping"])).eval()
    _, dispatch = nllb_moe.patch_model(model, picked_experts=True)
    assert dispatch == nllb_moe.PICKED
    layer = next(m for m in model.modules() if isinstance(m, NllbMoeSparseMLP))
    hidden = torch.randn(2, 9, model.config.d_model, generator=torch.Generator().manual_seed(5))
    mask = _padding_mask(2, 9, 3)
    with torch.no_grad():
        got = layer(hidden, mask).reshape(18, -1)
        picks, kept, weights = nllb_moe.route(layer.router, hidden.reshape(18, -1), mask)
        want = torch.zeros_like(got)
        for pick, keep, weight in zip(picks, kept, weights):
            for t in range(18):
                if keep[t]:
                    expert = layer.experts[f"expert_{int(pick[t])}"]
                    want[t] += weight[t] * expert(hidden.reshape(18, -1)[t]) * (1 - model.config.moe_token_dropout)
    assert not bool(kept[0].all() and kept[1].all())  # some picks dropped
    assert len(set(picks[0].tolist()) | set(picks[1].tolist())) > 2  # experts beyond 0 and 1 run
    assert float(want.abs().max()) > 0.1
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_dispatch_probe_refuses_experts_it_cannot_tell_apart():
    from transformers.models.nllb_moe.modeling_nllb_moe import NllbMoeSparseMLP

    torch.manual_seed(0)
    model = transformers.NllbMoeForConditionalGeneration(_config()).eval()
    layer = next(m for m in model.modules() if isinstance(m, NllbMoeSparseMLP))
    layer.experts["expert_1"].load_state_dict(layer.experts["expert_0"].state_dict())
    with pytest.raises(BucketrtError, match="cannot tell") as info:
        nllb_moe.patch_model(copy.deepcopy(model))
    assert "--picked-experts" in info.value.hint
    assert nllb_moe.patch_model(model, picked_experts=True) == (2, nllb_moe.PICKED)


@pytest.mark.parametrize(
    "change,words",
    [
        ({"second_expert_policy": "random"}, "random numbers"),
        ({"router_dtype": "bfloat16"}, "router_dtype"),
        ({"activation_function": "prelu"}, "supported"),
    ],
)
def test_unsupported_configs_are_clear_errors(change, words):
    with pytest.raises(BucketrtError, match="not supported") as info:
        export("nllb-moe-tiny", "/nonexistent/never-written", config_overrides=change)
    assert words in str(info.value) + str(getattr(info.value, "hint", "")), str(info.value)


@pytest.mark.slow
def test_fp16_is_refused_with_the_reason(tmp_path):
    with pytest.raises(BucketrtError, match="does not export in fp16") as info:
        export("nllb-moe-tiny", tmp_path / "out", dtype="fp16")
    assert "Python branch on values" in str(info.value.hint)


# -- slow: whole exports -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory, tokenizer):
    @functools.cache
    def make(**changes):
        torch.manual_seed(2)  # a seed whose greedy answers vary (random decoders tend to repeat one token)
        model = transformers.NllbMoeForConditionalGeneration(_config(**changes)).eval()
        folder = tmp_path_factory.mktemp("nllb-moe-src")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return make


@pytest.fixture(scope="module")
def exported(tmp_path_factory, source):
    """The CLI's export of a saved model folder: the family from config.json, the default task."""
    from bucketrt.cli.main import main

    src = source()
    out = tmp_path_factory.mktemp("nllb-moe-export")
    result = CliRunner().invoke(main, ["export", "--model", str(src), str(out)])
    assert result.exit_code == 0, result.output
    assert "text2text-generation" in result.output and "TopKExperts" in result.output
    return out, src


def _hf(src):
    return transformers.NllbMoeForConditionalGeneration.from_pretrained(src).eval()


@pytest.mark.slow
def test_three_components_with_one_topk_experts_node_per_sparse_layer(exported):
    folder, _ = exported
    manifest = json.loads((folder / "bucketrt.json").read_text())
    assert manifest["family"] == "nllb_moe" and manifest["model_class"] == "NllbMoeForConditionalGeneration"
    assert [c["name"] for c in manifest["components"]] == ["encoder_model", "decoder_model", "decoder_with_past_model"]
    assert {op["name"] for op in manifest["ops"]} == {"TopKExperts"}
    assert manifest["moe"]["sparse_layers"] == 2 and manifest["moe"]["top_k"] == 2
    for component in manifest["components"]:
        model = onnx.load(str(folder / f"{component['name']}.onnx"))
        nodes = list(model.graph.node)
        ours = [n for n in nodes if n.domain == "bucketrt"]
        assert [n.op_type for n in ours] == ["TopKExperts"], component["name"]  # one sparse layer per stack
        assert not {n.op_type for n in nodes} & {"Loop", "Scan", "If", "NonZero"}
        initializers = {i.name: i for i in model.graph.initializer}
        for name in ours[0].input[3:7]:  # the stacked expert weights, [E, ...]
            assert initializers[name].dims[0] == 4, name


@pytest.mark.slow
def test_generate_is_transformers_greedy_generate(exported, tokenizer):
    folder, src = exported
    ort = bucketrt.ORTModelForSeq2SeqLM.from_pretrained(folder)
    hf = _hf(src)
    for prompts in (PROMPTS[:1], PROMPTS):
        batch = tokenizer(prompts, padding=True, return_tensors="pt")
        if len(prompts) > 1:
            assert (batch["attention_mask"] == 0).any()
        ours = ort.generate(**batch, max_new_tokens=STEPS)
        with torch.no_grad():
            theirs = hf.generate(**batch, max_new_tokens=STEPS, do_sample=False)
        assert ours.tolist() == theirs.tolist(), (prompts, ours, theirs)
        assert theirs.shape[1] == STEPS + 1 and len(set(theirs[0, 1:].tolist())) >= 4  # varied, no early stop
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    decoder_ids = torch.tensor([[2, 5, 6, 7]] * len(PROMPTS))
    logits = ort(**batch, decoder_input_ids=decoder_ids).logits
    with torch.no_grad():
        want = hf(**batch, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(logits, want, atol=TOL, rtol=TOL)


@pytest.mark.slow
def test_check_passes_with_a_routing_audit_per_component(exported):
    folder, _ = exported
    report = check(folder, batch_size=2, sequence_length=24)
    assert report.passed, report.to_json()
    assert [c.name for c in report.components] == ["encoder_model", "decoder_model", "decoder_with_past_model"]
    tokens = {"encoder_model": 48, "decoder_model": 12, "decoder_with_past_model": 2}
    for component in report.components:
        routing = component.routing
        assert routing is not None and routing.complete and routing.calls == 1, component.name
        assert [(layer.op, layer.tokens) for layer in routing.layers] == [("TopKExperts", tokens[component.name])]
        assert routing.differing == 0


@pytest.mark.slow
def test_triton_python_backend_generates_what_the_runtime_does(exported, tmp_path):
    import triton_backend_standin as standin
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as pb2

    from bucketrt.runtime import Seq2SeqGenerator
    from bucketrt.serving import write_repository

    folder, _ = exported
    (entry,) = write_repository(folder, tmp_path, name="nllb", max_new_tokens=8)
    assert entry.mode == "seq2seq"
    model_dir = tmp_path / "nllb"
    sys.modules["triton_python_backend_utils"] = standin
    spec = importlib.util.spec_from_file_location("triton_model_nllb", model_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), pb2.ModelConfig())
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_repository": str(model_dir),
            "model_version": "1",
            "model_instance_kind": "CPU",
            "model_instance_device_id": "0",
            "model_name": "nllb",
        }
    )
    ids = np.array([[5, 9, 13, 20, 7, 2]], dtype=np.int64)
    (response,) = model.execute([standin.InferenceRequest(input_ids=ids, attention_mask=np.ones_like(ids))])
    assert not response.has_error(), response.error().message()
    got = {t.name(): t.result() for t in response.output_tensors()}["output_ids"]
    expected = Seq2SeqGenerator(folder).generate(ids, np.ones_like(ids), max_new_tokens=8)
    assert got.tolist() == expected.tolist() and got.shape[1] == 9


@pytest.mark.slow
def test_overflowing_experts_match_transformers(source, tokenizer, tmp_path):
    """Capacity fraction 0.25 with batch-prioritized routing, so that picks are dropped: the encoder
    alone (feature-extraction-encoder: the ONNX router's places and capacity), against the encoder of
    transformers' model from the same folder."""
    from transformers.models.nllb_moe.modeling_nllb_moe import NllbMoeTop2Router

    src = source(moe_eval_capacity_token_fraction=0.25, batch_prioritized_routing=True)
    manifest = export(str(src), tmp_path, task="feature-extraction-encoder")
    assert [c["name"] for c in manifest["components"]] == ["model"]
    assert manifest["model_class"] == "NllbMoeModel"
    hf = _hf(src)
    dropped = []

    def hook(module, args, output):
        dropped.append(int((output[0].sum(-1) == 0).sum()))

    (router,) = [m for m in hf.model.encoder.modules() if isinstance(m, NllbMoeTop2Router)]
    handle = router.register_forward_hook(hook)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = hf.model.encoder(**batch).last_hidden_state.numpy()
    handle.remove()
    padding = int((batch["attention_mask"] == 0).sum())
    assert dropped[0] > padding, dropped  # first picks dropped beyond the padding tokens'
    (got,) = bucketrt.ort_session(tmp_path / "model.onnx").run(None, {k: v.numpy() for k, v in batch.items()})
    error = float(np.abs(got - want).max())
    print(f"encoder with capacity drops: max abs {error:.2e}")
    assert error <= TOL, error


@pytest.mark.slow
def test_picked_experts_export_matches_its_reference(source, tokenizer, tmp_path):
    """--picked-experts with overflowing experts, the encoder alone: ONNX Runtime against the patched
    PyTorch model (transformers 5.x itself has no such mode to compare with)."""
    src = source(moe_eval_capacity_token_fraction=0.25, batch_prioritized_routing=True)
    manifest = export(str(src), tmp_path, task="feature-extraction-encoder", options={"picked_experts": True})
    assert manifest["moe"]["expert_dispatch"] == nllb_moe.PICKED and manifest["options"] == {"picked_experts": True}
    reference = transformers.NllbMoeModel.from_pretrained(src).eval()
    nllb_moe.patch_model(reference, picked_experts=True)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = reference.encoder(**batch).last_hidden_state.numpy()
        transformers_own = _hf(src).model.encoder(**batch).last_hidden_state.numpy()
    (got,) = bucketrt.ort_session(tmp_path / "model.onnx").run(None, {k: v.numpy() for k, v in batch.items()})
    assert float(np.abs(got - want).max()) <= TOL
    assert float(np.abs(got - transformers_own).max()) > 1e-2  # other experts ran
