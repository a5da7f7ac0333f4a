"""bucketrt.check as a library: the report, Polygraphy's comparison rule, the sequence limit."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from bucketrt.check import check, compare, max_sequence_length, mismatched_elements
from bucketrt.cli.main import main


@pytest.fixture(scope="module")
def lsh_export(cli_export):
    """yoso-tiny in LSH mode (SignHash codes to audit), exported once for every file that uses it."""
    return cli_export("--model", "yoso-tiny")


def test_check_returns_a_report_ci_can_assert_on(lsh_export):
    report = check(lsh_export, batch_size=3, sequence_length=5000, seed=2)
    assert report.passed and report.backend == "ort" and report.backend_label == "ONNX Runtime"
    # Clamped to the export's longest sequence (yoso-tiny: 512 positions).
    assert (report.requested_sequence_length, report.sequence_length, report.sequence_limit) == (5000, 512, 512)
    assert report.clamped and (report.atol, report.rtol, report.precision) == (1e-4, 1e-3, "fp32")
    (component,) = report.components
    assert component.name == "model" and component.inputs == {"input_ids": [3, 512], "attention_mask": [3, 512]}
    (output,) = component.outputs
    assert output.name == "last_hidden_state" and output.shape == output.reference_shape == [3, 512, 64]
    assert output.passed and output.mismatched == 0 and output.size == 3 * 512 * 64
    assert 0 <= output.mean_abs <= output.max_abs <= 1e-4 and output.max_abs == report.max_abs_error
    codes = component.hash_codes
    assert codes.passed and codes.complete and codes.code_tensors == codes.hash_calls > 0 and codes.total > 0

    data = json.loads(report.to_json())
    assert data["passed"] is True and data["clamped"] is True
    assert data["components"][0]["outputs"][0]["mismatched"] == 0
    assert data["components"][0]["hash_codes"]["passed"] is True


def test_a_corrupted_export_fails_with_its_counts(lsh_export, tmp_path):
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    (corrupted / "bucketrt.json").write_text((lsh_export / "bucketrt.json").read_text())
    model = onnx.load(str(lsh_export / "model.onnx"))
    target = next(i for i in model.graph.initializer if i.name.endswith("embeddings.LayerNorm.weight"))
    array = onnx.numpy_helper.to_array(target).copy()
    array[0] += 0.05
    target.CopyFrom(onnx.numpy_helper.from_array(array, target.name))
    onnx.save(model, str(corrupted / "model.onnx"))
    report = check(corrupted, sequence_length=16)
    assert not report.passed
    (output,) = report.components[0].outputs
    assert not output.passed and 0 < output.mismatched <= output.size and output.max_abs > 1e-3
    assert report.components[0].hash_codes.unexplained > 0


@pytest.mark.parametrize(
    "actual,expected,count",
    [
        ([1.0, 2.0], [1.0, 2.0], 0),
        ([1.0 + 2e-4, 2.0], [1.0, 2.0], 0),  # above atol, within rtol
        ([1.0 + 2e-3, 2.0], [1.0, 2.0], 1),  # above both
        ([5e-5, 0.0], [0.0, 0.0], 0),  # a zero reference: within atol passes
        ([2e-4, 0.0], [0.0, 0.0], 1),  # ... and above atol fails (relative to Polygraphy's epsilon)
        ([np.nan, 1.0], [1.0, 1.0], 1),
        ([1.0, 1.0], [np.nan, 1.0], 1),
        ([np.inf, 1.0], [np.inf, 1.0], 1),  # inf - inf is NaN: Polygraphy's default
    ],
)
def test_mismatches_follow_polygraphys_verdict(actual, expected, count):
    actual, expected = np.array(actual, np.float32), np.array(expected, np.float32)
    assert mismatched_elements(actual, expected, 1e-4, 1e-3) == count
    (row,) = compare({"y": actual}, {"y": expected}, ["y"], 1e-4, 1e-3)  # raises when the two disagree
    assert row.passed == (count == 0) and row.mismatched == count


def test_compare_reports_missing_and_misshapen_outputs():
    a = np.zeros((2, 3), np.float32)
    missing, misshapen = compare({"b": a.reshape(3, 2)}, {"a": a, "b": a}, ["a", "b"], 1e-4, 1e-3)
    assert missing.missing and not missing.passed and missing.shape is None
    assert not misshapen.passed and misshapen.mismatched == 6 and misshapen.reference_shape == [2, 3]


def test_max_sequence_length_reads_the_export():
    assert max_sequence_length({"max_sequence_length": 4094, "config": {"max_position_embeddings": 4096}}) == 4094
    assert max_sequence_length({"max_sequence_length": None, "config": {}}) is None  # Switch: no limit
    assert max_sequence_length({"config": {"max_position_embeddings": 512}}) == 512  # older manifests


def test_check_json_on_stdout(lsh_export):
    result = CliRunner().invoke(main, ["check", str(lsh_export), "--sequence-length", "16", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["sequence_length"] == 16 and data["components"][0]["outputs"][0]["passed"]


def test_usage_errors_are_bucketrt_errors(lsh_export):
    from bucketrt.errors import BucketrtError

    with pytest.raises(BucketrtError, match="--rebuild applies to --backend trt only"):
        check(lsh_export, rebuild=True)
    with pytest.raises(BucketrtError, match="unknown backend 'cuda'"):
        check(lsh_export, backend="cuda")
    with pytest.raises(BucketrtError, match="sequence length must be at least 1"):
        check(lsh_export, sequence_length=0)


@pytest.fixture(scope="module")
def switch_export(cli_export):
    """switch-tiny: three components (encoder, decoder, decoder with past), each one routing."""
    return cli_export("--model", "switch-tiny")


@pytest.mark.slow
def test_one_check_parses_each_graph_once_and_reads_the_manifest_once(switch_export, monkeypatch):
    """In Python, per component: one onnx.load, one node check on that proto, and the codes
    session built from it in memory (no file written); one manifest read for the whole check."""
    import tempfile
    from collections import Counter
    from pathlib import Path

    from bucketrt.export_format import manifest as manifest_module
    from bucketrt.exporter import rebuild
    from bucketrt.ops import node_check

    loads, checked, manifests, temporary = Counter(), [], [], []
    real_load, real_check = onnx.load, node_check.check_nodes
    real_read, real_mkstemp = manifest_module.read_manifest, tempfile.mkstemp

    def load(f, *args, **kwargs):
        loads[Path(f).name] += 1
        return real_load(f, *args, **kwargs)

    def check_nodes(model):
        checked.append(model)
        return real_check(model)

    def read_manifest(folder):
        manifests.append(folder)
        return real_read(folder)

    def mkstemp(*args, **kwargs):
        temporary.append(kwargs.get("dir"))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(onnx, "load", load)
    monkeypatch.setattr(onnx, "load_model", load)
    monkeypatch.setattr(node_check, "check_nodes", check_nodes)
    monkeypatch.setattr(manifest_module, "read_manifest", read_manifest)
    monkeypatch.setattr(rebuild, "read_manifest", read_manifest)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    report = check(switch_export, batch_size=2, sequence_length=16)
    assert report.passed and len(report.components) == 3
    assert all(c.routing is not None and c.routing.complete for c in report.components)
    assert loads == Counter({c.model: 1 for c in report.components})
    assert len(checked) == 3 and all(isinstance(model, onnx.ModelProto) for model in checked)
    assert len(manifests) == 1 and not temporary


@pytest.mark.slow
def test_a_model_with_external_data_checks_on_a_copy_beside_it(tmp_path, monkeypatch):
    """The codes session of a model with external data reads a temporary copy beside the model, so
    that NAME.onnx.data resolves; the copy is removed after."""
    import tempfile

    from bucketrt.exporter import export, onnx_export

    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_BYTES", 0)
    export("yoso-tiny", tmp_path, config_overrides={"num_hidden_layers": 1})
    assert (tmp_path / "model.onnx.data").exists()
    files = sorted(tmp_path.iterdir())
    temporary, real_mkstemp = [], tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        temporary.append(kwargs.get("dir"))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    report = check(tmp_path, sequence_length=16)
    assert report.passed and report.components[0].hash_codes.complete
    assert temporary == [tmp_path] and sorted(tmp_path.iterdir()) == files
