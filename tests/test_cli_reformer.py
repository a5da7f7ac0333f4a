"""The CLI on Reformer: export the presets, check them (hash codes audited), options and errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bucketrt.cli.main import main

# Slow: Reformer exported and checked through the CLI (`-m 'not slow'` leaves this file out).
pytestmark = pytest.mark.slow


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_export(cli_export):
    # Exported once for every file that uses it (tests/conftest.py).
    return cli_export("--model", "reformer-tiny", "--seed", 3)


def test_export_records_the_reformer_facts(tiny_export):
    manifest = json.loads((tiny_export / "bucketrt.json").read_text())
    assert manifest["family"] == "reformer" and manifest["task"] == "text-generation" and manifest["mode"] == "lsh"
    assert manifest["num_buckets"] == [8] and manifest["max_length"] == 16 * 32
    assert manifest["rotations"]["layers"] == [1] and manifest["rotations"]["shape_per_layer"] == [2, 16, 8]
    assert {op["name"]: op["nodes"] for op in manifest["ops"]} == {"ArgmaxHash": 1, "SortedChunkAttention": 2}


@pytest.mark.parametrize("length", [7, 16, 50])  # one chunk or less; one chunk; padded by HF
def test_check_passes_with_hash_codes_audited(tiny_export, length):
    result = invoke("check", tiny_export, "--batch-size", 3, "--sequence-length", length)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "hash codes" in result.output


def test_other_tasks_and_num_buckets_none_export(tmp_path):
    out = tmp_path / "qa"
    result = invoke(
        "export",
        "--model",
        "reformer-tiny",
        out,
        "--task",
        "question-answering",
        "--config-override",
        "is_decoder=false",
        "--config-override",
        "num_buckets=null",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "bucketrt.json").read_text())
    # 2 * 512 / 16 = 64 buckets, above the limit 2 * max(sqrt(512 / 16), 16) = 32: factorised.
    assert manifest["num_buckets"] == [8, 8] and manifest["num_buckets_resolved_from"] == 512
    result = invoke("check", out, "--sequence-length", 40)
    assert result.exit_code == 0, result.output


def test_task_that_contradicts_the_config_is_one_readable_line(tmp_path):
    result = invoke("export", "--model", "reformer-tiny", tmp_path / "x", "--task", "fill-mask")
    assert result.exit_code != 0
    assert "is_decoder" in result.output and "Traceback" not in result.output


def test_crime_and_punishment_preset_is_that_architecture():
    from bucketrt.exporter.presets import PRESETS

    config = PRESETS["reformer-crime-and-punishment"].config
    assert config["attn_layers"] == ["local", "lsh"] * 3
    assert (config["axial_pos_shape"], config["axial_pos_embds_dim"]) == ([512, 1024], [64, 192])
    assert (config["hidden_size"], config["num_attention_heads"], config["attention_head_size"]) == (256, 2, 64)
    assert (config["num_buckets"], config["num_hashes"], config["vocab_size"]) == ([64, 128], 1, 320)
    assert (config["lsh_attn_chunk_length"], config["local_attn_chunk_length"], config["feed_forward_size"]) == (
        64,
        64,
        512,
    )
    assert config["is_decoder"] and config["max_position_embeddings"] == 524288
