"""bucketrt.runtime: export folders used like transformers models (ORTModel classes, generate,
pipelines), each checked against the same computation on the PyTorch model with the same weights.

The models are tiny and random; their tokenizer is trained here with the `tokenizers` library and
saved into the source folder, so the export copies it (no download). YOSO runs in LSH mode, which
Hugging Face computes only with its CUDA kernel: its PyTorch side is the export's reference
(`load_reference`: the HF model with the same weights, its attention on bucketrt's PyTorch
references and the same projections). Reformer (hash_seed set) and Switch compare with Hugging
Face's own, unpatched from_pretrained of the source folder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bucketrt
from bucketrt.errors import BucketrtError
from bucketrt.exporter import export, load_reference
from bucketrt.exporter.family import family_named

TOL = 1e-4
WORDS = (
    "the a river stone light north house sings under over quiet storm garden city bridge old new "
    "red blue green small large early late runs walks reads writes opens closes paper window road "
    "train ship bird tree winter summer morning evening"
).split()
# YOSO's task table, from the family.
YOSO_TASKS = tuple(family_named("yoso").tasks)
YOSO_CLASSES = {name: task.model_class for name, task in family_named("yoso").tasks.items()}
TEXT = "the old bridge over the quiet river"
CONTEXT = "the small bird sings in the garden every morning while the old train runs over the bridge"


@pytest.fixture(scope="module")
def tokenizer():
    """A WordPiece tokenizer over WORDS and the letters, as a PreTrainedTokenizerFast. The vocabulary
    is written out rather than trained: tokenizers' WordPieceTrainer orders equal-count pieces
    differently from one process to the next, which changed the token ids, hence the inputs the
    random models see, from run to run."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase)
    pieces = specials + letters + ["##" + c for c in letters] + sorted(set(WORDS) - set(letters))
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(s, specials.index(s)) for s in specials[2:4]],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _save(folder, model, tokenizer):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def yoso(tmp_path_factory, tokenizer):
    """Per task: the export folder and its PyTorch reference model (same weights, same hashing)."""
    import transformers

    from bucketrt.exporter.presets import PRESETS

    values = dict(
        PRESETS["yoso-tiny"].config,
        vocab_size=len(tokenizer),
        num_labels=3,
        pad_token_id=0,
        type_vocab_size=2,
        num_hidden_layers=1,
    )
    out = {}
    for i, task in enumerate(YOSO_TASKS):
        torch.manual_seed(i)
        model = getattr(transformers, YOSO_CLASSES[task])(transformers.YosoConfig(**values)).eval()
        source = _save(tmp_path_factory.mktemp(f"yoso-src-{i}"), model, tokenizer)
        folder = tmp_path_factory.mktemp(f"yoso-{i}")
        export(str(source), folder, task=task, seed=3)
        out[task] = (folder, load_reference(folder).model.eval())
    return out


@pytest.fixture(scope="module")
def reformer(tmp_path_factory, tokenizer):
    import transformers

    from bucketrt.exporter.presets import PRESETS

    config = transformers.ReformerConfig(
        **dict(PRESETS["reformer-tiny"].config, vocab_size=len(tokenizer), hash_seed=5, eos_token_id=3, pad_token_id=0)
    )
    torch.manual_seed(0)
    source = _save(
        tmp_path_factory.mktemp("reformer-src"), transformers.ReformerModelWithLMHead(config).eval(), tokenizer
    )
    folder = tmp_path_factory.mktemp("reformer")
    export(str(source), folder, task="text-generation")
    return folder, transformers.ReformerModelWithLMHead.from_pretrained(source).eval()


@pytest.fixture(scope="module")
def switch(tmp_path_factory, tokenizer):
    import transformers

    config = transformers.SwitchTransformersConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_heads=4,
        num_layers=1,  # one layer per stack, a mixture of experts: the smallest graph with every op
        num_decoder_layers=1,
        num_sparse_encoder_layers=1,
        num_sparse_decoder_layers=1,
        num_experts=4,
        expert_capacity=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=3,
        # untied head and gelu: random weights then decode varied tokens (tied ones repeat one)
        dense_act_fn="gelu_new",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.SwitchTransformersForConditionalGeneration(config).eval()
    source = _save(tmp_path_factory.mktemp("switch-src"), model, tokenizer)
    folder = tmp_path_factory.mktemp("switch")
    export(str(source), folder, task="text2text-generation")
    return folder, transformers.SwitchTransformersForConditionalGeneration.from_pretrained(source).eval()


# -- the export folder holds what a deployment reads ---------------------------------------------------


def test_export_folder_is_self_contained(yoso, reformer, switch, tokenizer):
    folder, _ = yoso["text-classification"]
    manifest = json.loads((folder / "bucketrt.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["YosoForSequenceClassification"] and len(config["id2label"]) == 3
    assert manifest["files"]["generation_config"] is None and not (folder / "generation_config.json").exists()
    assert "tokenizer.json" in manifest["files"]["tokenizer"] and manifest["no_tokenizer"] is None
    from transformers import AutoTokenizer

    copied = AutoTokenizer.from_pretrained(str(folder))
    assert copied(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]
    for gen_folder, _ in (reformer, switch):
        assert json.loads((gen_folder / "generation_config.json").read_text())["eos_token_id"] == 3


def test_preset_export_says_it_has_no_tokenizer(tmp_path, monkeypatch, reformer):
    """A preset has no tokenizer: the export writes none and its summary says so; the folder
    still loads (config.json), and a pipeline over it asks for a tokenizer."""
    import shutil

    from click.testing import CliRunner

    import bucketrt.exporter
    from bucketrt.cli.main import main
    from bucketrt.exporter.sources import PresetSource

    assert PresetSource("reformer-tiny").save_tokenizer(tmp_path) == ([], "preset reformer-tiny has no tokenizer")
    assert not list(tmp_path.iterdir())
    # The reformer export as a preset would have written it (no tokenizer files), for the CLI summary.
    folder = shutil.copytree(reformer[0], tmp_path / "r", ignore=shutil.ignore_patterns("tokenizer*", "special*"))
    manifest = json.loads((folder / "bucketrt.json").read_text())
    manifest["files"]["tokenizer"], manifest["no_tokenizer"] = [], "preset reformer-tiny has no tokenizer"
    (folder / "bucketrt.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(bucketrt.exporter, "export", lambda *args, **kwargs: manifest)
    result = CliRunner().invoke(main, ["export", "--model", "reformer-tiny", str(folder)])
    assert result.exit_code == 0, result.output
    assert "no tokenizer: preset reformer-tiny has no tokenizer" in " ".join(result.output.split())
    assert "beside them: config.json, generation_config.json" in result.output
    model = bucketrt.ORTModel.from_pretrained(folder)
    assert type(model).__name__ == "ORTModelForCausalLM" and model.config.is_decoder
    with pytest.raises(BucketrtError, match="has no tokenizer"):
        bucketrt.pipeline(model=folder)


# -- the classes ---------------------------------------------------------------------------------


def _inputs(tokenizer, task):
    if task == "multiple-choice":
        enc = tokenizer([TEXT, TEXT], ["the red ship", "a quiet storm"], return_tensors="pt", padding=True)
        return {k: v[None] for k, v in enc.items()}
    if task == "question-answering":
        return dict(tokenizer("where does the bird sing", CONTEXT, return_tensors="pt"))
    return dict(tokenizer([TEXT, "a small red house"], return_tensors="pt", padding=True))


@pytest.mark.parametrize("task", YOSO_TASKS)
def test_classes_match_pytorch(yoso, tokenizer, task):
    folder, reference = yoso[task]
    model = bucketrt.ORTModel.from_pretrained(folder)
    cls = getattr(bucketrt, f"ORTModelFor{type(model).__name__[len('ORTModelFor') :]}")
    assert type(model) is cls and cls.from_pretrained(folder).task == task
    inputs = _inputs(tokenizer, task)
    with torch.no_grad():
        expected = reference(**inputs)
    got = model(**inputs)
    got_np = model(**{k: v.numpy() for k, v in inputs.items()})
    assert type(got) is type(got_np) and type(got).__name__ in type(expected).__name__ + str(type(expected).__mro__)
    assert list(got.keys()) and set(got.keys()) <= set(expected.keys())
    for name in got.keys():
        assert isinstance(got[name], torch.Tensor) and isinstance(got_np[name], np.ndarray)
        assert got[name].shape == expected[name].shape
        np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), atol=TOL, rtol=0)
        np.testing.assert_array_equal(got_np[name], got[name].numpy())
    assert model.config.num_labels == reference.config.num_labels


def test_wrong_class_is_one_clear_error(yoso, switch):
    folder, _ = yoso["fill-mask"]
    with pytest.raises(
        BucketrtError, match="is a fill-mask export, which ORTModelForSequenceClassification does not run"
    ):
        bucketrt.ORTModelForSequenceClassification.from_pretrained(folder)
    with pytest.raises(BucketrtError, match="ORTModelForMaskedLM"):
        bucketrt.ORTModelForSeq2SeqLM.from_pretrained(folder)
    model = bucketrt.ORTModel.from_pretrained(folder)
    with pytest.raises(BucketrtError, match="got labels"):
        model(input_ids=np.ones((1, 4), np.int64), labels=np.ones((1, 4), np.int64))
    seq2seq = bucketrt.ORTModel.from_pretrained(switch[0])
    with pytest.raises(BucketrtError, match="greedily only; not supported: do_sample"):
        seq2seq.generate(np.ones((1, 4), np.int64), do_sample=True)
    with pytest.raises(BucketrtError, match="repetition_penalty"):
        seq2seq.generate(np.ones((1, 4), np.int64), repetition_penalty=1.5)


def test_sequences_past_the_exports_limit_are_one_clear_error(yoso, reformer):
    """The manifest's max_sequence_length, enforced before ONNX Runtime runs (where a position
    table's Gather would fail with its own message, or positions would run past the model's)."""
    from bucketrt.export_format.manifest import max_sequence_length, read_manifest

    folder, _ = yoso["fill-mask"]
    limit = max_sequence_length(read_manifest(folder))
    model = bucketrt.ORTModel.from_pretrained(folder)
    assert model(input_ids=np.ones((1, limit), np.int64)).logits.shape[1] == limit
    with pytest.raises(BucketrtError, match=f"input_ids is {limit + 1} tokens long; this export takes at most {limit}"):
        model(input_ids=np.ones((1, limit + 1), np.int64))
    folder, _ = reformer
    limit = max_sequence_length(read_manifest(folder))
    causal = bucketrt.ORTModelForCausalLM.from_pretrained(folder)
    with pytest.raises(BucketrtError, match=f"the prompt \\(9\\) with max_new_tokens \\({limit - 8}\\) is {limit + 1}"):
        causal.generate(np.full((1, 9), 5, np.int64), max_new_tokens=limit - 8)


def test_session_options_and_provider(switch):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    model = bucketrt.ORTModelForSeq2SeqLM.from_pretrained(
        switch[0], provider="CPUExecutionProvider", session_options=options
    )
    assert len(model.sessions) == 3 and model.device.type == "cpu" and model.can_generate()


# -- generate --------------------------------------------------------------------------------------


def test_seq2seq_generate_and_forward_match_transformers(switch, tokenizer):
    folder, hf = switch
    model = bucketrt.ORTModel.from_pretrained(folder)
    enc = tokenizer([TEXT, "a small red house by the road"], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        expected = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12)
        logits = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=expected[:, :5]).logits
    got = model.generate(ids, attention_mask=mask, max_new_tokens=12)
    assert isinstance(got, torch.Tensor) and got.tolist() == expected.tolist()
    assert len(set(expected[0, 1:].tolist())) >= 3, expected  # varied tokens: the test can fail
    out = model(input_ids=ids.numpy(), attention_mask=mask.numpy(), decoder_input_ids=expected[:, :5].numpy())
    np.testing.assert_allclose(out.logits, logits.numpy(), atol=TOL, rtol=0)
    # The former name is a thin alias.
    from bucketrt.runtime import Seq2SeqGenerator

    assert Seq2SeqGenerator(folder).generate(ids.numpy(), mask.numpy(), max_new_tokens=12).tolist() == expected.tolist()


def test_causal_generate_matches_transformers(reformer, tokenizer):
    folder, hf = reformer
    model = bucketrt.ORTModelForCausalLM.from_pretrained(folder)
    ids = tokenizer([TEXT], return_tensors="pt")["input_ids"]  # 9 tokens: 9 + 7 fit one LSH chunk (16)
    with torch.no_grad():
        expected = hf.generate(input_ids=ids, do_sample=False, max_new_tokens=7)
        uncached = hf.generate(input_ids=ids, do_sample=False, max_new_tokens=20, use_cache=False)
    assert model.generate(ids, max_new_tokens=7).tolist() == expected.tolist()
    assert model.generate(ids.numpy(), max_new_tokens=20).tolist() == uncached.tolist()
    assert len(set(uncached[0, ids.shape[1] :].tolist())) >= 3, uncached
    with torch.no_grad():
        logits = hf(input_ids=ids).logits
    np.testing.assert_allclose(model(input_ids=ids).logits.numpy(), logits.numpy(), atol=TOL, rtol=0)


# -- pipelines ---------------------------------------------------------------------------------------


def _close(a, b):
    """Pipeline outputs equal: labels, tokens, spans and strings exactly; floats within TOL."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (a, b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, (float, np.floating)):
        assert abs(a - b) <= TOL, (a, b)
    else:
        assert a == b, (a, b)


@pytest.mark.parametrize(
    "task, export_task, call",
    [
        ("feature-extraction", "feature-extraction", lambda p: p(TEXT)),
        ("fill-mask", "fill-mask", lambda p: p("the old [MASK] over the river", top_k=3)),
        ("text-classification", "text-classification", lambda p: p([TEXT, "a red ship"], top_k=None)),
        ("token-classification", "token-classification", lambda p: p(TEXT)),
        (
            "question-answering",
            "question-answering",
            lambda p: p(question="where does the bird sing", context=CONTEXT, top_k=2),
        ),
    ],
)
def test_pipelines_match_pytorch(yoso, tokenizer, task, export_task, call):
    folder, reference = yoso[export_task]
    ours = call(bucketrt.pipeline(task, model=bucketrt.ORTModel.from_pretrained(folder), tokenizer=tokenizer))
    theirs = call(bucketrt.pipeline(task, model=reference, tokenizer=tokenizer))
    _close(ours, theirs)
    # The folder alone: model, tokenizer and task from the export.
    _close(call(bucketrt.pipeline(model=folder)), theirs)
    if task != "question-answering":  # transformers 5 has no question-answering pipeline
        import transformers

        direct = transformers.pipeline(task, model=bucketrt.ORTModel.from_pretrained(folder), tokenizer=tokenizer)
        _close(call(direct), theirs)
    if task == "token-classification":
        assert all(e["entity"].startswith("LABEL_") for e in ours) and len(ours) > 0


def test_text_generation_pipeline_matches_pytorch(reformer, tokenizer):
    import transformers

    folder, hf = reformer
    kwargs = dict(do_sample=False, max_new_tokens=6)
    theirs = transformers.pipeline("text-generation", model=hf, tokenizer=tokenizer)(TEXT, **kwargs)
    ours = transformers.pipeline(
        "text-generation", model=bucketrt.ORTModel.from_pretrained(folder), tokenizer=tokenizer
    )
    assert ours(TEXT, **kwargs) == theirs and len(theirs[0]["generated_text"]) > len(TEXT)
    assert bucketrt.pipeline(model=folder)(TEXT, **kwargs) == theirs


def test_text2text_generation_pipeline_matches_pytorch(switch, tokenizer):
    folder, hf = switch
    theirs = bucketrt.pipeline("text2text-generation", model=hf, tokenizer=tokenizer)(
        [TEXT, CONTEXT], max_new_tokens=10
    )
    ours = bucketrt.pipeline(model=folder)([TEXT, CONTEXT], max_new_tokens=10)
    assert ours == theirs and all(r[0]["generated_text"] for r in theirs), theirs
