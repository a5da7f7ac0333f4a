"""`bucketrt triton`: the model repositories it writes, and their Python-backend model.py driven
in-process through a stand-in for Triton's triton_python_backend_utils (tests/triton_backend_standin.py).

Every config.pbtxt is parsed as Triton's ModelConfig protobuf. The model.py answers are compared
bit for bit with each request run alone through bucketrt.ort_session (forward models), and token for
token with Seq2SeqGenerator / greedy_generate (generation models), with both ways tensors cross the
Python backend (numpy and DLPack, which follow numpy's major version).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import triton_backend_standin as standin
from triton_exports import tiny_exports
from tritonclient.grpc import model_config_pb2 as pb2

import bucketrt
from bucketrt.errors import BucketrtError
from bucketrt.export_format.manifest import needs_op_library, read_manifest
from bucketrt.serving import write_repository

# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The tiny exports the Triton server tests serve too (tests/triton_exports.py), once per process."""
    return tiny_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def repo(exports, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    entries = write_repository([exports["yoso"], exports["switch_s2s"]], root, max_batch_size=8)
    entries += write_repository(exports["switch_s2s"], root, name="switch_encoder", component="encoder_model")
    entries += write_repository(exports["reformer"], root, name="reformer_logits", forward=True)
    entries += write_repository(exports["reformer"], root, name="reformer_generate", max_new_tokens=6)
    entries += write_repository(exports["switch_s2s"], root, name="switch_stream", stream=True, max_new_tokens=8)
    entries += write_repository(exports["moe"], root, name="moe_generate", max_new_tokens=6)
    entries += write_repository(exports["moe_shared"], root, name="moe_shared_generate", max_new_tokens=6)
    return root, {e.name: e for e in entries}


def _parse(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb2.ModelConfig())


@pytest.fixture
def numpy_path(request, monkeypatch):
    """Simulates numpy 1 or 2 in the stand-in, and in model.py's version check."""
    major = request.param
    monkeypatch.setattr(standin, "SIMULATED_NUMPY_MAJOR", major)
    return major


_LOADED: dict[str, object] = {}


def _module(model_dir: Path):
    """model.py as written into the repository, importing the stand-in as triton_python_backend_utils."""
    key = str(model_dir)
    if key not in _LOADED:
        sys.modules["triton_python_backend_utils"] = standin
        spec = importlib.util.spec_from_file_location(f"triton_model_{model_dir.name}", model_dir / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[key] = module
    return _LOADED[key]


def _model(model_dir: Path, monkeypatch=None, major: int | None = None):
    from google.protobuf import json_format

    module = _module(model_dir)
    if major is not None:
        monkeypatch.setattr(module, "numpy_major", lambda: major)
    instance = module.TritonPythonModel()
    config = json_format.MessageToDict(_parse(model_dir / "config.pbtxt"), preserving_proto_field_name=True)
    instance.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(model_dir),
            "model_version": "1",
            "model_instance_kind": "CPU",
            "model_instance_device_id": "0",
            "model_name": model_dir.name,
        }
    )
    return instance


def _outputs(response) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.result() for t in response.output_tensors()}


def _ids(rng, vocab, batch, length):
    return rng.integers(3, vocab, size=(batch, length), dtype=np.int64)


# -- configs ----------------------------------------------------------------------------------


def test_python_configs_parse_and_follow_the_manifest(repo, exports):
    root, entries = repo
    yoso = _parse(root / "yoso" / "config.pbtxt")
    assert yoso.backend == "python" and yoso.max_batch_size == 8
    manifest = read_manifest(exports["yoso"])
    component = manifest["components"][0]
    assert [i.name for i in yoso.input] == [i["name"] for i in component["inputs"]]
    assert [o.name for o in yoso.output] == [o["name"] for o in component["outputs"]]
    assert all(i.data_type == pb2.TYPE_INT64 and list(i.dims) == [-1] for i in yoso.input)
    hidden = manifest["config"]["hidden_size"]
    assert [list(o.dims) for o in yoso.output][0] == [-1, hidden]
    assert yoso.output[0].data_type == pb2.TYPE_FP32
    assert yoso.dynamic_batching.max_queue_delay_microseconds == 100
    assert yoso.parameters["batching"].string_value == "same_shape"
    assert yoso.parameters["max_sequence_length"].string_value == "512"
    assert yoso.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    s2s = _parse(root / "switch_s2s" / "config.pbtxt")
    assert [i.name for i in s2s.input] == ["input_ids", "attention_mask", "max_new_tokens"]
    assert [i.optional for i in s2s.input] == [False, True, True]
    assert [o.name for o in s2s.output] == ["output_ids"]
    # Generation runs each request alone: no dynamic batcher.
    assert s2s.parameters["batching"].string_value == "per_request" and not s2s.HasField("dynamic_batching")
    assert _parse(root / "switch_stream" / "config.pbtxt").model_transaction_policy.decoupled
    # A causal LM with a key/value cache takes left-padded prompts; one without (Reformer) takes no mask.
    moe = _parse(root / "moe_generate" / "config.pbtxt")
    assert [(i.name, i.optional) for i in moe.input] == [
        ("input_ids", False),
        ("attention_mask", True),
        ("max_new_tokens", True),
    ]
    assert moe.parameters["mode"].string_value == "causal"
    reformer = _parse(root / "reformer_generate" / "config.pbtxt")
    assert [i.name for i in reformer.input] == ["input_ids", "max_new_tokens"]
    assert needs_op_library(read_manifest(exports["yoso"]))
    for name in ("yoso", "switch_s2s"):
        files = {p.name for p in (root / name / "1").iterdir()}
        assert {"model.py", "decoding.py"} <= files, files
        # The op library exactly where the export holds bucketrt ops (switch_s2s's one layer per
        # stack is dense at sparse step 2: it has none).
        assert ("libbucketrt_ort.so" in files) == needs_op_library(read_manifest(exports[name])), files
    assert {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"} <= {
        p.name for p in (root / "switch_s2s" / "1").iterdir()
    }
    assert "bucketrt serve" in (root / "README.md").read_text()
    assert set(entries) <= {p.name for p in root.iterdir()}


def test_onnxruntime_backend_config(exports, tmp_path):
    entries = write_repository(
        exports["yoso"], tmp_path, backend="onnxruntime", kind="gpu", instances=2, intra_op_threads=2
    )
    model = tmp_path / entries[0].name
    config = _parse(model / "config.pbtxt")
    assert config.backend == "onnxruntime" and config.default_model_filename == "model.onnx"
    assert list(config.model_operations.op_library_filename) == [str(model.resolve() / "libbucketrt_ort.so")]
    assert (model / "libbucketrt_ort.so").is_file() and (model / "1" / "model.onnx").is_file()
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU and config.instance_group[0].count == 2
    assert [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator] == ["cuda"]
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    # The library path as a container will see it.
    entries = write_repository(
        exports["yoso"], tmp_path, backend="onnxruntime", overwrite=True, server_repository="/models"
    )
    assert list(_parse(model / "config.pbtxt").model_operations.op_library_filename) == [
        "/models/yoso/libbucketrt_ort.so"
    ]
    # The ORT session a Triton ORT backend would open: the copied model with the copied library.
    options = bucketrt.session_options()
    import onnxruntime as ort

    assert ort.InferenceSession(str(model / "1" / "model.onnx"), sess_options=options).get_inputs()


def test_tensorrt_backend_config_and_missing_engines(exports, tmp_path):
    export_dir = tmp_path / "yoso_trt"
    shutil.copytree(exports["yoso"], export_dir)
    with pytest.raises(BucketrtError, match="bucketrt build"):
        write_repository(export_dir, tmp_path / "repo", backend="tensorrt")
    assert not (tmp_path / "repo").exists()  # nothing written for a refused export
    # A recorded engine (its bytes do not matter to the repository) and a plugin library.
    (export_dir / "model.engine").write_bytes(b"engine")
    plugins = tmp_path / "libbucketrt_trt.so"
    plugins.write_bytes(b"plugins")
    manifest = json.loads((export_dir / "bucketrt.json").read_text())
    profile = {n: {"min": [1, 1], "opt": [1, 128], "max": [4, 512]} for n in ("input_ids", "attention_mask")}
    manifest["engines"] = {"model": {"file": "model.engine", "profile": profile, "plugins": str(plugins)}}
    (export_dir / "bucketrt.json").write_text(json.dumps(manifest))
    with pytest.raises(BucketrtError, match="batches up to 4"):
        write_repository(export_dir, tmp_path / "repo", backend="tensorrt")
    (entry,) = write_repository(export_dir, tmp_path / "repo", backend="tensorrt", max_batch_size=4, kind="gpu")
    config = _parse(entry.path / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
    assert (entry.path / "1" / "model.plan").read_bytes() == b"engine"
    assert (entry.path / "libbucketrt_trt.so").read_bytes() == b"plugins"
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert f"--backend-config=tensorrt,plugins={entry.path.resolve()}/libbucketrt_trt.so" in readme
    assert "LD_PRELOAD=" in readme


def test_generation_exports_need_the_python_backend(exports, tmp_path):
    for backend in ("onnxruntime", "tensorrt"):
        with pytest.raises(BucketrtError, match="decoding loop"):
            write_repository(exports["switch_s2s"], tmp_path, backend=backend)
    with pytest.raises(BucketrtError, match="--stream"):
        write_repository(exports["yoso"], tmp_path, stream=True)


def test_existing_models_are_kept_unless_forced(exports, tmp_path):
    write_repository(exports["yoso"], tmp_path, name="a")
    write_repository(exports["yoso"], tmp_path, name="b")  # adds to the repository
    with pytest.raises(BucketrtError, match="--force"):
        write_repository(exports["yoso"], tmp_path, name="a")
    (tmp_path / "a" / "marker").write_text("old")
    write_repository(exports["yoso"], tmp_path, name="a", overwrite=True)
    assert not (tmp_path / "a" / "marker").exists()
    readme = (tmp_path / "README.md").read_text()
    assert "`a`" in readme and "`b`" in readme


def test_cli(exports, tmp_path):
    from click.testing import CliRunner

    from bucketrt.cli.main import main
    from bucketrt.cli.triton import _library_has_cuda

    repo = tmp_path / "repo"
    args = ["triton", str(exports["yoso"]), "--repository", str(repo), "--name", "y", "--max-batch-size", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"bucketrt serve {repo}" in result.output and _parse(repo / "y" / "config.pbtxt").max_batch_size == 4
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--force" in result.output
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0
    result = CliRunner().invoke(main, [*args, "--force", "--kind", "gpu"])
    assert result.exit_code == 0 and ("no CUDA kernels" in result.output) != _library_has_cuda()
    result = CliRunner().invoke(main, ["triton", str(tmp_path / "missing"), "--repository", str(repo)])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_model_py_imports_only_numpy_and_onnxruntime(repo):
    root, _ = repo
    allowed = {"__future__", "importlib", "json", "pathlib", "collections", "numpy", "onnxruntime"}
    allowed.add("triton_python_backend_utils")
    for file in ("model.py", "decoding.py"):
        tree = ast.parse((root / "switch_s2s" / "1" / file).read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(node.module.split(".")[0])
        assert names <= allowed, (file, names - allowed)


# -- forward models ---------------------------------------------------------------------------


def _forward_requests(rng, vocab, lengths, with_mask=True):
    out = []
    for batch, length in lengths:
        ids = _ids(rng, vocab, batch, length)
        feeds = {"input_ids": ids}
        if with_mask:
            mask = np.ones_like(ids)
            mask[0, length // 2 :] = 0 if length > 4 else 1  # a padded row: its own answer, never re-padded
            feeds["attention_mask"] = mask
        out.append(feeds)
    return out


def _check_forward(model_dir: Path, export_dir: Path, monkeypatch, major, lengths, with_mask=True, component="model"):
    """Every request's answer, inside whatever batch model.py makes, equals it run alone."""
    model = _model(model_dir, monkeypatch, major)
    calls = []
    session = next(iter(model.sessions.values()))
    real_run = session.run

    class Counting:  # counts ORT calls (InferenceSession.run cannot be patched on the instance)
        def __getattr__(self, name):
            return getattr(session, name)

        def run(self, names, feeds):
            calls.append({k: v.shape for k, v in feeds.items()})
            return real_run(names, feeds)

    model.sessions = {k: Counting() for k in model.sessions}
    rng = np.random.default_rng(1)
    vocab = read_manifest(export_dir)["config"]["vocab_size"]
    feeds = _forward_requests(rng, vocab, lengths, with_mask)
    responses = model.execute([standin.InferenceRequest(**f) for f in feeds])
    reference = bucketrt.ort_session(export_dir, providers=["CPUExecutionProvider"], component=component)
    names = [o.name for o in reference.get_outputs()]
    for f, response in zip(feeds, responses):
        got = _outputs(response)
        assert list(got) == names
        for name, expected in zip(names, reference.run(names, f)):
            assert got[name].shape == expected.shape and got[name].dtype == expected.dtype
            assert np.array_equal(got[name], expected), (name, float(np.abs(got[name] - expected).max()))
    return calls


@pytest.mark.parametrize("numpy_path", [1, 2], indirect=True)
def test_yoso_batches_same_shapes_bit_identical(repo, exports, monkeypatch, numpy_path):
    root, _ = repo
    lengths = [(1, 40), (1, 17), (1, 40), (2, 40), (1, 17), (1, 64), (4, 40)]
    calls = _check_forward(root / "yoso", exports["yoso"], monkeypatch, numpy_path, lengths)
    # One ORT call per shape: 40 (1+1+2+4 rows: a full batch of 8), 17 (1+1), 64.
    assert sorted(c["input_ids"] for c in calls) == [(1, 64), (2, 17), (8, 40)]


def test_reformer_forward_batches_bit_identical(repo, exports, monkeypatch):
    root, _ = repo
    lengths = [(1, 32), (1, 20), (1, 32), (1, 32), (1, 20)]
    calls = _check_forward(root / "reformer_logits", exports["reformer"], monkeypatch, None, lengths)
    assert sorted(c["input_ids"] for c in calls) == [(2, 20), (3, 32)]


def test_switch_encoder_runs_each_request_alone(repo, exports, monkeypatch):
    """Switch is never batched across requests: inside a batch its expert GEMMs round differently
    (about 5e-7), so a request's answer would depend on its neighbours."""
    root, _ = repo
    config = _parse(root / "switch_encoder" / "config.pbtxt")
    assert config.parameters["batching"].string_value == "per_request" and not config.HasField("dynamic_batching")
    lengths = [(1, 24), (1, 24), (2, 24), (1, 9)]
    calls = _check_forward(
        root / "switch_encoder", exports["switch_s2s"], monkeypatch, None, lengths, component="encoder_model"
    )
    assert len(calls) == 4


def test_batching_is_the_manifests_and_an_older_manifest_runs_each_request_alone(exports, tmp_path):
    """Whether same-shape requests share a call is the family's answer, recorded at export; an
    export made before bucketrt recorded it runs each request alone, whatever its family."""
    assert read_manifest(exports["yoso"])["batch_rows_independent"] is True
    assert read_manifest(exports["reformer"])["batch_rows_independent"] is True
    assert read_manifest(exports["switch_s2s"])["batch_rows_independent"] is False
    old = shutil.copytree(exports["yoso"], tmp_path / "old")
    manifest = read_manifest(old)
    del manifest["batch_rows_independent"]
    (old / "bucketrt.json").write_text(json.dumps(manifest))
    (entry,) = write_repository(old, tmp_path / "repo", max_batch_size=8)
    config = _parse(entry.path / "config.pbtxt")
    assert entry.batching == "per_request" and config.parameters["batching"].string_value == "per_request"
    assert not config.HasField("dynamic_batching")


def test_bad_requests_get_errors_and_the_rest_is_served(repo, exports):
    root, _ = repo
    model = _model(root / "yoso")
    rng = np.random.default_rng(2)
    good = {"input_ids": _ids(rng, 1000, 1, 12), "attention_mask": np.ones((1, 12), np.int64)}
    bad = {
        "missing": {"input_ids": good["input_ids"]},
        "dtype": {"input_ids": good["input_ids"].astype(np.int32), "attention_mask": good["attention_mask"]},
        "rank": {"input_ids": good["input_ids"][0], "attention_mask": good["attention_mask"][0]},
        "long": {"input_ids": _ids(rng, 1000, 1, 513), "attention_mask": np.ones((1, 513), np.int64)},
        "mismatch": {"input_ids": good["input_ids"], "attention_mask": np.ones((1, 11), np.int64)},
        # The shape of `good`, so in its ORT call: a token beyond the vocabulary fails only itself.
        "vocab": {"input_ids": np.full((1, 12), 5000, np.int64), "attention_mask": good["attention_mask"]},
    }
    requests = [good, *bad.values(), good]
    responses = model.execute([standin.InferenceRequest(**r) for r in requests])
    expected = bucketrt.ort_session(exports["yoso"]).run(None, good)
    for response in (responses[0], responses[-1]):
        assert np.array_equal(_outputs(response)["last_hidden_state"], expected[0])
    messages = dict(zip(bad, (r.error().message() if r.has_error() else None for r in responses[1:-1])))
    assert "missing input 'attention_mask'" in messages["missing"]
    assert "dtype int32" in messages["dtype"]
    assert "dimensions" in messages["rank"]
    assert "513 tokens" in messages["long"] and "at most 512" in messages["long"]
    assert messages["mismatch"] and "failed on this request" in messages["mismatch"]
    assert messages["vocab"] and "failed on this request" in messages["vocab"]


def test_unbatched_model(exports, tmp_path):
    """max_batch_size 0: the dims carry the batch axis, each request runs alone."""
    (entry,) = write_repository(exports["yoso"], tmp_path, max_batch_size=0)
    config = _parse(entry.path / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(i.dims) for i in config.input] == [[-1, -1], [-1, -1]]
    model = _model(entry.path)
    feeds = {"input_ids": _ids(np.random.default_rng(7), 1000, 2, 9), "attention_mask": np.ones((2, 9), np.int64)}
    (response,) = model.execute([standin.InferenceRequest(**feeds)])
    expected = bucketrt.ort_session(exports["yoso"]).run(None, feeds)[0]
    assert np.array_equal(_outputs(response)["last_hidden_state"], expected)


def test_auto_path_follows_numpy(repo):
    root, _ = repo
    module = _module(root / "yoso")
    assert module.use_dlpack("auto") == (int(np.__version__.split(".")[0]) >= 2)
    assert module.use_dlpack("numpy") is False and module.use_dlpack("dlpack") is True


# -- generation -------------------------------------------------------------------------------


@pytest.mark.parametrize("numpy_path", [1, 2], indirect=True)
def test_switch_seq2seq_generation_is_token_identical(repo, exports, monkeypatch, numpy_path):
    from bucketrt.runtime import Seq2SeqGenerator

    root, _ = repo
    model = _model(root / "switch_s2s", monkeypatch, numpy_path)
    generator = Seq2SeqGenerator(exports["switch_s2s"])
    rng = np.random.default_rng(4)
    requests = []
    for batch, length, steps in ((1, 13, None), (2, 13, 7), (1, 9, 12), (1, 13, 0)):
        ids = _ids(rng, 256, batch, length)
        mask = np.ones_like(ids)
        if batch == 2:
            mask[1, 10:] = 0
        r = {"input_ids": ids, "attention_mask": mask}
        if steps is not None:
            r["max_new_tokens"] = np.full((batch, 1), steps, np.int64)
        requests.append(r)
    requests.append({"input_ids": _ids(rng, 256, 1, 5)})  # no mask: all ones
    responses = model.execute([standin.InferenceRequest(**r) for r in requests])
    lengths = set()
    for r, response in zip(requests, responses):
        steps = int(r["max_new_tokens"][0, 0]) if "max_new_tokens" in r else 20
        if steps:
            expected = generator.generate(r["input_ids"], r.get("attention_mask"), max_new_tokens=steps)
        else:  # transformers' generate refuses 0 new tokens; the Triton model answers the start token
            expected = generator.generate(r["input_ids"], r.get("attention_mask"), max_new_tokens=1)[:, :1]
        got = _outputs(response)["output_ids"]
        assert got.dtype == np.int64 and np.array_equal(got, expected), (got.tolist(), expected.tolist())
        lengths.add(got.shape[1])
    assert len(lengths) >= 3  # max_new_tokens took effect
    assert len(set(_outputs(responses[0])["output_ids"][0, 1:].tolist())) >= 3  # varied tokens


def test_switch_streaming_concatenates_to_the_answer(repo, exports):
    from bucketrt.runtime import Seq2SeqGenerator

    root, _ = repo
    model = _model(root / "switch_stream")
    ids = _ids(np.random.default_rng(5), 256, 1, 11)
    good = standin.InferenceRequest(input_ids=ids)
    bad = standin.InferenceRequest(input_ids=ids.astype(np.int32))
    assert model.execute([good, bad]) is None
    expected = Seq2SeqGenerator(exports["switch_s2s"]).generate(ids, max_new_tokens=8)
    parts = [_outputs(r)["output_ids"] for r in good.sender.responses]
    assert good.sender.closed and len(parts) == expected.shape[1]
    assert np.array_equal(np.concatenate(parts, axis=1), expected)
    assert bad.sender.closed and len(bad.sender.responses) == 1 and bad.sender.responses[0].has_error()


def test_reformer_generation_is_token_identical(repo, exports):
    from bucketrt.runtime import greedy_generate

    root, _ = repo
    model = _model(root / "reformer_generate")
    config = read_manifest(exports["reformer"])["config"]
    session = bucketrt.ort_session(exports["reformer"])
    rng = np.random.default_rng(6)
    requests = [
        {"input_ids": _ids(rng, 320, 1, 10)},
        {"input_ids": _ids(rng, 320, 2, 7), "max_new_tokens": np.full((2, 1), 9, np.int64)},
        {"input_ids": _ids(rng, 320, 1, 510), "max_new_tokens": np.full((1, 1), 5, np.int64)},  # 515 > 512
    ]
    responses = model.execute([standin.InferenceRequest(**r) for r in requests])
    for r, response in zip(requests[:2], responses):
        steps = int(r["max_new_tokens"][0, 0]) if "max_new_tokens" in r else 6
        expected = greedy_generate(
            session,
            r["input_ids"],
            max_new_tokens=steps,
            eos_token_id=config.get("eos_token_id"),
            pad_token_id=config.get("pad_token_id"),
        )
        assert np.array_equal(_outputs(response)["output_ids"], expected)
    assert "prompt 510 + max_new_tokens 5" in responses[2].error().message()
    assert "at most 512" in responses[2].error().message()


@pytest.mark.parametrize("name", ["moe", "moe_shared"])
@pytest.mark.parametrize("numpy_path", [1, 2], indirect=True)
def test_moe_generation_is_transformers_greedy_generate(repo, exports, numpy_path, monkeypatch, name):
    """A mixture-of-experts causal LM served with its key/value cache (growing, or one buffer that past
    and present share): single prompts and left-padded batches (attention_mask 0 at the padding) give,
    token for token, what the PyTorch model's greedy generate gives (the export's reference:
    transformers' model with the same weights)."""
    import torch

    from bucketrt.exporter import load_reference

    root, _ = repo
    model = _model(root / f"{name}_generate", monkeypatch, numpy_path)
    reference = load_reference(exports[name]).model
    pad = int(read_manifest(exports[name])["config"].get("pad_token_id") or 0)
    rng = np.random.default_rng(7)
    padded = _ids(rng, 512, 3, 9)
    mask = np.ones_like(padded)
    for row, padding in ((0, 4), (2, 1)):
        padded[row, :padding], mask[row, :padding] = pad, 0
    requests = [
        {"input_ids": _ids(rng, 512, 1, 8)},
        {"input_ids": padded, "attention_mask": mask, "max_new_tokens": np.full((3, 1), 9, np.int64)},
    ]
    responses = model.execute([standin.InferenceRequest(**r) for r in requests])
    for r, response in zip(requests, responses):
        ids = torch.from_numpy(r["input_ids"])
        with torch.no_grad():
            expected = reference.generate(
                ids,
                attention_mask=torch.from_numpy(r.get("attention_mask", np.ones_like(r["input_ids"]))),
                max_new_tokens=int(r["max_new_tokens"][0, 0]) if "max_new_tokens" in r else 6,
                do_sample=False,
            ).numpy()
        got = _outputs(response)["output_ids"]
        assert np.array_equal(got, expected), (got.tolist(), expected.tolist())
    # Not one token repeated: the comparison covers real decoding.
    assert len(np.unique(got[:, 9:])) > 3, got.tolist()
