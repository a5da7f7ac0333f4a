"""Real TensorRT engines, built here: `bucketrt build --rtx` with TensorRT for RTX (`make trt-rtx-env`,
which `make test` runs), which builds without a GPU. The engines cannot run here (no GPU; TensorRT
for RTX runs on Ampere, Ada and Blackwell): what is tested is that TensorRT for RTX parses every
family's standard-op export and builds an engine of it with the profile from the manifest's limits,
recorded in the manifest, and that an export with bucketrt ops is refused in one line before its
parser runs (the parser aborts the process after creating a bucketrt plugin).

Each build runs `bucketrt build` in a process of its own, as a user runs it: Polygraphy serves one
TensorRT product per process, and a parser that aborts must not take the test run with it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bucketrt.export_format.manifest import max_sequence_length, read_manifest, write_manifest
from bucketrt.trt.engine import TENSORRT_RTX, installed

if not installed(TENSORRT_RTX):
    pytest.skip("TensorRT for RTX is not installed: run `make trt-rtx-env`", allow_module_level=True)

# Every family's standard-op export, tiny presets (LSG calls no bucketrt op: its default export is one;
# with lsh sparsity it hashes and merges with ArgmaxHash and BucketSum).
STANDARD = {
    "lsg": ("--model", "lsg-bert-tiny"),
    "lsg-lsh": ("--model", "lsg-bert-tiny", "--ops", "standard", "--config-override", 'sparsity_type="lsh"'),
    "yoso": ("--model", "yoso-tiny", "--ops", "standard"),  # LSH mode: SignHash, LSHCumulation
    "reformer": ("--model", "reformer-tiny", "--ops", "standard"),
    "switch": ("--model", "switch-tiny", "--ops", "standard"),  # encoder, decoder, decoder with past
    "mixtral": ("--model", "mixtral-tiny", "--ops", "standard"),  # the moe family: one step with a cache
}


def build(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bucketrt.cli.main", "build", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(STANDARD))
def test_build_engines_of_standard_op_exports(cli_export, family):
    folder = cli_export(*STANDARD[family])
    result = build(folder, "--rtx")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TensorRT for RTX" in result.stdout and "plugins: none" in result.stdout
    manifest = read_manifest(folder)
    limit = max_sequence_length(manifest)
    assert set(manifest["engines"]) == {e["name"] for e in manifest["components"]}
    for entry in manifest["components"]:
        record = manifest["engines"][entry["name"]]
        assert record["product"] == "TensorRT for RTX" and record["plugins"] is None
        assert record["strongly_typed"] is True and record["precision"] == "tf32"
        engine = folder / record["file"]
        assert engine.stat().st_size > 100_000, engine
        # The profile covers every input, each token axis up to the export's limit.
        assert set(record["profile"]) == {spec["name"] for spec in entry["inputs"]}
        for spec in entry["inputs"]:
            r = record["profile"][spec["name"]]
            for axis, dim in enumerate(spec["shape"]):
                if dim in ("sequence_length", "encoder_sequence_length"):
                    assert (r["min"][axis], r["max"][axis]) == (1, limit or 512), (spec, r)
                elif dim == "batch_size":
                    assert (r["min"][axis], r["max"][axis]) == (1, 8), (spec, r)
        # A step with a cache: at every corner of the profile the mask spans the cached and new tokens
        # (TensorRT evaluates the graph's shapes there), and the first step's empty cache is in range.
        dims = {
            (dim, selector): record["profile"][spec["name"]][selector][axis]
            for spec in entry["inputs"]
            for axis, dim in enumerate(spec["shape"])
            for selector in ("min", "opt", "max")
        }
        if ("past_sequence_length", "min") in dims:
            assert dims["past_sequence_length", "min"] == 0
            for selector in ("min", "opt", "max"):
                cached, new = dims["past_sequence_length", selector], dims["sequence_length", selector]
                assert dims["total_sequence_length", selector] == cached + new, selector


def test_given_shapes_make_the_profile(cli_export, tmp_path):
    folder = cli_export(*STANDARD["lsg"])
    engine = tmp_path / "small.engine"
    result = build(
        folder,
        "--rtx",
        "--min-shapes",
        "input_ids:1x1",
        "--max-shapes",
        "input_ids:2x64",
        "--opt-shapes",
        "input_ids:1x32",
        "--engine",
        engine,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((folder / "bucketrt.json").read_text())["engines"]["model"]
    assert record["file"] == str(engine.resolve()) and engine.is_file()
    assert record["profile"]["attention_mask"] == {"min": [1, 1], "opt": [1, 32], "max": [2, 64]}


def assert_refused_in_one_line(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)  # not SIGABRT (-6)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in ("TensorRT for RTX has no plugin layers", "--ops standard", *needles):
        assert needle in lines[0], lines[0]
    assert "Building" not in result.stdout, result.stdout  # refused before the parser


def test_an_export_with_bucketrt_ops_is_refused_before_the_parser(cli_export):
    folder = cli_export("--model", "yoso-tiny")
    assert_refused_in_one_line(build(folder, "--rtx"), "SignHash x")
    assert "engines" not in read_manifest(folder)


def test_bucketrt_nodes_a_manifest_leaves_out_are_refused_too(cli_export, tmp_path):
    """The graph is looked at before the parser sees it, whatever the manifest says."""
    folder = tmp_path / "yoso"
    shutil.copytree(cli_export("--model", "yoso-tiny"), folder)
    manifest = read_manifest(folder)
    manifest["ops"] = []
    write_manifest(folder, manifest)
    assert_refused_in_one_line(build(folder, "--rtx"), "model.onnx", "SignHash x")


def test_rtx_usage_errors(cli_export):
    folder = cli_export(*STANDARD["lsg"])
    result = build(folder, "--rtx", "--fp16")
    assert result.returncode == 2 and "strongly typed" in result.stderr, result.stderr
    result = build(folder, "--rtx", "--plugins", __file__)
    assert result.returncode == 2 and "no plugin layers" in result.stderr, result.stderr
