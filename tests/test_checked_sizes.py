"""The kernels' shape arithmetic is checked: extreme dims and attributes give an error naming the op,
never a wrapped size. tests/checked_sizes_check.cc calls the runtime-free plan functions directly;
it is built with UBSan (no recovery), so a signed overflow anywhere on those paths fails the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["validate", "sign_hash", "argmax_hash", "sorted_chunk_attention", "top1_dispatch"]


def test_plans_reject_sizes_that_overflow_without_undefined_behaviour(tmp_path):
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("needs a C++ compiler")
    generated = tmp_path / "generated" / "bucketrt"
    generated.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "bucketrt.ops.codegen", "header", str(generated / "op_specs.h")], check=True)
    driver = tmp_path / "checked_sizes_check"
    build = subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-fsanitize=undefined",
            "-fno-sanitize-recover=undefined",
            "-I",
            str(tmp_path / "generated"),
            "-I",
            str(ROOT / "plugins/include"),
            "-I",
            str(ROOT / "plugins"),
            str(ROOT / "tests/checked_sizes_check.cc"),
            *[str(ROOT / f"plugins/cpu/{s}.cc") for s in SOURCES],
            "-o",
            str(driver),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "sanitize" in build.stderr and "cannot find" in build.stderr:
        pytest.skip("the compiler has no UBSan runtime")
    assert build.returncode == 0, build.stderr
    result = subprocess.run([str(driver)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("0 failed"), result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("SortedChunkAttention: the sizes overflow int64 computing the window" in line for line in lines)
    assert any("ArgmaxHash: the sizes overflow int64" in line for line in lines)
    assert any("SignHash: the sizes overflow int64" in line for line in lines)
