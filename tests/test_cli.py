"""The `bucketrt` command line: export -> check round trips, one-line errors, exit statuses, ops."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from bucketrt.cli.main import main
from bucketrt.exporter import PRESETS

BUCKETRT = Path(sys.executable).with_name("bucketrt")
# The yoso-tiny preset's config: small and in LSH mode.
TINY = PRESETS["yoso-tiny"].config


def run_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    """The installed console script, in a fresh process."""
    assert BUCKETRT.is_file(), f"console script missing: {BUCKETRT} (run `make install`)"
    return subprocess.run([str(BUCKETRT), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def max_abs_from_verdict(stdout: str) -> float:
    match = re.search(r"(PASSED|FAILED): .*max abs error ([0-9.eE+-]+|nan)", stdout)
    assert match, stdout
    return float(match.group(2))


def assert_one_error_line(stderr: str, needle: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    """A save_pretrained YOSO folder whose architectures say text classification."""
    import torch
    from transformers import YosoConfig, YosoForSequenceClassification

    folder = tmp_path_factory.mktemp("hf-yoso")
    torch.manual_seed(3)
    model = YosoForSequenceClassification(YosoConfig(**TINY, num_labels=3))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """yoso-tiny exported in-process through the CLI, with an override and --mask-padding."""
    out = tmp_path_factory.mktemp("cli-tiny")
    result = invoke(
        "export",
        "--model",
        "yoso-tiny",
        out,
        "--task",
        "token-classification",
        "--seed",
        5,
        "--config-override",
        "conv_window=3",
        "--config-override",
        "num_hash=8",
        "--mask-padding",
    )
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


def test_export_folder_then_check_console_script(classifier_folder, tmp_path):
    out = tmp_path / "exported"
    result = run_cli("export", "--model", classifier_folder, out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # torch's exporter chatter is silenced
    assert "Exported" in result.stdout and "LSHCumulation x2" in result.stdout
    manifest = json.loads((out / "bucketrt.json").read_text())
    assert manifest["task"] == "text-classification"  # inferred from config.json's architectures
    assert manifest["source"] == str(classifier_folder.resolve()) and manifest["source_kind"] == "folder"
    assert manifest["components"][0]["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch_size", 3]}]

    result = run_cli("check", out, "--batch-size", 3, "--sequence-length", 45)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout and "logits" in result.stdout
    assert max_abs_from_verdict(result.stdout) <= 1e-4


def test_cli_export_records_options(tiny_export):
    manifest = json.loads((tiny_export / "bucketrt.json").read_text())
    assert manifest["task"] == "token-classification" and manifest["seed"] == 5
    assert manifest["config_overrides"] == {"conv_window": 3, "num_hash": 8}
    assert manifest["config"]["conv_window"] == 3 and manifest["options"] == {"mask_padding": True}
    assert [op["name"] for op in manifest["ops"]] == ["LSHCumulation", "SignHash"]
    assert manifest["dtype"] == "fp32" and manifest["max_sequence_length"] == TINY["max_position_embeddings"]


def test_exported_nodes_carry_the_tensorrt_routing_attributes(tiny_export):
    """TensorRT's parser finds a plugin by op type, plugin_version and plugin_namespace."""
    from bucketrt.ops.catalogue import BY_NAME

    model = onnx.load(str(tiny_export / "model.onnx"), load_external_data=False)
    nodes = [n for n in model.graph.node if n.domain == "bucketrt"]
    assert nodes
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_version"] == str(BY_NAME[node.op_type].version).encode()
        assert attrs["plugin_namespace"] == b"bucketrt"
        assert BY_NAME[node.op_type].resolve_attributes(  # the rest are the op's own attributes
            {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        )


def test_check_passes_and_reports_numbers(tiny_export):
    result = invoke("check", tiny_export, "--sequence-length", 33, "--seed", 4)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout and "logits" in result.stdout
    assert max_abs_from_verdict(result.stdout) <= 1e-4


def test_check_clamps_sequence_length(tiny_export):
    result = invoke("check", tiny_export, "--batch-size", 1, "--sequence-length", 5000)
    assert result.exit_code == 0, result.output
    assert "sequence length 5000 clamped to 512, the export's longest sequence" in result.stdout
    assert "input_ids [1, 512]" in result.stdout


def test_check_fails_on_a_corrupted_export(tiny_export, tmp_path):
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    (corrupted / "bucketrt.json").write_text((tiny_export / "bucketrt.json").read_text())
    model = onnx.load(str(tiny_export / "model.onnx"))
    # Perturb one LayerNorm gain slightly: still a valid model, different numbers.
    target = next(i for i in model.graph.initializer if i.name.endswith("embeddings.LayerNorm.weight"))
    array = onnx.numpy_helper.to_array(target).copy()
    array[0] += 0.05
    target.CopyFrom(onnx.numpy_helper.from_array(array, target.name))
    onnx.save(model, str(corrupted / "model.onnx"))

    result = invoke("check", corrupted, "--sequence-length", 16)
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.stdout and "mismatch" in result.stdout
    assert max_abs_from_verdict(result.stdout) > 1e-3
    # Different hidden states hash differently, far from any rounding flip.
    assert re.search(r"hash codes: \d+ of \d+ hash codes differ .* not rounding", result.stdout), result.stdout
    # The untouched export still passes with the same inputs.
    assert invoke("check", tiny_export, "--sequence-length", 16).exit_code == 0


# --------------------------------------------------------------------------------------------
# errors: exit status 2, one line on stderr, no traceback
# --------------------------------------------------------------------------------------------


def test_unsupported_model_type_console_script(tmp_path):
    from transformers import BertConfig

    folder = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(folder)
    result = run_cli("export", "--model", folder, tmp_path / "out")
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "model type 'bert' is not supported; bucketrt exports: yoso")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--config-override", "hash_code_len=40"], "hash_code_len=40 is not supported; LSH codes have 1 to 30 bits"),
        (["--task", "translation"], "unknown task 'translation' for yoso models; choose one of: feature-extraction"),
        (["--config-override", "no_such_field=3"], "unknown config key 'no_such_field'"),
        (["--config-override", "num_hash"], "bad config override 'num_hash'"),
        (["--config-override", 'use_expectation="yes"'], "bad config override"),
        (["--opset", "9"], "opset 9 is not supported"),
    ],
)
def test_export_usage_errors(tmp_path, args, needle):
    result = invoke("export", "--model", "yoso-tiny", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, needle)
    assert result.stdout == ""  # the failing stage printed nothing
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_export_missing_folder_and_offline_hub(tmp_path, monkeypatch):
    result = invoke("export", "--model", tmp_path / "missing-model", tmp_path / "out")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "does not exist")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    result = invoke("export", "--model", "someone/yoso-not-cached", tmp_path / "out")
    assert result.exit_code == 2
    assert_one_error_line(
        result.stderr, "cannot reach the hub for 'someone/yoso-not-cached'; pass a local folder or a preset"
    )


def test_check_without_manifest(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    result = invoke("check", tmp_path)
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "has no bucketrt.json")
    result = invoke("check", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "does not exist")


def test_check_refuses_a_changed_source(tiny_export, tmp_path):
    """The reference is rebuilt from the source; a fingerprint mismatch is reported, not compared."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)
    manifest = json.loads((copy / "bucketrt.json").read_text())
    manifest["weights_sha256"] = "0" * 64
    (copy / "bucketrt.json").write_text(json.dumps(manifest))
    result = invoke("check", copy, "--sequence-length", 8)
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "differ from those exported")


def test_check_rejects_bad_arguments(tiny_export):
    result = invoke("check", tiny_export, "--batch-size", 0)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------
# ops
# --------------------------------------------------------------------------------------------


def test_ops_lists_catalogue_with_backends():
    from bucketrt.ops.catalogue import OPS

    result = invoke("ops")
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("│") and line.split("│")[1].strip()
    }
    assert {op.name for op in OPS} <= set(rows)
    for op in OPS:
        assert "bucketrt" in rows[op.name] and "ort-cpu" in rows[op.name]
        assert re.search(r"│\s*1\s*│", rows[op.name])  # version
    # Summaries are text, not rich markup: ArgmaxHash's "[xR, -xR]" must survive.
    assert "[xR, -xR]" in result.stdout


def test_ops_library_prints_an_existing_path():
    result = run_cli("ops", "--library")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.is_file() and path.name == "libbucketrt_ort.so"
    # It is a library ONNX Runtime accepts.
    import onnxruntime as ort

    ort.SessionOptions().register_custom_ops_library(str(path))


# --------------------------------------------------------------------------------------------
# bench: runs and reports ratios (timings themselves are benchmarks, not tests)
# --------------------------------------------------------------------------------------------


def test_bench_reports_both_backends_and_their_ratio(tiny_export):
    result = invoke("bench", tiny_export, "--sequence-lengths", "16,64", "--repeat", 1, "--threads", 1)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if re.match(r"│\s*(16|64)\s*│", line)]
    assert len(rows) == 2, result.stdout
    for row in rows:
        torch_ms, ort_ms, speedup = (float(c.strip().rstrip("x")) for c in row.split("│")[2:5])
        assert torch_ms > 0 and ort_ms > 0
        # The ratio of the unrounded times: within what rounding both to 0.1 ms (and it to 0.01) allows.
        low, high = (torch_ms - 0.05) / (ort_ms + 0.05), (torch_ms + 0.05) / max(ort_ms - 0.05, 1e-9)
        assert low - 0.005 <= speedup <= high + 0.005
    assert re.search(r"From N=16 to N=64 \(x4\): ORT time x[0-9.]+, PyTorch time x[0-9.]+", result.stdout)


def test_bench_rejects_malformed_lengths():
    result = run_cli("bench", "out-does-not-matter", "--sequence-lengths", "16,abc")
    assert result.returncode == 2 and "expected comma-separated integers" in result.stderr


def test_an_unexpected_exception_is_one_line_and_status_3(monkeypatch):
    import bucketrt.exporter

    def broken(*args, **kwargs):
        raise KeyError("past_key_values.0.decoder.key")

    monkeypatch.setattr(bucketrt.exporter, "export", broken)  # what the command imports when it runs
    monkeypatch.delenv("BUCKETRT_TRACEBACK", raising=False)
    result = invoke("export", "--model", "yoso-tiny", "/nonexistent/never-written")
    assert result.exit_code == 3
    assert_one_error_line(result.stderr, "internal error: KeyError: 'past_key_values.0.decoder.key'")
    assert "Traceback" not in result.output
    monkeypatch.setenv("BUCKETRT_TRACEBACK", "1")
    result = invoke("export", "--model", "yoso-tiny", "/nonexistent/never-written")
    assert isinstance(result.exception, KeyError)  # re-raised for the traceback
