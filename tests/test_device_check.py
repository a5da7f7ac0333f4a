"""benchmarks/device_check.sh without a GPU: stand-ins for nvidia-smi, compute-sanitizer and the
Python that runs the tests and benchmarks (written here; the real ones need a GPU), so that the
script's own logic is what runs: its summary file, its per-stage verdicts, and compute-sanitizer's
stage skipped within seconds where the device is not supported."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks/device_check.sh"

FAKE_PYTHON = """#!/bin/bash
case "$*" in
  *"-m pytest"*" -k "*) echo "sanitized subset"; echo "5 passed in 1.00s";;
  *"-m pytest"*) echo "..."; echo "120 passed, 3 skipped in 1.20s";;
  *cuda_kernels.py*)
    echo "| dtype | N | SignHash x2 ms | LSHCumulation ms | YOSO ms | SDPA ms | SDPA / YOSO |"
    echo "| float32 | 16384 | 0.100 | 0.200 | 0.300 | 0.900 | 3.0x |"
    echo "| float16 | 16384 | 0.100 | 0.200 | 0.300 | 0.510 | 1.7x |"
    echo "| model | dtype | tokens | pairs | experts hit | TopKExperts ms | GFLOP/s | weights GB/s | torch ms | torch / ours |"
    echo "| Mixtral-8x7B | float16 | 16 | 32 | 8 | 0.500 | 300 | 5600 | 0.900 | 1.80x |"
    echo "| Mixtral-8x7B | float16 | 2048 | 4096 | 8 | 50.000 | 28800 | 56 | 20.000 | 0.40x |";;
  *libcuda*) echo "probe ok";;
  *) echo "torch 2.13 cuda 13.0 NVIDIA H200 numpy 2";;
esac
"""

UNSUPPORTED_SANITIZER = """#!/bin/bash
echo "========= COMPUTE-SANITIZER"
echo "========= Error: Device not supported. Please refer to the \\"Supported Devices\\" section of the documentation."
exit 1
"""

# Runs what it is given after its own options (--tool X, --error-exitcode N, --print-limit N).
WORKING_SANITIZER = """#!/bin/bash
while [ $# -gt 0 ]; do
  case "$1" in --tool|--error-exitcode|--print-limit) shift 2;; *) break;; esac
done
"$@"
"""


def _run(tmp_path: Path, sanitizer: str) -> tuple[subprocess.CompletedProcess, dict[str, str], float]:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {
        "nvidia-smi": 'echo "NVIDIA H200, 570.86, 143771 MiB, 1980 MHz"\n',
        "compute-sanitizer": sanitizer,
        "python": FAKE_PYTHON,
    }.items():
        path = bin_dir / name
        path.write_text(text if text.startswith("#!") else "#!/bin/bash\n" + text)
        path.chmod(0o755)
    library = tmp_path / "device" / "libbucketrt_ort.so"
    library.parent.mkdir()
    library.write_bytes(b"")
    (library.parent / "libbucketrt_cuda_harness.so").write_bytes(b"")  # where a harness library is looked for
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHON": str(bin_dir / "python"),
        "OUT": str(out),
        "BUCKETRT_LIBRARY": str(library),
    }
    start = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - start
    lines = (out / "summary.txt").read_text().splitlines()
    return result, {line.split()[0]: line for line in lines}, elapsed


def test_unsupported_device_skips_the_sanitizer_in_seconds(tmp_path):
    result, summary, elapsed = _run(tmp_path, UNSUPPORTED_SANITIZER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(summary) == ["machine", "tests", "benchmarks", "sanitizer", "total"], summary
    assert "NVIDIA H200" in summary["machine"]
    assert " ok " in summary["tests"] and "120 passed, 3 skipped" in summary["tests"]
    assert "SDPA/YOSO at N=16384: float32 3.0x, float16 1.7x" in summary["benchmarks"]
    assert "TopKExperts at 2048 tokens: Mixtral-8x7B float16 28800 GFLOP/s (torch/ours 0.40x)" in summary["benchmarks"]
    assert "skipped: compute-sanitizer: Device not supported" in summary["sanitizer"]
    assert elapsed < 20, elapsed


def test_supported_device_runs_both_sanitizer_tools(tmp_path):
    result, summary, _ = _run(tmp_path, WORKING_SANITIZER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memcheck ok, racecheck ok" in summary["sanitizer"], summary["sanitizer"]
    assert " ok " in summary["total"] and "budget 420 s" in summary["total"]
