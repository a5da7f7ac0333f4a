"""libbucketrt_ort.so as a long-running server loads it: it exports exactly its documented entry
points (plugins/README.md), no libstdc++ symbol and no STB_GNU_UNIQUE one, so dlclose really
unloads it; a second registration on one SessionOptions says what went wrong in bucketrt's words;
its worker counts follow the CPUs the process may use and the session's pool, and no result
depends on them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from child_process import run_op_in_child
from op_inputs import in_float_type, workers_calls

import bucketrt
from bucketrt.library import op_session
from bucketrt.ops import catalogue
from bucketrt.ops.catalogue import BY_NAME

ROOT = Path(__file__).resolve().parents[1]
# The op library's documented API (plugins/README.md): ORT's entry point and the backends query.
DOCUMENTED_SYMBOLS = {"RegisterCustomOps", "BucketrtBackends", "BucketrtCpuVariants"}
HARNESS_SYMBOLS = {
    "BucketrtCudaPlan",
    "BucketrtCudaRun",
    "BucketrtCudaReportBytes",
    "BucketrtCudaEnqueueReport",
    "BucketrtCudaReportError",
}


def _dynamic_symbols(library: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", library], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def _harness() -> str | None:
    from bucketrt.library import cuda

    path = cuda.harness_path()
    return path if Path(path).is_file() else None


needs_binutils = pytest.mark.skipif(
    shutil.which("nm") is None or shutil.which("readelf") is None, reason="binutils (nm, readelf) not installed"
)


@needs_binutils
def test_op_library_exports_exactly_the_documented_symbols():
    assert _dynamic_symbols(bucketrt.library_path()) == DOCUMENTED_SYMBOLS


@needs_binutils
def test_harness_library_exports_exactly_its_entry_points():
    harness = _harness()
    if harness is None:
        pytest.skip("built without CUDA: no harness library")
    assert _dynamic_symbols(harness) == HARNESS_SYMBOLS
    assert not HARNESS_SYMBOLS & _dynamic_symbols(bucketrt.library_path())


@needs_binutils
@pytest.mark.parametrize("which", ["op library", "harness"])
def test_no_gnu_unique_symbol(which):
    # An STB_GNU_UNIQUE symbol pins a library in the process: dlclose can then never unload it.
    library = bucketrt.library_path() if which == "op library" else _harness()
    if library is None:
        pytest.skip("built without CUDA: no harness library")
    out = subprocess.run(["readelf", "--dyn-syms", "-W", library], capture_output=True, text=True, check=True).stdout
    assert "UNIQUE" not in out, [line for line in out.splitlines() if "UNIQUE" in line]


def _child(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_dlclose_unloads_the_library():
    script = r"""
import ctypes, _ctypes, os, sys
path = os.path.realpath(sys.argv[1])
def mapped():
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith(path) for line in maps)
lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
lib.BucketrtBackends.restype = ctypes.c_char_p
assert lib.BucketrtBackends().startswith(b"LSHCumulation=ort-cpu")
assert mapped()
_ctypes.dlclose(lib._handle)
print("mapped" if mapped() else "unloaded")
"""
    assert _child(script, bucketrt.library_path()).strip() == "unloaded"


def test_onnxruntime_unloads_the_library_after_its_sessions():
    # Registered, run, then every SessionOptions and session gone: ORT's dlclose unmaps it.
    pytest.importorskip("onnxruntime")
    script = r"""
import gc, os, sys
import numpy as np
import bucketrt
from bucketrt.library import op_session
from bucketrt.ops import catalogue
from bucketrt.ops.catalogue import BY_NAME
path = os.path.realpath(bucketrt.library_path())
def mapped():
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith(path) for line in maps)
session = op_session(BY_NAME["BucketSum"], {"num_buckets": 4})
(sums, weights) = session.run(None, {"bucket": np.array([[0, 1, 1]], np.int32), "weight": np.ones((1, 3), np.float32),
                                     "vector": np.ones((1, 3, 2), np.float32)})
assert sums.tolist() == [[[1, 1], [2, 2], [0, 0], [0, 0]]], sums
assert mapped()
del session
gc.collect()
print("mapped" if mapped() else "unloaded")
"""
    assert _child(script).strip() == "unloaded"


def test_second_registration_names_bucketrt_and_the_fix(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from bucketrt.ops.graph import single_op_model

    model = tmp_path / "model.onnx"
    model.write_bytes(single_op_model(BY_NAME["BucketSum"], {"num_buckets": 4}).SerializeToString())
    options = ort.SessionOptions()
    options.register_custom_ops_library(bucketrt.library_path())
    with pytest.raises(Exception) as info:
        options.register_custom_ops_library(bucketrt.library_path())
    message = str(info.value)
    assert "bucketrt: the op library is already registered on these SessionOptions" in message, message
    assert "register it once per SessionOptions" in message, message
    # The helper that registers for the caller says the same for options registered already.
    with pytest.raises(Exception) as info:
        bucketrt.ort_session(model, options=bucketrt.session_options())
    assert "already registered on these SessionOptions" in str(info.value)
    # A fresh SessionOptions still registers (the first registration is untouched).
    fresh = ort.SessionOptions()
    fresh.register_custom_ops_library(bucketrt.library_path())


# -- worker counts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers_check(tmp_path_factory):
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = tmp_path_factory.mktemp("workers") / "workers_check"
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Werror",
            f"-I{ROOT / 'plugins' / 'include'}",
            str(ROOT / "tests" / "workers_check.cc"),
            "-o",
            str(binary),
        ],
        check=True,
    )

    def run(*args) -> str:
        return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, check=True).stdout.strip()

    return run


def _fake_cgroup(root: Path, own: str, files: dict[str, str]) -> Path:
    (root / "proc" / "self").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "self" / "cgroup").write_text(f"0::{own}\n")
    for name, text in files.items():
        path = root / "sys" / "fs" / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_quota(workers_check, tmp_path):
    # No quota anywhere: none.
    assert workers_check("quota", _fake_cgroup(tmp_path / "none", "/a/b", {"a/b/cpu.max": "max 100000\n"})) == "0"
    # A container's --cpus=1.5 on its own cgroup: 2 CPUs (rounded up).
    assert workers_check("quota", _fake_cgroup(tmp_path / "own", "/a/b", {"a/b/cpu.max": "150000 100000\n"})) == "2"
    # The tightest of the cgroup and its ancestors: the parent's 3 CPUs under a child with none.
    tree = _fake_cgroup(
        tmp_path / "parent",
        "/a/b/",
        {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "300000 100000\n", "cpu.max": "800000 100000\n"},
    )
    assert workers_check("quota", tree) == "3"
    # cgroup v1: quota / period; -1 means none.
    v1 = tmp_path / "v1"
    _fake_cgroup(v1, "/", {"cpu,cpuacct/cpu.cfs_quota_us": "400000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    (v1 / "proc" / "self" / "cgroup").write_text("4:cpu,cpuacct:/docker/x\n")
    assert workers_check("quota", v1) == "4"
    (v1 / "sys" / "fs" / "cgroup" / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert workers_check("quota", v1) == "0"


def test_cpu_limit_is_the_smallest_bound(workers_check):
    assert workers_check("limit", 64, 64, 0) == "64"  # no quota
    assert workers_check("limit", 64, 8, 2) == "2"  # a container's --cpus=2 on a 64-thread host
    assert workers_check("limit", 64, 1, 4) == "1"  # taskset -c 0
    assert workers_check("limit", 0, 0, 0) == "1"


def test_worker_count_follows_the_pool(workers_check):
    # Starts at the CPU limit (16). A session with intra_op_num_threads=1 runs one task at a time:
    # the count drops to 2 and stays. Then a pool of 4 ran 3 of 3 (all: may hold more, grows to 4),
    # 4 of 4 (grows to 5), then 4 of 5 (the pool is the limit: 5 = 4 + 1, kept).
    assert workers_check("observe", 16, "16:1", "2:1", "2:1") == "16 2 2 2"
    assert workers_check("observe", 16, "16:1", "3:3", "4:4", "5:4", "5:4") == "16 2 4 5 5 5"
    # A small run (1 task of 1) never shrinks it; nothing grows past the limit.
    assert workers_check("observe", 4, "1:1", "4:4", "4:4") == "4 4 4 4"
    assert workers_check("observe", 4, "0:0") == "4 4"


def _cases():
    """The one table's calls at sizes where every kernel splits its work (tests/op_inputs.py), in
    each float type the op allows: (case id, op, inputs, attrs)."""
    cases = []
    for case, op, make in workers_calls():
        call = make(np.random.default_rng(5))
        for float_type in BY_NAME[op].float_types:
            cases.append((f"{case}-{float_type}", op, in_float_type(op, call.inputs, float_type), call.attrs))
    return cases


CASES = _cases()


def test_every_op_has_a_threads_case():
    assert {case[1] for case in CASES} == {op.name for op in catalogue.OPS}


@pytest.mark.parametrize("op,inputs,attrs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_results_do_not_depend_on_threads_or_cpus(op, inputs, attrs):
    # Bit for bit: intra_op_num_threads 1, 2 and 4 (three runs each, so that the learnt worker count
    # is in play), and a process restricted to one CPU. ExpertFFN alone splits d_ff by the CPUs the
    # process may use (as on another machine): there, one CPU sums in another order, within float
    # rounding.
    pytest.importorskip("onnxruntime")
    meta = {name: (str(a.dtype), list(a.shape)) for name, a in inputs.items()}
    first = None
    for threads in (1, 2, 4):
        session = op_session(BY_NAME[op], attrs, meta, intra_op_num_threads=threads)
        for _ in range(3):
            outputs = session.run(None, inputs)
            if first is None:
                first = outputs
            for got, want in zip(outputs, first):
                np.testing.assert_array_equal(got, want, err_msg=f"{op}, {threads} threads")
    import os

    one_cpu = {min(os.sched_getaffinity(0))}
    for got, want in zip(run_op_in_child(op, inputs, attrs, cpus=one_cpu), first):
        if op == "ExpertFFN":  # float16: the float32 sums rounded once, so one float16 ulp apart at most
            tolerance = np.finfo(np.float16).eps if want.dtype == np.float16 else 2e-6
            scale = max(1.0, float(np.abs(want.astype(np.float32)).max()))
            np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale)
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{op}, one CPU")
