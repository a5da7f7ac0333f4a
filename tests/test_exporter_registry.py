"""The exporter's shared machinery: the family registry, the task table, the one dummy-input
generator, the one fingerprint, family options, the export's sequence limit (manifest and
`bucketrt bench`), and what the runtime and the package's metadata rely on. Small models, no export."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomllib
import torch
from click.testing import CliRunner

from bucketrt.cli.main import main
from bucketrt.errors import BucketrtError
from bucketrt.export_format import manifest
from bucketrt.export_format.tasks import HEADS, task_table
from bucketrt.exporter import family
from bucketrt.exporter.family import Patch, family_named, fingerprint

ROOT = Path(__file__).resolve().parents[1]
# The registered families, in order.
FAMILIES = tuple(f.name for f in family.families())


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(stderr: str, needle: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and needle in lines[0], lines[0]


def tiny_model(name: str, task: str, **config):
    """A random-weight model of a family, built the way the exporter builds presets."""
    fam = family_named(name)
    torch.manual_seed(0)
    built = fam.make_config(config)
    return fam, fam.build_model(fam.get_task(task), built, None).eval()


TINY_REFORMER = dict(
    attention_head_size=8,
    attn_layers=["local", "lsh"],
    axial_pos_embds_dim=[8, 8],
    axial_pos_shape=[4, 8],
    feed_forward_size=32,
    hidden_size=16,
    is_decoder=False,
    local_attn_chunk_length=8,
    lsh_attn_chunk_length=8,
    max_position_embeddings=64,
    num_attention_heads=2,
    num_buckets=4,
    num_hashes=1,
    num_hidden_layers=2,
    vocab_size=64,
    lsh_num_chunks_after=1,
    local_num_chunks_after=1,
)
# An LSG RoBERTa checkpoint's config.json (lsg-converter's fields), tiny.
TINY_LSG_ROBERTA = dict(
    model_type="roberta",
    architectures=["LSGRobertaForMaskedLM"],
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    type_vocab_size=1,
    pad_token_id=1,
    max_position_embeddings=66,
    block_size=8,
    sparse_block_size=8,
    sparsity_factor=2,
    sparsity_type="norm",
    num_global_tokens=1,
    mask_first_token=False,
    pool_with_global=True,
    adaptive=True,
    lsh_num_pre_rounds=1,
)


# -- the registry ------------------------------------------------------------------------------


def test_every_module_of_the_families_package_registers_its_family():
    assert [f.name for f in family.families()] == list(FAMILIES)
    assert {type(f).__module__.rsplit(".", 1)[-1] for f in family.families()} == set(FAMILIES)


def test_a_new_family_module_is_found_without_touching_shared_code(tmp_path, monkeypatch):
    """A module dropped into the families package registers itself: no list to extend."""
    from bucketrt.exporter import families

    (tmp_path / "toy.py").write_text(
        "from bucketrt.exporter.family import Family, register\n"
        "from bucketrt.export_format.tasks import task_table\n\n\n"
        "@register\n"
        "class ToyFamily(Family):\n"
        "    name = 'toy'\n"
        "    model_types = ('toy',)\n"
        "    order = 5\n"
        "    tasks = task_table('Toy', 'feature-extraction', 'fill-mask')\n"
    )
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(tmp_path)])
    family.families()  # bucketrt's own, imported once per process
    monkeypatch.setattr(family, "_REGISTRY", dict(family._REGISTRY))
    monkeypatch.setattr(family, "_discovered", False)
    monkeypatch.delitem(sys.modules, "bucketrt.exporter.families.toy", raising=False)
    try:
        assert [f.name for f in family.families()] == ["toy", *FAMILIES]
        toy = family.family_for({"model_type": "toy"})
        assert toy.name == "toy" and toy.tasks["fill-mask"].model_class == "ToyForMaskedLM"
        with pytest.raises(ValueError, match="needs a name of its own"):
            family.register(type(toy))  # a second family under the same name
    finally:
        sys.modules.pop("bucketrt.exporter.families.toy", None)


def test_the_cli_lists_the_registrys_presets_and_option_flags():
    from bucketrt.exporter.presets import PRESETS

    assert len(FAMILIES) >= 4
    for fam in family.families():
        assert all(p.name == name and p.family == fam.name for name, p in fam.presets.items())
    assert list(PRESETS) == [name for fam in family.families() for name in fam.presets]
    flags = [option for fam in family.families() for option in fam.option_flags]
    assert len(flags) == len(set(flags)), "two families declare a flag for the same option"
    result = CliRunner().invoke(main, ["export", "--help"], terminal_width=1000)  # one line per option
    assert all(name in result.output for name in PRESETS)
    assert all(f"--{option.replace('_', '-')}" in result.output for option in flags)


def _code_strings(path: Path):
    """(line, text) of the string constants of a module's code: docstrings (prose) left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_code_outside_the_families_names_a_family_or_preset():
    """Per-family facts live in the family's module: code elsewhere in the package (the exporter's
    shared modules, serving, check, the CLI, ...) names no family and no preset, so a new family
    never has to be added to a list there. Prose (docstrings, comments, help texts) may."""
    names = {f.name for f in family.families()} | {name for f in family.families() for name in f.presets}
    families_dir = ROOT / "exporter" / "families"
    found = []
    for folder in ("src/bucketrt", "exporter", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(families_dir):
                continue
            found += [
                f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _code_strings(path) if text in names
            ]
    assert not found, "a family's fact outside exporter/families/ (declare it on the family):\n" + "\n".join(found)


_TOY = """
from bucketrt.export_format.tasks import task_table

from ..family import Family, Patch, register
from ..presets import Preset


@register
class ToyFamily(Family):
    name = "toy"
    model_types = ("toy",)
    order = 5
    config_class = "BertConfig"
    tasks = task_table("Bert", "feature-extraction", "fill-mask")
    options = {"shout": False}
    option_flags = {"shout": "Toy: an option with a flag."}
    batch_rows_independent = True
    presets = {
        "toy-tiny": Preset(
            "BERT: 1 layer, hidden 16, random weights",
            {
                "vocab_size": 50,
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "max_position_embeddings": 64,
            },
        ),
    }

    def patch(self, model, task, seed, options):
        return Patch("dense", self.components(model, task), {"shout": options["shout"]})
"""

# Run in a fresh interpreter, so that the CLI is built with the toy family in the package.
_TOY_DRIVER = """
import json, sys
import numpy as np
from click.testing import CliRunner
from bucketrt.exporter import families
families.__path__.append(sys.argv[1])
import bucketrt
from bucketrt.cli.main import main
from bucketrt.exporter import load_reference, make_inputs
from bucketrt.serving import write_repository

out, seen = sys.argv[2], {}
invoke = lambda *args: CliRunner().invoke(main, list(args))
seen["help"] = CliRunner().invoke(main, ["export", "--help"], terminal_width=1000).output
result = invoke("export", "--model", "./no-such-folder", out + "/x")
seen["hint"] = (result.exit_code, result.stderr)
result = invoke("export", "--model", "toy-tiny", out + "/toy", "--shout")
seen["export"] = (result.exit_code, result.output + result.stderr)
manifest = json.load(open(out + "/toy/bucketrt.json"))
seen["manifest"] = {k: manifest[k] for k in ("family", "source_kind", "options", "batch_rows_independent", "shout")}
feeds = make_inputs(manifest, batch_size=2, sequence_length=9)
expected = load_reference(out + "/toy").run(feeds)
session = bucketrt.ort_session(out + "/toy")
got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
seen["max_abs"] = max(float(np.abs(got[k] - expected[k]).max()) for k in expected)
result = invoke("check", out + "/toy")
seen["check"] = (result.exit_code, result.output[-300:])
(entry,) = write_repository(out + "/toy", out + "/repo", max_batch_size=4)
seen["batching"] = entry.batching
print(json.dumps(seen))
"""


def test_a_new_family_touches_its_module_only(tmp_path):
    """family.py's promise: a family module dropped into the families package, with its preset and
    an option with a flag, is listed, exported, rebuilt, checked and served, no shared code touched."""
    (tmp_path / "families").mkdir()
    (tmp_path / "families" / "toy.py").write_text(_TOY)
    (tmp_path / "driver.py").write_text(_TOY_DRIVER)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "families"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "toy-tiny" in seen["help"] and "--shout" in seen["help"] and "an option with a flag" in seen["help"]
    assert seen["hint"][0] == 2 and "use a preset (toy-tiny, yoso-4096" in seen["hint"][1]
    assert seen["export"][0] == 0, seen["export"][1]
    assert "Exported toy-tiny (feature-extraction, dense, shout)" in seen["export"][1]
    assert seen["manifest"] == {
        "family": "toy",
        "source_kind": "preset",
        "options": {"shout": True},
        "batch_rows_independent": True,
        "shout": True,
    }
    assert seen["max_abs"] < 1e-4
    assert seen["check"][0] == 0 and "PASSED" in seen["check"][1], seen["check"][1]
    assert seen["batching"] == "same_shape"


# -- the task table ----------------------------------------------------------------------------


def test_families_name_only_their_class_prefix():
    import transformers

    for fam in family.families():
        for name, task in fam.tasks.items():
            assert task.name == name and task.outputs == HEADS[name].outputs
            assert task.multiple_choice == HEADS[name].multiple_choice
            if fam.name != "lsg":  # LSG's classes are the port's, not transformers'
                assert hasattr(transformers, task.model_class), task.model_class
    assert family_named("reformer").tasks["text-generation"].model_class == "ReformerModelWithLMHead"
    assert family_named("switch").tasks["feature-extraction-encoder"].model_class == "SwitchTransformersEncoderModel"
    assert family_named("yoso").tasks["multiple-choice"].model_class == "YosoForMultipleChoice"
    with pytest.raises(ValueError, match="summarization"):
        task_table("Yoso", "summarization")


# -- one dummy-input generator -----------------------------------------------------------------


def test_tracing_inputs_and_check_inputs_come_from_one_generator():
    yoso = family_named("yoso")
    config = yoso.make_config(dict(vocab_size=50, type_vocab_size=3))
    shapes = {"input_ids": [2, 9], "attention_mask": [2, 9], "token_type_ids": [2, 9]}
    traced = yoso.example_inputs(config, shapes)
    entry = {
        "name": "model",
        "inputs": [{"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in shapes],
    }
    checked = yoso.make_inputs(
        {"config": config.to_dict()},
        entry,
        {"batch_size": 2, "sequence_length": 9},
        np.random.default_rng(0),
        padding=False,
    )
    assert list(traced) == list(checked) == list(shapes)
    for name in shapes:
        assert traced[name].dtype == torch.int64 and np.array_equal(traced[name].numpy(), checked[name])
    assert checked["input_ids"].max() < 50 and checked["token_type_ids"].max() < 3
    assert (checked["attention_mask"] == 1).all()
    padded = yoso.make_inputs(
        {"config": config.to_dict()},
        entry,
        {"batch_size": 2, "sequence_length": 9},
        np.random.default_rng(0),
        padding=True,
    )["attention_mask"]
    assert padded[0].tolist() == [1] * 9 and padded[1].tolist() == [1] * 7 + [0] * 2  # the last quarter


def test_switch_components_are_sized_by_its_input_sizes():
    switch = family_named("switch")
    sizes = {"batch_size": 3, "sequence_length": 40}
    assert switch.input_sizes("encoder_model", sizes)["encoder_sequence_length"] == 40
    assert switch.input_sizes("decoder_model", sizes)["decoder_sequence_length"] == 10
    assert switch.input_sizes("decoder_with_past_model", sizes) == {
        "batch_size": 3,
        "encoder_sequence_length": 40,
        "decoder_sequence_length": 1,
        "past_decoder_sequence_length": 30,
    }
    entry = {
        "name": "decoder_with_past_model",
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "decoder_sequence_length"]},
            {"name": "encoder_attention_mask", "dtype": "int64", "shape": ["batch_size", "encoder_sequence_length"]},
            {
                "name": "past_key_values.0.decoder.key",
                "dtype": "float16",
                "shape": ["batch_size", 2, "past_decoder_sequence_length", 4],
            },
        ],
    }
    feeds = switch.make_inputs({"config": {"vocab_size": 7}}, entry, sizes, np.random.default_rng(1), padding=True)
    assert feeds["input_ids"].shape == (3, 1) and feeds["input_ids"].max() < 7
    assert feeds["encoder_attention_mask"][-1].sum() == 30  # a quarter of the encoder sequence masked
    past = feeds["past_key_values.0.decoder.key"]
    assert past.shape == (3, 2, 30, 4) and past.dtype == np.float32 and past.std() > 0.5  # float32 for the reference


# -- patch: the task in, everything the export needs out; one fingerprint -----------------------


def test_reformer_patch_returns_its_rotations_and_parks_nothing_on_the_model():
    from bucketrt.exporter.families.reformer import ReformerGraph, sample_rotations

    fam, model = tiny_model("reformer", "fill-mask", **TINY_REFORMER)
    before = set(vars(model))
    patch = fam.patch(model, fam.get_task("fill-mask"), 3, {})
    assert set(vars(model)) == before and not hasattr(model, "_bucketrt_rotations")
    [component] = patch.components
    assert isinstance(component.module, ReformerGraph) and component.module.task == "fill-mask"
    assert component.output_names == ("logits",)
    rotations = sample_rotations(model.config, 3).tensors
    assert len(patch.sampled) == 1 and torch.equal(patch.sampled[0], rotations[0])
    assert torch.equal(component.module.rotations_1, rotations[0])  # the graph hashes with what is fingerprinted
    assert patch.sha256 == fingerprint(rotations) != fam.patch(model, fam.get_task("fill-mask"), 4, {}).sha256
    assert "sha256" not in json.dumps(patch.manifest)  # recorded once, as the manifest's patch_sha256


def test_lsg_patch_takes_the_class_from_the_task():
    fam, model = tiny_model("lsg", "fill-mask", **TINY_LSG_ROBERTA)
    patch = fam.patch(model, fam.get_task("fill-mask"), 0, {})
    assert patch.manifest["model_class"] == "LSGRobertaForMaskedLM"
    assert patch.sampled == () and patch.sha256 is None  # norm sparsity samples nothing
    [component] = patch.components
    # Traced above two blocks and off the block grid, within RoBERTa's positions (66 - 1 - 1).
    assert component.example_inputs["input_ids"].shape[-1] == 3 * 8 + 3


def test_fingerprint_covers_dtype_shape_and_bytes():
    x = torch.arange(6, dtype=torch.float32)
    assert fingerprint([x]) == fingerprint([x.clone()])
    assert len({fingerprint([x]), fingerprint([x.reshape(2, 3)]), fingerprint([x.double()]), fingerprint([x + 1])}) == 4
    assert Patch("m", [], sampled=(x,)).sha256 == fingerprint([x]) and Patch("m", []).sha256 is None


# -- family options ----------------------------------------------------------------------------


def test_options_are_validated_per_family():
    yoso = family_named("yoso")
    assert yoso.check_options({}) == {"mask_padding": False}
    assert yoso.check_options({"mask-padding": True}) == {"mask_padding": True}
    with pytest.raises(BucketrtError) as info:
        yoso.check_options({"merged_decoder": True})
    assert info.value.one_line() == (
        "--merged-decoder does not apply to yoso models; yoso options (--option KEY=VALUE, defaults): mask_padding=false"
    )
    with pytest.raises(BucketrtError, match="reformer models take no options"):
        family_named("reformer").check_options({"mask_padding": True})
    with pytest.raises(BucketrtError, match="option mask_padding=1 is not a bool"):
        yoso.check_options({"mask_padding": 1})


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ("--model", "reformer-tiny", "--option", "mask_padding=true"),
            "--mask-padding does not apply to reformer models",
        ),
        (("--model", "reformer-tiny", "--mask-padding"), "--mask-padding does not apply to reformer models"),
        (("--model", "yoso-tiny", "--option", "nonsense=1"), "--nonsense does not apply to yoso models; yoso options"),
        (("--model", "yoso-tiny", "--option", "mask_padding=yes"), 'option mask_padding="yes" is not a bool'),
        (("--model", "yoso-tiny", "--option", "mask_padding"), "bad --option 'mask_padding'; write KEY=VALUE"),
    ],
)
def test_export_option_errors_are_one_line(tmp_path, args, needle):
    result = invoke("export", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, needle)
    assert not (tmp_path / "out").exists()


# -- the export's sequence limit ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name,config,limit",
    [
        ("yoso", {"max_position_embeddings": 4096}, 4096),
        # Reformer: the axial product below max_position_embeddings, and without axial positions.
        ("reformer", {"max_position_embeddings": 1024, "axial_pos_embds": True, "axial_pos_shape": [16, 32]}, 512),
        ("reformer", {"max_position_embeddings": 1024, "axial_pos_embds": False, "axial_pos_shape": [16, 32]}, 1024),
        ("switch", {}, None),
        ("lsg", TINY_LSG_ROBERTA, 66 - 1 - 1),  # RoBERTa numbers positions from padding_idx + 1
        ("lsg", dict(TINY_LSG_ROBERTA, model_type="bert", architectures=["LSGBertForMaskedLM"], pad_token_id=0), 66),
    ],
)
def test_max_sequence_length_is_the_familys(name, config, limit):
    assert family_named(name).max_length(config) == limit
    recorded = {"family": name, "max_sequence_length": limit, "config": {"max_position_embeddings": 1}}
    assert manifest.max_sequence_length(recorded) == limit  # what the export recorded wins
    # Exports made before the field (bucketrt before 2026-11-28): the recorded config's positions. The
    # family's own rule belongs to the exporter, a layer above the export format.
    assert manifest.max_sequence_length({"family": name, "config": config}) == config.get("max_position_embeddings")


def test_max_sequence_length_of_an_unknown_family_falls_back_to_the_positions():
    assert manifest.max_sequence_length({"family": "gone", "config": {"max_position_embeddings": 77}}) == 77
    assert manifest.max_sequence_length({"family": "gone", "config": {}}) is None


def test_the_patched_reformer_rejects_what_the_manifest_limit_rejects():
    """The recorded limit is the graph's own: SortedChunkAttention's max_length."""
    fam, model = tiny_model("reformer", "fill-mask", **TINY_REFORMER)
    [component] = fam.patch(model, fam.get_task("fill-mask"), 0, {}).components
    limit = fam.max_length(model.config.to_dict())
    assert limit == 32 and component.dynamic_shapes["input_ids"][1].max == limit
    ids = torch.ones(1, limit, dtype=torch.int64)
    with torch.no_grad():
        component.module(ids, torch.ones_like(ids))
        with pytest.raises(Exception, match="max_length=32"):
            longer = torch.ones(1, limit + 1, dtype=torch.int64)
            component.module(longer, torch.ones_like(longer))


def synthetic_export(folder: Path, **fields) -> Path:
    """An export folder bench can read the manifest of (its model file is never loaded here)."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"")
    entry = {"name": "model", "files": {"model": "model.onnx", "external_data": None}, "inputs": [], "outputs": []}
    data = {
        "format": 2,
        "model_type": "reformer",
        "task": "fill-mask",
        "source": "synthetic",
        "seed": 0,
        "mode": "lsh",
        "components": [entry],
        **fields,
    }
    (folder / "bucketrt.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    "fields",
    [
        # The recorded limit, although max_position_embeddings is larger...
        dict(family="reformer", max_sequence_length=512, config={"max_position_embeddings": 1024}),
        # ... and, for an export made before the field, the config's positions.
        dict(family="reformer", config={"max_position_embeddings": 512}),
    ],
)
def test_bench_rejects_lengths_beyond_the_exports_limit(tmp_path, fields):
    folder = synthetic_export(tmp_path / "export", **fields)
    result = invoke("bench", folder, "--sequence-lengths", "256,600")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "--sequence-lengths 600 exceeds the export's longest sequence, 512")


# -- the runtime reads exports through the package's own functions ------------------------------


def test_greedy_generate_opens_paths_with_ort_session(monkeypatch, tmp_path):
    import bucketrt.library
    from bucketrt.runtime import greedy_generate

    opened = []

    class Session:
        def get_inputs(self):
            return [type("Input", (), {"name": "input_ids"})()]

        def run(self, names, feeds):
            logits = np.zeros((*feeds["input_ids"].shape, 5), dtype=np.float32)
            logits[..., 3] = 1
            return [logits]

    monkeypatch.setattr(bucketrt.library, "ort_session", lambda path, **kw: opened.append(path) or Session())
    out = greedy_generate(tmp_path, np.array([[1, 2]]), max_new_tokens=2)
    assert opened == [tmp_path] and out.tolist() == [[1, 2, 3, 3]]


def test_seq2seq_generator_reads_the_manifest_with_read_manifest(tmp_path):
    from bucketrt.runtime import Seq2SeqGenerator

    with pytest.raises(BucketrtError, match="has no bucketrt.json"):
        Seq2SeqGenerator(tmp_path)
    folder = synthetic_export(tmp_path / "encoder-only", family="switch", max_sequence_length=None, config={})
    with pytest.raises(BucketrtError, match="which ORTModelForSeq2SeqLM does not run"):
        Seq2SeqGenerator(folder)
    (folder / "bucketrt.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(BucketrtError, match="this bucketrt reads format 2"):
        Seq2SeqGenerator(folder)


# -- the manifest's dtypes are onnx's ----------------------------------------------------------


def test_graph_signature_names_every_onnx_element_type():
    from onnx import TensorProto, helper

    types = {
        "a": TensorProto.FLOAT,
        "b": TensorProto.INT64,
        "c": TensorProto.BOOL,
        "d": TensorProto.FLOAT16,
        "e": TensorProto.BFLOAT16,
        "f": TensorProto.UINT8,
        "g": TensorProto.DOUBLE,
        "h": TensorProto.INT8,
    }
    inputs = [helper.make_tensor_value_info(name, t, ["batch_size", 4]) for name, t in types.items()]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["out"])],
        "g",
        inputs,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch_size", 4])],
    )
    described, outputs = manifest.graph_signature(helper.make_model(graph))
    assert [d["dtype"] for d in described] == [
        "float32",
        "int64",
        "bool",
        "float16",
        "bfloat16",
        "uint8",
        "float64",
        "int8",
    ]
    assert described[0]["shape"] == ["batch_size", 4] and outputs[0]["dtype"] == "float32"
    assert onnx  # the module under test reads onnx's own mapping


# -- the package declares what it imports ------------------------------------------------------

# Imported only where the user brings it (TensorRT engines: docs/tensorrt.md).
_OPTIONAL_IMPORTS = {"tensorrt"}
# Files bucketrt triton copies into a Triton model: they run in the server's Python, which has numpy,
# onnxruntime and Triton's own module, not bucketrt's dependencies (tested below).
_SERVER_SIDE = ROOT / "src/bucketrt/serving/python_backend"
_SERVER_SIDE_IMPORTS = {"numpy", "onnxruntime", "triton_python_backend_utils"}


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of `path` that are neither stdlib nor bucketrt."""
    tops = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        tops |= {n.split(".")[0] for n in names}
    return {t for t in tops if t not in sys.stdlib_module_names and t not in ("bucketrt", "__future__")}


def test_every_third_party_import_is_a_declared_dependency():
    # An extra (pip install bucketrt[openvino]) declares what only one feature imports, where the
    # feature says how to get it; the test extra is for the tests, never for the package.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [dep for name, deps in project.get("optional-dependencies", {}).items() if name != "test" for dep in deps]
    declared = {
        dep.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower().replace("_", "-")
        for dep in project["dependencies"] + extras
    }
    distributions = packages_distributions()
    missing = {}
    for folder in ("src/bucketrt", "exporter", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(_SERVER_SIDE):
                continue
            for top in _third_party_imports(path) - _OPTIONAL_IMPORTS:
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing.setdefault(top, path.relative_to(ROOT).as_posix())
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_server_side_model_code_needs_only_numpy_and_onnxruntime():
    files = sorted(_SERVER_SIDE.rglob("*.py")) + [ROOT / "src/bucketrt/runtime/decoding.py"]  # copied beside it
    assert len(files) > 1
    for path in files:
        extra = _third_party_imports(path) - _SERVER_SIDE_IMPORTS
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}, which a Triton server's Python lacks"
