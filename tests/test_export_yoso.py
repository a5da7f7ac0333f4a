"""YOSO export: ONNX Runtime against PyTorch for every head in both modes, and the patched
attention against Hugging Face's own code.

References, from most to least independent:
* YOSO-E: Hugging Face's own, unpatched model (its maths runs on CPU).
* LSH: Hugging Face's own model code with its kernel module (`lsh_cumulation`, loaded from the hub
  on CUDA machines only) replaced by a shim that calls bucketrt's PyTorch references with the
  export's per-head projections tiled over the batch - this checks our padding, slicing, masks,
  normalisation and convolution glue against HF's.
* The exported graph in ONNX Runtime against the patched PyTorch model (`load_reference`).

Exports use yoso-tiny-sized configs (2 layers, hidden 64) and short sequences; each config is
exported once per module.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

import bucketrt
from bucketrt.errors import BucketrtError
from bucketrt.export_format.manifest import component
from bucketrt.exporter import DEFAULT_OPSET, Reference, export, load_reference, make_inputs
from bucketrt.exporter.families.yoso import patch_model, sample_projections
from bucketrt.exporter.family import family_named
from bucketrt.exporter.preparation import prepare
from bucketrt.exporter.sources import PresetSource
from bucketrt.ops import reference as ref_ops

# Slow: every head and variant exported and compared with Hugging Face (`-m 'not slow'` leaves this file out).
pytestmark = pytest.mark.slow

ATOL = 1e-4
MODES = {"lsh": {"use_expectation": False}, "expectation": {"use_expectation": True}}
FAMILY = family_named("yoso")
HEADS = list(FAMILY.tasks)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """export(**kwargs) once per distinct request in this module; returns (folder, manifest)."""
    cache: dict = {}

    def get(task="feature-extraction", overrides=None, mask_padding=False, seed=0):
        overrides = dict(overrides or {})
        key = (task, tuple(sorted(overrides.items())), mask_padding, seed)
        if key not in cache:
            folder = tmp_path_factory.mktemp("export")
            manifest = export(
                "yoso-tiny",
                folder,
                task=task,
                seed=seed,
                config_overrides=overrides,
                options={"mask_padding": mask_padding},
            )
            cache[key] = (folder, manifest)
        return cache[key]

    return get


_SESSIONS: dict = {}


def ort_outputs(folder, feeds) -> dict[str, np.ndarray]:
    session = _SESSIONS.get(str(folder))
    if session is None:
        session = _SESSIONS[str(folder)] = bucketrt.ort_session(folder, intra_op_num_threads=1)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def hf_model(task: str, overrides: dict, seed: int = 0):
    """Hugging Face's model, unpatched, with exactly the weights of the export (same seed)."""
    return prepare(PresetSource("yoso-tiny"), task=task, seed=seed, overrides=overrides).model


def torch_outputs(model, manifest, feeds) -> dict[str, np.ndarray]:
    """The outputs of an export's Reference, or of a plain HF model, by the export's output names."""
    if isinstance(model, Reference):
        return model.run(feeds)
    with torch.no_grad():
        result = model(**{name: torch.as_tensor(value) for name, value in feeds.items()}, return_dict=True)
    return {o["name"]: result[o["name"]].numpy() for o in component(manifest)["outputs"]}


def max_abs(a: dict, b: dict) -> dict[str, float]:
    assert a.keys() == b.keys()
    out = {}
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert np.isfinite(a[name]).all() and np.isfinite(b[name]).all(), name
        out[name] = float(np.abs(a[name].astype(np.float64) - b[name]).max())
    return out


def padded_feeds(manifest, batch=2, length=19, choices=3, seed=0):
    """Random ids; the last batch row has its final quarter padded (mask 0)."""
    return make_inputs(manifest, batch_size=batch, sequence_length=length, num_choices=choices, seed=seed)


class HFKernelShim:
    """Stands in for transformers' `lsh_cumulation` kernel module (and its `hashing` fallback).

    HF calls fast_hash / hashing once per layer with [batch*heads, seq, dim] tensors; row r gets
    the export's projection of head r % heads: the per-head projections tiled over the batch.
    """

    def __init__(self, model, projections, heads):
        from transformers.models.yoso.modeling_yoso import YosoSelfAttention

        self.projections, self.heads, self.layer, self.calls = projections, heads, None, 0
        layers = [m for m in model.modules() if isinstance(m, YosoSelfAttention)]
        assert len(layers) == len(projections)
        for index, module in enumerate(layers):
            module.register_forward_pre_hook(lambda _m, _a, index=index: setattr(self, "layer", index))

    def _tiled(self, rows: int, dim: int) -> torch.Tensor:
        projection = self.projections[self.layer]
        assert rows % self.heads == 0
        return projection.repeat(rows // self.heads, 1, 1)

    def fast_hash(self, query_mask, query, key_mask, key, num_hash, hash_code_len, use_cuda, version):
        assert not use_cuda and version == 1
        self.calls += 1
        tiled = self._tiled(query.shape[0], query.shape[2])
        attrs = dict(num_hash=num_hash, hash_code_len=hash_code_len, transform="hadamard")
        return (
            ref_ops.sign_hash(query_mask, query, tiled, **attrs),
            ref_ops.sign_hash(key_mask, key, tiled, **attrs),
        )

    def hashing(self, query, key, num_hash, hash_len):
        """HF's gaussian fallback (minus its bug of returning the key codes for the queries)."""
        self.calls += 1
        tiled = self._tiled(query.shape[0], query.shape[2])
        # HF zero-pads q/k to 32 before hashing; zero rows of the projection meet the zero columns.
        tiled = torch.nn.functional.pad(tiled, (0, 0, 0, query.shape[2] - tiled.shape[1]))
        ones = torch.ones(query.shape[:2], dtype=torch.int32)
        attrs = dict(num_hash=num_hash, hash_code_len=hash_len, transform="gaussian")
        return ref_ops.sign_hash(ones, query, tiled, **attrs), ref_ops.sign_hash(ones, key, tiled, **attrs)

    def lsh_cumulation(self, query_mask, query_hash, key_mask, key_hash, value, capacity, use_cuda, version):
        assert not use_cuda and version == 1
        return ref_ops.lsh_cumulation(query_mask, query_hash, key_mask, key_hash, value, hashtable_capacity=capacity)


def hf_with_shim(monkeypatch, task, overrides, seed=0):
    from transformers.models.yoso import modeling_yoso

    model = hf_model(task, overrides, seed)
    shim = HFKernelShim(model, sample_projections(model.config, seed), model.config.num_attention_heads)
    monkeypatch.setattr(modeling_yoso, "lsh_cumulation", shim)
    monkeypatch.setattr(modeling_yoso, "hashing", shim.hashing)
    return model, shim


# --------------------------------------------------------------------------------------------
# every head, both modes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("task", HEADS)
def test_head_parity(exports, monkeypatch, task, mode):
    folder, manifest = exports(task, MODES[mode])
    assert manifest["task"] == task and manifest["mode"] == mode
    feeds = padded_feeds(manifest)
    ort = ort_outputs(folder, feeds)
    assert list(ort) == list(FAMILY.tasks[task].outputs)
    patched = torch_outputs(load_reference(folder), manifest, feeds)

    errors = max_abs(ort, patched)
    print(f"{task} {mode}: ORT vs patched PyTorch max abs {errors}")
    assert max(errors.values()) <= ATOL

    if mode == "expectation":
        # Independent reference: Hugging Face's own, unpatched YOSO-E.
        hf = torch_outputs(hf_model(task, MODES[mode]), manifest, feeds)
        errors = max_abs(ort, hf)
        print(f"{task} {mode}: ORT vs unpatched HF max abs {errors}")
        assert max(errors.values()) <= ATOL
    else:
        model, shim = hf_with_shim(monkeypatch, task, MODES[mode])
        hf = torch_outputs(model, manifest, feeds)
        assert shim.calls == 2  # one hashing call per layer: HF's own LSH path ran
        errors = max_abs(hf, patched)
        print(f"{task} {mode}: HF code with kernel shim vs patched max abs {errors}")
        assert max(errors.values()) <= 1e-5


def test_manifest_and_graph(exports):
    folder, manifest = exports("question-answering", MODES["lsh"])
    proto = onnx.load(str(folder / "model.onnx"))
    assert proto.ir_version <= 10
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert opsets[""] == DEFAULT_OPSET == 20 and opsets["bucketrt"] == 1
    assert manifest["ops"] == [
        {"domain": "bucketrt", "name": "LSHCumulation", "version": 1, "nodes": 2},
        {"domain": "bucketrt", "name": "SignHash", "version": 1, "nodes": 4},
    ]
    assert [i["name"] for i in component(manifest)["inputs"]] == ["input_ids", "attention_mask"]
    assert all(
        i["dtype"] == "int64" and i["shape"] == ["batch_size", "sequence_length"] for i in component(manifest)["inputs"]
    )
    assert [(o["name"], o["shape"]) for o in component(manifest)["outputs"]] == [
        ("start_logits", ["batch_size", "sequence_length"]),
        ("end_logits", ["batch_size", "sequence_length"]),
    ]
    # The projections are initializers: one [heads, 3*P, 32] tensor per layer (P = ceil(16 / (32 // 9)) = 6).
    shapes = {i.name: list(i.dims) for i in proto.graph.initializer if i.name.endswith("attention.self.projection")}
    assert len(shapes) == 2 and all(s == [4, 18, 32] for s in shapes.values())
    assert manifest["projections"]["shape_per_layer"] == [4, 18, 32]
    for key in ("bucketrt", "torch", "transformers", "onnx", "onnxruntime"):
        assert manifest["versions"][key]
    assert manifest["source"] == "yoso-tiny" and manifest["seed"] == 0 and manifest["mask_padding"] is False

    _, expectation = exports("question-answering", MODES["expectation"])
    assert expectation["ops"] == [] and expectation["projections"] is None


# --------------------------------------------------------------------------------------------
# dynamic axes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_dynamic_batch_and_sequence(exports, mode):
    folder, manifest = exports("feature-extraction", MODES[mode])
    model = load_reference(folder)
    for batch, length in ((1, 7), (3, 29), (2, 64)):  # 7 and 29: not multiples of 8
        feeds = padded_feeds(manifest, batch=batch, length=length, seed=length)
        ort = ort_outputs(folder, feeds)
        assert ort["last_hidden_state"].shape == (batch, length, 64)
        assert max(max_abs(ort, torch_outputs(model, manifest, feeds)).values()) <= ATOL


def test_dynamic_num_choices(exports):
    folder, manifest = exports("multiple-choice", MODES["lsh"])
    assert component(manifest)["inputs"][0]["shape"] == ["batch_size", "num_choices", "sequence_length"]
    assert component(manifest)["outputs"][0]["shape"] == ["batch_size", "num_choices"]
    model = load_reference(folder)
    for batch, choices, length in ((1, 2, 11), (2, 4, 5)):
        feeds = padded_feeds(manifest, batch=batch, length=length, choices=choices, seed=length)
        ort = ort_outputs(folder, feeds)
        assert ort["logits"].shape == (batch, choices)
        assert max(max_abs(ort, torch_outputs(model, manifest, feeds)).values()) <= ATOL


# --------------------------------------------------------------------------------------------
# attention variants
# --------------------------------------------------------------------------------------------

VARIANTS = {
    # head_dim 16 (padded to 32 for hashing) is yoso-tiny itself, covered above.
    "conv-lsh": {"use_expectation": False, "conv_window": 3},
    "conv-expectation": {"use_expectation": True, "conv_window": 5},
    "head-dim-64": {"use_expectation": False, "hidden_size": 128, "num_attention_heads": 2, "type_vocab_size": 2},
    "gaussian": {"use_expectation": False, "use_fast_hash": False, "num_hash": 8},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_parity(exports, monkeypatch, variant):
    overrides = VARIANTS[variant]
    folder, manifest = exports("feature-extraction", overrides)
    feeds = padded_feeds(manifest, length=23)
    if overrides.get("type_vocab_size", 1) > 1:
        assert "token_type_ids" in feeds and feeds["token_type_ids"].any()
    else:
        assert "token_type_ids" not in feeds
    ort = ort_outputs(folder, feeds)
    patched = torch_outputs(load_reference(folder), manifest, feeds)
    errors = max_abs(ort, patched)
    print(f"{variant}: ORT vs patched max abs {errors}")
    assert max(errors.values()) <= ATOL
    if overrides["use_expectation"]:
        hf = torch_outputs(hf_model("feature-extraction", overrides), manifest, feeds)
    else:
        model, shim = hf_with_shim(monkeypatch, "feature-extraction", overrides)
        hf = torch_outputs(model, manifest, feeds)
        assert shim.calls == 2
    errors = max_abs(ort, hf)
    print(f"{variant}: ORT vs HF max abs {errors}")
    assert max(errors.values()) <= ATOL


def test_head_dim_48_pads_to_64(exports):
    """HF's fast_hash cannot hash 48 dims (not a power of two); we pad to 64 (a documented deviation)."""
    folder, manifest = exports(
        "feature-extraction", {"use_expectation": False, "hidden_size": 96, "num_attention_heads": 2}
    )
    assert manifest["projections"]["hash_dim"] == 64
    feeds = padded_feeds(manifest)
    errors = max_abs(ort_outputs(folder, feeds), torch_outputs(load_reference(folder), manifest, feeds))
    assert max(errors.values()) <= ATOL


def test_conv_window_changes_outputs(exports):
    """The depthwise convolution really is in the graph (same seed, otherwise identical weights)."""
    plain_folder, plain = exports("feature-extraction", MODES["lsh"])
    conv_folder, conv = exports("feature-extraction", VARIANTS["conv-lsh"])
    feeds = padded_feeds(plain)
    diff = max_abs(ort_outputs(plain_folder, feeds), ort_outputs(conv_folder, feeds))
    assert max(diff.values()) > 1e-2


def test_gaussian_queries_use_their_own_codes():
    """HF's `hashing` returns the key codes twice; ours hashes the queries with the query codes."""
    from transformers.models.yoso import modeling_yoso

    g = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    torch.manual_seed(0)
    hf_query_codes, hf_key_codes = modeling_yoso.hashing(query, key, 4, 5)
    assert torch.equal(hf_query_codes, hf_key_codes)  # the bug: queries get the keys' codes
    projection = torch.randn(1, 8, 20, generator=g)
    ones = torch.ones(2, 6, dtype=torch.int32)
    ours_q = ref_ops.sign_hash(ones, query, projection, num_hash=4, hash_code_len=5, transform="gaussian")
    ours_k = ref_ops.sign_hash(ones, key, projection, num_hash=4, hash_code_len=5, transform="gaussian")
    assert not torch.equal(ours_q, ours_k)


# --------------------------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_mask_padding(exports, mode):
    default_folder, default = exports("feature-extraction", MODES[mode])
    masked_folder, masked = exports("feature-extraction", MODES[mode], mask_padding=True)
    assert masked["mask_padding"] is True
    length, pad = 20, 5
    feeds = padded_feeds(default, batch=2, length=length)
    assert feeds["attention_mask"][0].all() and feeds["attention_mask"][1, -pad:].sum() == 0

    default_out = ort_outputs(default_folder, feeds)["last_hidden_state"]
    masked_out = ort_outputs(masked_folder, feeds)["last_hidden_state"]
    # Parity of the masked export with its own reference.
    reference = torch_outputs(load_reference(masked_folder), masked, feeds)["last_hidden_state"]
    assert np.abs(masked_out - reference).max() <= ATOL
    # Row 0 has no padding: identical weights and projections give identical outputs.
    assert np.abs(default_out[0] - masked_out[0]).max() <= 1e-5
    # Row 1 is padded: HF's default attends to the padding, --mask-padding does not.
    assert np.abs(default_out[1, : length - pad] - masked_out[1, : length - pad]).max() > 1e-3
    # With padding masked, the valid positions equal a run on the unpadded sequence alone.
    trimmed = {k: v[1:, : length - pad] for k, v in feeds.items()}
    alone = ort_outputs(default_folder, trimmed)["last_hidden_state"]
    assert np.abs(masked_out[1, : length - pad] - alone[0]).max() <= ATOL
    if mode == "expectation":
        # ... which for YOSO-E is Hugging Face's own output on that sequence.
        hf = torch_outputs(hf_model("feature-extraction", MODES[mode]), default, trimmed)["last_hidden_state"]
        assert np.abs(masked_out[1, : length - pad] - hf[0]).max() <= ATOL


def test_default_matches_hf_on_padded_batches(exports):
    """HF never masks padding inside attention; neither does the default export (YOSO-E: no shim needed)."""
    folder, manifest = exports("feature-extraction", MODES["expectation"])
    feeds = padded_feeds(manifest, batch=3, length=16)
    hf = torch_outputs(hf_model("feature-extraction", MODES["expectation"]), manifest, feeds)
    assert max(max_abs(ort_outputs(folder, feeds), hf).values()) <= ATOL


def test_external_data_above_the_threshold(tmp_path, monkeypatch):
    """Models above 2 GB keep their weights in model.onnx.data; the threshold is lowered to test it."""
    from bucketrt.exporter import onnx_export

    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_BYTES", 0)
    manifest = export("yoso-tiny", tmp_path, config_overrides={"num_hidden_layers": 1})
    assert component(manifest)["files"] == {"model": "model.onnx", "external_data": "model.onnx.data"}
    assert (tmp_path / "model.onnx.data").stat().st_size > 200_000
    assert (tmp_path / "model.onnx").stat().st_size < 100_000
    feeds = padded_feeds(manifest)
    errors = max_abs(ort_outputs(tmp_path, feeds), torch_outputs(load_reference(tmp_path), manifest, feeds))
    assert max(errors.values()) <= ATOL


# --------------------------------------------------------------------------------------------
# the patched model and the rebuild, without ONNX
# --------------------------------------------------------------------------------------------


def test_projections_are_seeded_per_layer_and_head():
    _, config, _ = PresetSource("yoso-tiny").load_config({})
    a, b, c = sample_projections(config, 0), sample_projections(config, 0), sample_projections(config, 1)
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])
    assert set(a[0].unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(a[0][0], a[0][1])  # heads differ


def test_patch_keeps_hf_parameters():
    model = hf_model("fill-mask", {"conv_window": 3})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    patched = copy.deepcopy(model)
    info = patch_model(patched, seed=0)
    after = patched.state_dict()
    assert info.mode == "lsh" and info.layers == 2
    assert set(after) - set(before) == {f"yoso.encoder.layer.{i}.attention.self.projection" for i in range(2)}
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


def test_hf_lsh_projection_rows_follow_heads(monkeypatch):
    """Row r of HF's [batch*heads] layout is head r % heads: tiling the per-head projections over
    the batch in the shim must equal the op's own G-grouping (projection[r mod G])."""
    model = hf_model("feature-extraction", MODES["lsh"])
    patched = copy.deepcopy(model)
    patch_model(patched, seed=0)
    model, shim = hf_with_shim(monkeypatch, "feature-extraction", MODES["lsh"])
    ids = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask).last_hidden_state
        b = patched(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (a - b).abs().max() <= 1e-5
    # A different seed gives different projections and a different output: the test can fail.
    other = hf_model("feature-extraction", MODES["lsh"])
    patch_model(other, seed=7)
    with torch.no_grad():
        c = other(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (a - c).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------
# errors (no export runs)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(task="summarization"), "unknown task 'summarization'"),
        (dict(config_overrides=["hash_code_len=31"]), "hash_code_len=31 is not supported"),
        (dict(config_overrides=["no_such_key=1"]), "unknown config key 'no_such_key'"),
        (dict(config_overrides=["num_hash=eight"]), "bad config override"),
        (dict(config_overrides=["conv_window=4"]), "conv_window=4 is not supported"),
        (dict(config_overrides=["hidden_size=65"]), "not a multiple of num_attention_heads"),
        (dict(opset=17), "opset 17 is not supported"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(options={"merged_decoder": True}), "--merged-decoder does not apply to yoso models"),
    ],
)
def test_export_errors(tmp_path, kwargs, needle):
    with pytest.raises(BucketrtError) as info:
        export("yoso-tiny", tmp_path / "out", **kwargs)
    assert needle in info.value.one_line()
    assert "\n" not in info.value.one_line()
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_unsupported_model_type_folder(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(
        tmp_path
    )
    with pytest.raises(BucketrtError, match="model type 'bert' is not supported; bucketrt exports: yoso"):
        export(str(tmp_path), tmp_path / "out")


def test_missing_folder_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(BucketrtError, match="does not exist"):
        export(str(tmp_path / "nowhere"), tmp_path / "out")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(BucketrtError, match="cannot reach the hub for 'bucketrt-test/no-such-model'"):
        export("bucketrt-test/no-such-model", tmp_path / "out")
