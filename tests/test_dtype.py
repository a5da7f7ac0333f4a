"""`bucketrt export --dtype fp16`: an fp16 graph, checked against the float32 reference.

Every bucketrt op takes float16 (its spec's `float_types`), so every family exports in fp16:
YOSO in both modes, Reformer, Switch (router kept in float32) and LSG. A model using an op that
would take float32 only is refused in one line (tested with a float32-only copy of an op's spec).
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from bucketrt.cli.main import main

# Slow: fp16 exports of every family checked against the fp32 reference (`-m 'not slow'` leaves this file out).
pytestmark = pytest.mark.slow


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "yoso"
    result = invoke(
        "export", "--model", "yoso-tiny", out, "--config-override", "use_expectation=true", "--dtype", "fp16"
    )
    assert result.exit_code == 0, result.output
    assert "; fp16; bucketrt ops: standard ONNX only" in result.stdout
    return out


def test_fp16_export_has_float16_weights_and_outputs(fp16_export):
    manifest = json.loads((fp16_export / "bucketrt.json").read_text())
    assert manifest["dtype"] == "fp16" and manifest["ops"] == []
    (entry,) = manifest["components"]
    assert [i["dtype"] for i in entry["inputs"]] == ["int64", "int64"]  # ids and mask stay integers
    assert [o["dtype"] for o in entry["outputs"]] == ["float16"]
    model = onnx.load(str(fp16_export / "model.onnx"))
    assert {p.key: p.value for p in model.metadata_props}["bucketrt.dtype"] == "fp16"
    # Every weight is float16 (scalar constants are typed as the model's code types them: HF's
    # YOSO makes its attention mask float32).
    weights = [
        i
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and int(np.prod(i.dims)) > 1
    ]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)


def test_fp16_export_checks_against_the_fp32_reference(fp16_export):
    result = invoke("check", fp16_export, "--sequence-length", 64)
    assert result.exit_code == 0, result.output
    assert "reduced precision (the export is fp16): default tolerances atol 0.01, rtol 0.01" in result.stdout
    error = float(re.search(r"PASSED: .*max abs error ([0-9.eE+-]+); atol 0.01, rtol 0.01", result.stdout).group(1))
    # fp16 rounding, far above fp32's and far below the tolerance.
    assert 1e-5 < error < 1e-2
    # At fp32 tolerances the same comparison fails: the defaults follow the precision.
    result = invoke("check", fp16_export, "--sequence-length", 64, "--atol", "1e-4", "--rtol", "1e-3")
    assert result.exit_code == 1 and "FAILED" in result.stdout


def test_fp16_export_with_float16_ops_checks_against_the_fp32_reference(tmp_path):
    # YOSO in LSH mode: SignHash and LSHCumulation run on float16 tensors (the CPU kernels widen
    # them to float32). Its all-zero context rows normalise in float32 (0/0 in float16 is NaN).
    out = tmp_path / "lsh"
    result = invoke("export", "--model", "yoso-tiny", out, "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out / "model.onnx"))
    ops = [n for n in model.graph.node if n.domain == "bucketrt"]
    assert {n.op_type for n in ops} == {"SignHash", "LSHCumulation"}
    result = invoke("check", out, "--sequence-length", 64)
    assert result.exit_code == 0, result.output
    error = float(re.search(r"max abs error ([0-9.e+-]+)", result.stdout).group(1))
    assert error < 1e-2


@pytest.mark.parametrize(
    "preset,overrides,length",
    [
        ("reformer-tiny", (), 64),
        ("switch-tiny", (), 24),
        ("lsg-bert-tiny", ("--config-override", "sparsity_type=lsh"), 100),
        ("mixtral-tiny", (), 24),  # the cached decoding step: fp16 past key/values in and out
    ],
)
def test_fp16_exports_of_every_family_check_against_the_fp32_reference(tmp_path, preset, overrides, length):
    out = tmp_path / preset
    result = invoke("export", "--model", preset, out, *overrides, "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    result = invoke("check", out, "--sequence-length", length)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout


def test_fp16_export_of_a_model_with_float32_only_ops_is_refused(tmp_path, monkeypatch):
    import dataclasses

    import bucketrt.exporter.onnx_export as onnx_export

    float32_only = {
        name: dataclasses.replace(op, float_types=("float32",)) if name == "ArgmaxHash" else op
        for name, op in onnx_export.BY_NAME.items()
    }
    monkeypatch.setattr(onnx_export, "BY_NAME", float32_only)
    result = invoke("export", "--model", "reformer-tiny", tmp_path / "out", "--dtype", "fp16")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: fp16 needs the ops' fp16 kernels; float32 only in this bucketrt: ArgmaxHash; export with --dtype fp32"
    ), result.stderr
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_unknown_dtype():
    from bucketrt.errors import BucketrtError
    from bucketrt.exporter import export

    with pytest.raises(BucketrtError, match="dtype 'bf16' is not supported; choose one of: fp32, fp16"):
        export("yoso-tiny", "/nonexistent/never-written", dtype="bf16")
    assert invoke("export", "--model", "yoso-tiny", "/nonexistent/x", "--dtype", "bf16").exit_code == 2


def test_check_feeds_the_graph_types_and_the_reference_the_same_values_in_float32():
    from bucketrt.check import typed_feeds as _typed_feeds

    entry = {
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "decoder_sequence_length"]},
            {
                "name": "encoder_hidden_states",
                "dtype": "float16",
                "shape": ["batch_size", "encoder_sequence_length", 4],
            },
        ]
    }
    states = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    ids = np.arange(3, dtype=np.int64)[None]
    backend, reference = _typed_feeds(entry, {"input_ids": ids, "encoder_hidden_states": states})
    assert (
        backend["encoder_hidden_states"].dtype == np.float16 and reference["encoder_hidden_states"].dtype == np.float32
    )
    np.testing.assert_array_equal(
        reference["encoder_hidden_states"], backend["encoder_hidden_states"].astype(np.float32)
    )
    assert backend["input_ids"] is reference["input_ids"] or np.array_equal(backend["input_ids"], ids)
