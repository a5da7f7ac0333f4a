"""Standard-op exports run without bucketrt's library: ONNX Runtime sessions with no custom-op
library (`bucketrt check`, ORTModel, Triton repositories) and OpenVINO (`check --backend openvino`).

"Without the library" is made certain, not assumed: $BUCKETRT_LIBRARY points at a file that does
not exist, so that any registration of bucketrt's op library (bucketrt.library.library_path) fails;
the same calls on an export with bucketrt ops fail that way, which shows the setting is in force.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bucketrt.cli.main import main
from bucketrt.errors import LibraryNotBuiltError
from bucketrt.export_format.manifest import read_manifest, write_manifest

# Exports without bucketrt nodes: LSG (which calls no bucketrt op), and the standard-op exports of
# the families whose ops have lowerings.
STANDARD = {
    "lsg": ("--model", "lsg-bert-tiny"),
    "yoso": ("--model", "yoso-tiny", "--ops", "standard"),
    "reformer": ("--model", "reformer-tiny", "--ops", "standard"),
    "switch": ("--model", "switch-tiny", "--ops", "standard"),  # encoder, decoder, decoder with past
}


@pytest.fixture(scope="module", params=sorted(STANDARD))
def standard(request, cli_export):
    return cli_export(*STANDARD[request.param])


@pytest.fixture(scope="module")
def with_ops(cli_export):
    """An export with bucketrt nodes (YOSO in LSH mode: SignHash, LSHCumulation)."""
    return cli_export("--model", "yoso-tiny")


@pytest.fixture
def no_library(monkeypatch, tmp_path):
    """bucketrt's op library made unreachable: any registration raises LibraryNotBuiltError."""
    monkeypatch.setenv("BUCKETRT_LIBRARY", str(tmp_path / "absent" / "libbucketrt_ort.so"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_standard_op_export_has_no_bucketrt_node(standard):
    import onnx

    from bucketrt.library import uses_bucketrt_ops

    manifest = read_manifest(standard)
    assert manifest["ops"] == []
    for entry in manifest["components"]:
        graph = onnx.load(str(standard / entry["files"]["model"]), load_external_data=False)
        assert not uses_bucketrt_ops(graph)
        assert all(op.domain in ("", "ai.onnx", "ai.onnx.ml") for op in graph.opset_import), graph.opset_import


def test_sessions_of_standard_op_graphs_need_no_library(standard, with_ops, no_library):
    from bucketrt.exporter import make_inputs
    from bucketrt.library import ort_session

    manifest = read_manifest(standard)
    for entry in manifest["components"]:
        session = ort_session(standard, component=entry["name"])
        if entry["name"] == "decoder_with_past_model":  # its inputs are the decoder's outputs; made is enough
            continue
        feeds = make_inputs(manifest, batch_size=2, sequence_length=32, component=entry["name"])
        (first, *_) = session.run(None, feeds)
        assert np.isfinite(first).all(), entry["name"]
    with pytest.raises(LibraryNotBuiltError, match="BUCKETRT_LIBRARY"):
        ort_session(with_ops)


def test_check_passes_without_the_library(standard, with_ops, no_library):
    result = invoke("check", standard, "--sequence-length", 64)
    assert result.exit_code == 0, result.output
    assert "runs it without bucketrt's library" in result.output
    assert "PASSED: ONNX Runtime matches PyTorch" in result.output
    result = invoke("check", with_ops, "--sequence-length", 64)
    assert result.exit_code == 2 and "op library is missing" in result.output, result.output


def test_check_openvino_matches_pytorch(standard, no_library):
    from bucketrt.check import check

    report = check(standard, backend="openvino", batch_size=2, sequence_length=64)
    assert report.backend_label == "OpenVINO"
    assert report.passed, report.to_json()
    assert (report.atol, report.rtol) == (1e-4, 1e-3)  # float32: OpenVINO's bf16 default is turned off
    assert report.max_abs_error < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("batch,length", [(2, 32), (1, 1)], ids=["every-expert", "gathered"])
def test_check_openvino_runs_both_topk_experts_formulations(cli_export, no_library, batch, length):
    """mixtral-tiny (8 experts, top-2): 2x32 tokens take the every-expert formulation of the
    TopKExperts lowering, 1x1 (2 pairs, at most the experts) the gathered-weights one; OpenVINO
    compiles the If between them once (Switch's ExpertFFN takes both: its decoder with past runs
    2 tokens, the encoder 128)."""
    from bucketrt.check import check

    folder = cli_export("--model", "mixtral-tiny", "--ops", "standard")
    report = check(folder, backend="openvino", batch_size=batch, sequence_length=length)
    assert report.passed, report.to_json()
    assert report.max_abs_error < 1e-4


def test_openvino_refuses_bucketrt_ops_in_one_line(with_ops):
    result = CliRunner().invoke(main, ["check", str(with_ops), "--backend", "openvino"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "OpenVINO cannot run bucketrt's ops" in lines[0] and "SignHash" in lines[0]
    assert "--ops standard" in lines[0]


def test_openvino_refuses_bucketrt_nodes_a_manifest_leaves_out(with_ops, tmp_path):
    """A manifest older than its graphs: the graph itself is looked at before OpenVINO reads it."""
    import shutil

    folder = tmp_path / "yoso"
    shutil.copytree(with_ops, folder)
    manifest = read_manifest(folder)
    manifest["ops"] = []
    write_manifest(folder, manifest)
    result = invoke("check", folder, "--backend", "openvino")
    assert result.exit_code == 2, result.output
    assert "OpenVINO cannot run bucketrt's ops, and model.onnx holds" in result.output
    assert "SignHash x" in result.output and "--ops standard" in result.output


def test_ort_model_runs_without_the_library(standard, no_library):
    import onnxruntime as ort

    from bucketrt.exporter import make_inputs
    from bucketrt.runtime import ORTModel

    model = ORTModel.from_pretrained(standard)
    manifest = read_manifest(standard)
    feeds = make_inputs(manifest, batch_size=1, sequence_length=24)
    if len(manifest["components"]) > 1:  # seq2seq: greedy generation through all three sessions
        tokens = model.generate(input_ids=feeds["input_ids"], attention_mask=feeds["attention_mask"], max_new_tokens=4)
        assert tokens.shape[0] == 1 and 1 < tokens.shape[1] <= 5, tokens.shape
        return
    out = model(**feeds)
    plain = ort.InferenceSession(str(standard / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = plain.run(None, feeds)[0]
    np.testing.assert_array_equal(np.asarray(out[0]), expected)


# -- Triton ------------------------------------------------------------------------------------


def _python_model(model_dir: Path):
    """The repository's model.py, initialised in-process with the Triton stand-in."""
    import triton_backend_standin as standin
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as pb2

    sys.modules["triton_python_backend_utils"] = standin
    spec = importlib.util.spec_from_file_location(f"triton_model_{model_dir.name}", model_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), pb2.ModelConfig())
    instance = module.TritonPythonModel()
    instance.initialize(
        {
            "model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_repository": str(model_dir),
            "model_version": "1",
            "model_instance_kind": "CPU",
            "model_instance_device_id": "0",
            "model_name": model_dir.name,
        }
    )
    return config, instance


def test_triton_repositories_need_no_op_library(standard, no_library, tmp_path):
    import onnxruntime as ort
    import triton_backend_standin as standin

    from bucketrt.exporter import make_inputs
    from bucketrt.serving import write_repository

    repo = tmp_path / "repo"
    # forward: one pass, which every backend serves (Reformer's export is a generation one); of a
    # seq2seq export, its encoder
    manifest = read_manifest(standard)
    entry = manifest["components"][0]
    one = {"component": entry["name"]} if len(manifest["components"]) > 1 else {"forward": True}
    write_repository(standard, repo, name="ort", backend="onnxruntime", **one)
    write_repository(standard, repo, name="py", **one)
    assert not list(repo.rglob("*.so")), list(repo.rglob("*.so"))
    assert "op_library_filename" not in (repo / "ort" / "config.pbtxt").read_text()
    assert "--backend-config=tensorrt" not in (repo / "README.md").read_text()

    config, model = _python_model(repo / "py")
    assert config.parameters["op_library"].string_value == ""
    feeds = make_inputs(manifest, batch_size=1, sequence_length=16, component=entry["name"])
    (response,) = model.execute([standin.InferenceRequest(**feeds)])
    assert not response.has_error(), response.error().message()
    answer = {t.name(): t.result() for t in response.output_tensors()}
    plain = ort.InferenceSession(str(standard / entry["files"]["model"]), providers=["CPUExecutionProvider"])
    name = plain.get_outputs()[0].name
    np.testing.assert_array_equal(answer[name], plain.run([name], feeds)[0])


def test_triton_tensorrt_models_of_standard_op_exports_need_no_plugins(standard, tmp_path):
    """An engine built without plugins (its record's plugins null) is served without the plugin
    library; one built by TensorRT for RTX is refused, as Triton's tensorrt backend runs TensorRT's."""
    import shutil

    from bucketrt.errors import BucketrtError
    from bucketrt.serving import write_repository

    folder = tmp_path / "export"
    shutil.copytree(standard, folder)
    manifest = read_manifest(folder)
    entry = manifest["components"][0]
    (folder / "model.engine").write_bytes(b"engine")  # its bytes do not matter to the repository
    profile = {spec["name"]: {"min": [1, 1], "opt": [1, 16], "max": [2, 64]} for spec in entry["inputs"]}
    record = {"file": "model.engine", "profile": profile, "plugins": None, "product": "TensorRT"}
    manifest["engines"] = {entry["name"]: record}
    write_manifest(folder, manifest)
    one = {"component": entry["name"]} if len(manifest["components"]) > 1 else {"forward": True}
    (model,) = write_repository(folder, tmp_path / "repo", backend="tensorrt", max_batch_size=2, **one)
    assert model.files == ["1/model.plan", "config.pbtxt"], model.files
    assert "plugins=" not in (tmp_path / "repo" / "README.md").read_text()

    record["product"] = "TensorRT for RTX"
    write_manifest(folder, manifest)
    with pytest.raises(BucketrtError, match="built with TensorRT for RTX.*--backend onnxruntime"):
        write_repository(folder, tmp_path / "repo2", backend="tensorrt", max_batch_size=2, **one)
