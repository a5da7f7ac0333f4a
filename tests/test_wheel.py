"""make wheel's wheel where nothing can be compiled: installed with pip into a fresh environment
whose PATH holds no compiler, CMake or nvcc and whose environment names no ONNX Runtime headers or
CUDA toolkit (every dependency a binary wheel: --only-binary :all:), then run from there, outside
the checkout: an export of a tiny preset, `bucketrt check`, `bucketrt ops` and a session with the
op library, whose outputs match this environment's session of the same export.

`make test-wheel` builds the wheel (from make install's build, CI's way) and runs this file with
BUCKETRT_WHEEL; without it (plain `make test`) the file is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import bucketrt
from bucketrt.ops.catalogue import OPS

WHEEL = str(Path(os.environ["BUCKETRT_WHEEL"]).resolve()) if os.environ.get("BUCKETRT_WHEEL") else None
pytestmark = pytest.mark.skipif(not WHEEL, reason="make test-wheel builds the wheel and runs this (BUCKETRT_WHEEL)")

# What a build would need, none of which may be found in the fresh environment.
BUILD_TOOLS = ("gcc", "g++", "cc", "c++", "clang", "clang++", "nvcc", "cmake", "ninja", "make", "ld")
# Variables that would point a build at headers, toolkits or another copy of the library.
BUILD_VARIABLES = (
    "CC",
    "CXX",
    "CUDACXX",
    "CUDAARCHS",
    "CUDA_HOME",
    "CUDA_PATH",
    "ORT_INCLUDE_DIR",
    "EIGEN3_INCLUDE_DIR",
    "TensorRT_ROOT",
    "CMAKE_ARGS",
    "CPATH",
    "CPLUS_INCLUDE_PATH",
    "LIBRARY_PATH",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "BUCKETRT_LIBRARY",
)
# The only libraries the wheel's op library may need: the C and C++ runtimes every manylinux system has.
SYSTEM_LIBRARIES = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2"}
# Session inputs: two rows of 24 tokens, the second padded after 18.
IDS = np.random.default_rng(11).integers(3, 1000, (2, 24), dtype=np.int64)
MASK = np.array([[1] * 24, [1] * 18 + [0] * 6], dtype=np.int64)

SESSION_SCRIPT = """
import sys
import numpy as np
import bucketrt
with np.load(sys.argv[2]) as feeds:
    feeds = dict(feeds)
session = bucketrt.ort_session(sys.argv[1])
names = [o.name for o in session.get_outputs()]
np.savez(sys.argv[3], **dict(zip(names, session.run(names, feeds))))
print(bucketrt.library_path())
"""


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict:
    """The fresh environment with the wheel installed: its folder, a clean process environment and a
    working folder outside the checkout."""
    root = tmp_path_factory.mktemp("wheel-env")
    venv = root / "venv"
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in BUILD_VARIABLES}
    env["PATH"] = str(venv / "bin")
    # torch 2.13.0 named as the Makefile does (the CPU build on this machine); every package a
    # wheel, so nothing is compiled.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
        + ["--only-binary", ":all:", WHEEL, "torch==2.13.0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    work = root / "work"
    work.mkdir()
    return {"venv": venv, "env": env, "cwd": work}


def run(fresh: dict, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=fresh["env"], cwd=fresh["cwd"], timeout=timeout
    )


def test_the_wheel_is_portable_and_carries_only_the_op_library():
    name = Path(WHEEL).name
    # One wheel for every Python (no extension module), tagged by auditwheel.
    assert re.fullmatch(r"bucketrt-[0-9.]+-py3-none-manylinux_2_\d+_x86_64\.whl", name), name
    files = zipfile.ZipFile(WHEEL).namelist()
    assert "bucketrt/libbucketrt_ort.so" in files
    # Nothing grafted (no bucketrt.libs/): ONNX Runtime and the CUDA runtime are the user's.
    assert not [f for f in files if ".libs/" in f], files
    # The test-only CUDA harness is not shipped.
    assert "bucketrt/libbucketrt_cuda_harness.so" not in files


def test_nothing_to_compile_with(fresh):
    done = run(
        fresh,
        fresh["venv"] / "bin" / "python",
        "-c",
        f"import shutil; print([t for t in {BUILD_TOOLS!r} if shutil.which(t)])",
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils (readelf) not installed")
def test_the_installed_library_needs_only_system_libraries(fresh):
    done = run(fresh, fresh["venv"] / "bin" / "bucketrt", "ops", "--library")
    assert done.returncode == 0, done.stderr
    library = Path(done.stdout.strip())
    assert library.is_relative_to(fresh["venv"]), library
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic))
    assert needed <= SYSTEM_LIBRARIES, needed - SYSTEM_LIBRARIES


def test_export_check_ops_and_a_session(fresh, tmp_path):
    bucketrt_cli = fresh["venv"] / "bin" / "bucketrt"
    out = fresh["cwd"] / "yoso"
    done = run(fresh, bucketrt_cli, "export", "--model", "yoso-tiny", out)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    done = run(fresh, bucketrt_cli, "check", out, "-n", "32")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

    done = run(fresh, bucketrt_cli, "ops")
    assert done.returncode == 0, done.stderr
    for op in OPS:
        assert op.name in done.stdout, op.name
    assert "ort-cpu" in done.stdout

    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, input_ids=IDS, attention_mask=MASK)
    got_file = tmp_path / "got.npz"
    done = run(fresh, fresh["venv"] / "bin" / "python", "-c", SESSION_SCRIPT, out, feeds, got_file)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()).is_relative_to(fresh["venv"]), done.stdout
    session = bucketrt.ort_session(out)
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(names, {"input_ids": IDS, "attention_mask": MASK})))
    with np.load(got_file) as got:
        assert sorted(got.files) == sorted(expected)
        for name, want in expected.items():
            # The same kernels, compiled alike, under the same onnxruntime release from the registry.
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
