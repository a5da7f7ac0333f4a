"""The op library as this machine built it (CI's machines have nvcc but no GPU): with CUDA kernels
wherever nvcc was found, loadable and registrable without a GPU or a CUDA toolkit, listing the
ort-cuda backend exactly for the ops that have CUDA kernels, and failing cleanly when asked to run
one without a device."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import bucketrt
from bucketrt.ops import codegen
from bucketrt.ops.catalogue import OPS

ROOT = Path(__file__).resolve().parents[1]
# The CUDA op table (kTable in plugins/cuda/ops.cc), the one place that says which ops have CUDA
# kernels; what the build must list as ort-cuda.
CUDA_TABLE = codegen.cuda_table((ROOT / codegen.CUDA_TABLE).read_text())
CUDA_OPS = {e.op for e in CUDA_TABLE}


def _library():
    return ctypes.CDLL(bucketrt.library_path())


def _plan_error(lib, op: str, tensors, attrs) -> str:
    """The harness's planning of `op` on CPU tensors (only their dtypes and shapes are read) for
    device 0, which must fail here: returns the error text."""
    from bucketrt.library import cuda

    call = cuda._Call.__new__(cuda._Call)
    n = len(tensors)
    call.op, call.n, call.attrs = op.encode(), n, cuda._attributes(attrs)
    call.dtypes = (ctypes.c_char_p * n)(*[str(t.dtype).removeprefix("torch.").encode() for t in tensors])
    call.ranks = (ctypes.c_int * n)(*[t.dim() for t in tensors])
    dims = [d for t in tensors for d in t.shape]
    call.dims = (ctypes.c_int64 * max(1, len(dims)))(*dims)
    call.device = torch.device("cuda", 0)
    with pytest.raises(cuda.CudaOpError) as info:
        cuda._plan(lib, call)
    return str(info.value)


def _built_with_cuda() -> bool:
    # The CUDA harness (test-only, beside the op library) is built exactly where the CUDA kernels are.
    from bucketrt.library import cuda

    return Path(cuda.harness_path()).is_file()


def _nvcc_found() -> bool:
    if os.environ.get("CUDACXX"):
        return Path(os.environ["CUDACXX"]).is_file()
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    return shutil.which("nvcc") is not None or any(h and Path(h, "bin", "nvcc").is_file() for h in homes)


def test_cuda_kernels_are_built_where_nvcc_is():
    # So that CI, whose machine has nvcc, compiles every .cu file: a build that silently fell back
    # to CPU only would hide CUDA breakage.
    if os.environ.get("BUCKETRT_CUDA", "AUTO").upper() == "OFF" or not _nvcc_found():
        pytest.skip("no nvcc here (or BUCKETRT_CUDA=OFF): a CPU-only build is expected")
    assert _built_with_cuda(), "nvcc is present but the installed op library has no CUDA kernels"


def _backends() -> dict[str, list[str]]:
    """BucketrtBackends() as op -> backends ("Op=a,b;Op=a")."""
    lib = _library()
    lib.BucketrtBackends.restype = ctypes.c_char_p
    entries = (entry.split("=", 1) for entry in lib.BucketrtBackends().decode().split(";"))
    return {name: backends.split(",") for name, backends in entries}


def test_backends_list_ort_cuda_for_the_cuda_ops():
    backends = _backends()
    cuda = _built_with_cuda()
    for op in OPS:
        assert "ort-cpu" in backends[op.name], op.name
        assert ("ort-cuda" in backends[op.name]) == (cuda and op.name in CUDA_OPS), (op.name, backends[op.name])


def test_the_cuda_table_is_read_as_built():
    # codegen.cuda_table reads kTable's text (the docs' op lists and these tests take the CUDA ops from
    # it): a build with CUDA lists ort-cuda for exactly those ops, in the table's order of entries
    # (which HasKernel walks) mapped to catalogue order.
    assert CUDA_OPS and len(CUDA_OPS) == len(CUDA_TABLE), CUDA_TABLE
    assert CUDA_OPS <= {op.name for op in OPS}
    if not _built_with_cuda():
        pytest.skip("the op library was built without CUDA")
    assert {name for name, backends in _backends().items() if "ort-cuda" in backends} == CUDA_OPS
    # The data checks as read: a report of some bytes for the table's small call of each op with one.
    from op_inputs import TABLE

    from bucketrt.library import cuda

    for e in CUDA_TABLE:
        call = next(iter(TABLE[e.op].small.values()))(np.random.default_rng(0))
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in call.inputs.values()]
        assert (cuda.report_bytes(e.op, *tensors, **call.attrs) > 0) == e.data_report, e


def test_bucketrt_ops_shows_the_cuda_backend():
    pytest.importorskip("bucketrt.cli.main", reason="the CLI is not installed (a source tree has no bucketrt.cli)")
    from click.testing import CliRunner

    from bucketrt.cli.main import main

    result = CliRunner().invoke(main, ["ops"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {
        line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 2
    }
    for name in CUDA_OPS:
        assert ("ort-cuda" in lines[name]) == _built_with_cuda(), lines[name]


def test_library_needs_no_cuda_library_at_load():
    # The CUDA runtime is linked statically; the driver is opened only when a CUDA kernel runs.
    out = subprocess.run(["ldd", bucketrt.library_path()], capture_output=True, text=True, check=True).stdout
    assert "libcudart" not in out and "libcuda." not in out, out


def test_cuda_harness_is_its_own_library():
    # The raw-device-pointer entry points are test-only: in the harness library, never in the op
    # library that servers load.
    if not _built_with_cuda():
        pytest.skip("the op library was built without CUDA")
    from bucketrt.library import cuda

    assert not hasattr(_library(), "BucketrtCudaRun") and not hasattr(_library(), "BucketrtCudaPlan")
    harness = ctypes.CDLL(cuda.harness_path())
    assert hasattr(harness, "BucketrtCudaRun") and hasattr(harness, "BucketrtCudaPlan")
    out = subprocess.run(["ldd", cuda.harness_path()], capture_output=True, text=True, check=True).stdout
    assert "libcudart" not in out and "libcuda." not in out, out


def test_cpu_sessions_run_with_the_cuda_kernels_registered():
    # The CUDA EP registrations (fp32 and fp16) share the ops' schemas with the CPU ones; a
    # CPU-only ONNX Runtime must accept them and run the CPU kernels, in both float types.
    pytest.importorskip("onnxruntime")
    from bucketrt.library import run_op
    from bucketrt.ops.catalogue import LSH_CUMULATION

    rng = np.random.default_rng(0)
    inputs = {
        "query_mask": np.ones((2, 3), np.int32),
        "query_hash": rng.integers(0, 8, (2, 3, 2), dtype=np.int32),
        "key_mask": np.ones((2, 4), np.int32),
        "key_hash": rng.integers(0, 8, (2, 4, 2), dtype=np.int32),
        "value": rng.standard_normal((2, 4, 8)).astype(np.float32),
    }
    (out32,) = run_op(LSH_CUMULATION, inputs, {"hashtable_capacity": 8})
    (out16,) = run_op(
        LSH_CUMULATION, {**inputs, "value": inputs["value"].astype(np.float16)}, {"hashtable_capacity": 8}
    )
    assert out32.dtype == np.float32 and out16.dtype == np.float16
    np.testing.assert_allclose(out16.astype(np.float32), out32, atol=2e-3 * max(1.0, np.abs(out32).max()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: tests/test_kernels_cuda.py runs the kernels")
def test_cuda_harness_fails_cleanly_without_a_gpu():
    if not _built_with_cuda():
        pytest.skip("the op library was built without CUDA")
    from bucketrt.library import cuda

    assert cuda.unavailable_reason() is not None
    lib = cuda._library(cuda.harness_path())
    dtypes = (ctypes.c_char_p * 3)(b"int32", b"float32", b"float32")
    ranks = (ctypes.c_int * 3)(2, 3, 3)
    dims = (ctypes.c_int64 * 8)(2, 5, 2, 5, 16, 1, 3, 16)
    workspace = ctypes.c_size_t(0)
    out_dtypes, out_ranks, out_dims = (ctypes.c_int * 8)(), (ctypes.c_int * 8)(), (ctypes.c_int64 * 32)()

    def plan(attrs: bytes) -> str:
        return lib.BucketrtCudaPlan(
            b"SignHash", 3, dtypes, ranks, dims, attrs, 0, ctypes.byref(workspace), 8, out_dtypes, out_ranks, out_dims
        ).decode()

    # The spec checks come first and need no device; the device is reached only by a valid call.
    assert plan(b"num_hash=i:2;hash_code_len=i:31") == "SignHash: attribute 'hash_code_len' must be <= 30, got 31"
    assert plan(b"num_hash=i:2;hash_code_len=i:4;bits=i:1") == "SignHash: unknown attribute(s) ['bits']"
    assert plan(b"num_hash=i:2;hash_code_len=i:4").startswith("SignHash: CUDA error in selecting the device: ")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU is present: tests/test_kernels_cuda.py runs these with data"
)
def test_cuda_harness_rejects_bad_input_with_the_references_words():
    # Without a GPU the harness still runs every check that needs no data (spec, attributes, op
    # shapes): test_bad_input.py's cases get the reference's words, as on the CPU backend.
    if not _built_with_cuda():
        pytest.skip("the op library was built without CUDA")
    pytest.importorskip("onnxruntime")
    import importlib.util
    import sys

    from bucketrt.library import cuda
    from bucketrt.ops import reference

    name = "bucketrt_bad_input_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_bad_input.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    bad = sys.modules[name]
    lib = cuda._library(cuda.harness_path())
    checked = 0
    cases = [case for case in bad.CASES if case.spec.name in CUDA_OPS]  # the others: "no CUDA kernel"
    for case in cases:
        tensors = [torch.from_numpy(np.ascontiguousarray(case.inputs[t.name])) for t in case.spec.inputs]
        message = _plan_error(lib, case.spec.name, tensors, case.attrs)
        if "CUDA error in selecting the device" in message:
            assert case.culprit in ("key_hash", "query_hash"), (case.id, message)  # codes: data, on a GPU
            continue
        assert bad.names(message, case.spec.name) and bad.names(message, case.culprit), (case.id, message)
        if case.same_text:
            with pytest.raises(ValueError) as ref:
                reference.REFERENCES[case.spec.name](*tensors, **case.attrs)
            assert str(ref.value) in message, (case.id, message)
        checked += 1
    assert checked >= len(cases) - 4


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU is present: tests/test_kernels_cuda.py runs these with data"
)
def test_cuda_harness_checks_the_hashing_and_routing_ops_without_a_gpu():
    # ArgmaxHash, BucketSum, Top1Dispatch: shape and attribute errors in the reference's words before
    # any device is needed; a valid call reaches the device (and fails cleanly here).
    if not _built_with_cuda():
        pytest.skip("the op library was built without CUDA")
    from bucketrt.library import cuda
    from bucketrt.ops import reference

    lib = cuda._library(cuda.harness_path())

    def plan(op, tensors, attrs) -> str:
        return _plan_error(lib, op, tensors, attrs)

    probs = torch.rand(2, 5, 4)
    ids, weight, vector = torch.zeros(3, 4, dtype=torch.int32), torch.ones(3, 4), torch.ones(3, 4, 5)
    mask, x, rotations = torch.ones(2, 5, dtype=torch.int32), torch.ones(2, 3, 5, 8), torch.ones(3, 8, 10)
    sizes = torch.tensor([4, 6], dtype=torch.int32)
    bad = [
        ("Top1Dispatch", [probs], {"expert_capacity": -1}),
        ("Top1Dispatch", [probs[0]], {"expert_capacity": 1}),
        ("Top1Dispatch", [probs.double()], {"expert_capacity": 1}),
        ("BucketSum", [ids, torch.ones(3, 5), vector], {"num_buckets": 4}),
        ("BucketSum", [ids, weight, vector.half()], {"num_buckets": 4}),
        ("BucketSum", [ids, weight, vector], {"num_buckets": 0}),
        ("ArgmaxHash", [mask, x.half(), rotations, sizes], {"num_hash": 2}),
        ("ArgmaxHash", [mask, x, rotations, sizes.long()], {"num_hash": 2}),
        ("ArgmaxHash", [mask, x, torch.ones(2, 8, 10), sizes], {"num_hash": 2}),
    ]
    for op, tensors, attrs in bad:
        message = plan(op, tensors, attrs)
        with pytest.raises(ValueError) as ref:
            reference.REFERENCES[op](*tensors, **attrs)
        assert str(ref.value) in message, (op, message)
    for op, tensors, attrs in [
        ("Top1Dispatch", [probs.half()], {"expert_capacity": 2}),
        ("ArgmaxHash", [mask, x, rotations, sizes], {"num_hash": 2}),
        ("BucketSum", [ids, weight, vector], {"num_buckets": 4}),
    ]:
        assert plan(op, tensors, attrs).startswith(f"{op}: CUDA error in "), op


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU is present: tests/test_kernels_cuda.py runs these with data"
)
def test_cuda_harness_checks_topk_experts_without_a_gpu():
    # TopKExperts' shape and attribute errors in the reference's words before any device is needed
    # (its plan's pair sort asks the device for its storage, after the shape checks); a valid call
    # reaches the device (and fails cleanly here).
    if not _built_with_cuda():
        pytest.skip("the op library was built without CUDA")
    from op_inputs import topk_attrs, topk_experts_inputs

    from bucketrt.library import cuda
    from bucketrt.ops import reference

    lib = cuda._library(cuda.harness_path())
    good = topk_experts_inputs(np.random.default_rng(0), 6, 3, 8, 5, 4, "glu")
    plain = topk_experts_inputs(np.random.default_rng(0), 6, 3, 8, 5, 4, "none")
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in good.items()}
    for inputs, attrs in [
        (plain, topk_attrs()),
        (good, topk_attrs("none")),
        (good, {"gating": "glu_clamped"}),
        (good, {"gating": "glu", "limit": 7.0}),
        (good, {"gating": "glu_clamped", "limit": 7}),
        (good, {"gating": "glu_clamped", "limit": float("nan")}),
        ({**good, "expert_weight": good["expert_weight"].astype(np.float16)}, topk_attrs()),
    ]:
        tensors = [torch.from_numpy(a) for a in inputs.values()]
        message = _plan_error(lib, "TopKExperts", tensors, attrs)
        with pytest.raises(ValueError) as ref:
            reference.topk_experts(*tensors, **attrs)
        assert str(ref.value) in message, (attrs, message)
    for inputs in (good, half):
        tensors = [torch.from_numpy(a) for a in inputs.values()]
        assert _plan_error(lib, "TopKExperts", tensors, topk_attrs()).startswith("TopKExperts: CUDA error in ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the harness would reach the device")
def test_cuda_plans_reject_sizes_that_overflow():
    # TensorRT plans with an optimisation profile's max shapes before any data exists: sizes whose
    # bytes or workspace overflow int64 are errors naming the op, never wrapped sizes. Expanded
    # tensors carry the shapes without the memory (planning reads only dtypes and shapes).
    if not _built_with_cuda():
        pytest.skip("the op library was built without CUDA")
    from bucketrt.library import cuda

    lib = cuda._library(cuda.harness_path())
    big = 2**20
    hidden = torch.zeros(1).expand(big, big, 1)
    order = torch.zeros(1, dtype=torch.int32).expand(big, big)
    counts = torch.zeros(1, dtype=torch.int32)
    gate = torch.zeros(1).expand(big, big)
    wi, wo = torch.zeros(1).expand(1, 2**40, 1), torch.zeros(1).expand(1, 1, 2**40)
    message = _plan_error(lib, "ExpertFFN", [hidden, order, counts, gate, wi, wo], {})
    assert message == "ExpertFFN: the sizes overflow int64 computing the workspace (tokens x d_ff)", message
    huge = torch.zeros(1).expand(2**31, 2**31, 1)  # 2^62 elements, 2^64 bytes
    tokens = [torch.zeros(1, dtype=dtype).expand(2**31, 2**31) for dtype in (torch.int32, torch.float32)]
    message = _plan_error(lib, "ExpertFFN", [huge, tokens[0], counts, tokens[1], wi, wo], {})
    assert message == "ExpertFFN: the sizes overflow int64 computing input 'hidden' in bytes", message
    # TopKExperts: every tensor's bytes fit, but K x (D + F) floats (a token's pairs' buffers) do not.
    dim, ff, picks = 2**40, 2**20, 2**24
    topk = [
        torch.zeros(1).expand(1, dim),
        torch.zeros(1, dtype=torch.int32).expand(1, picks),
        torch.zeros(1).expand(1, picks),
        torch.zeros(1).expand(1, ff, dim),
        torch.zeros(1).expand(1, ff),
        torch.zeros(1).expand(1, dim, ff),
        torch.zeros(1).expand(1, dim),
    ]
    message = _plan_error(lib, "TopKExperts", topk, {"activation": "relu", "gating": "none"})
    assert message == "TopKExperts: the sizes overflow int64 computing the workspace (K x (D + F))", message


# -- the data checks' reports (plugins/cuda/ops.h: ReportBytes, EnqueueReport, ReportError) --------
# The host side runs here: reports laid out as the device writes them, read by the library's
# ReportError, must give the reference's words. The device side (EnqueueReport after a launch) is
# tests/test_kernels_cuda.py's.


def _report(op, inputs, report: bytes, **attrs) -> tuple[str, int]:
    from bucketrt.library import cuda

    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.values()]
    return cuda.report_error(op, *tensors, report=report, **attrs), cuda.report_bytes(op, *tensors, **attrs)


def _reference_error(fn, inputs, **attrs) -> str:
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.values()]
    with pytest.raises(ValueError) as info:
        fn(*tensors, **attrs)
    return str(info.value)


def test_data_reports_read_on_the_host_give_the_references_words():
    if not _built_with_cuda():
        pytest.skip("built without CUDA kernels")
    import struct

    from op_inputs import chunk_attention_inputs, lsh_inputs

    from bucketrt.ops import reference

    rng = np.random.default_rng(31)
    # LSHCumulation: (first bad flat index, query codes first; its code). B=2, Nq=5, Nk=6, m=3.
    lsh = lsh_inputs(rng, 2, 5, 6, 8, 3, 8, masked=0.0)
    first_bad = 2 * 5 * 3 + (1 * 6 + 4) * 3 + 2  # key_hash[1, 4, 2]
    error, size = _report("LSHCumulation", lsh, struct.pack("<QiI", first_bad, 8, 0), hashtable_capacity=8)
    assert size == 16
    assert error == "LSHCumulation: input 'key_hash' has code 8 at [1, 4, 2], outside [0, hashtable_capacity=8)"
    assert _report("LSHCumulation", lsh, struct.pack("<QiI", 2**64 - 1, 0, 0), hashtable_capacity=8)[0] == ""

    # BucketSum: the ids' range as ordered unsigned minima (of id ^ 2^31 and of its complement).
    bucket = np.array([[-3, 1], [2, 0]], np.int32)
    sums = {"bucket": bucket, "weight": np.ones((2, 2), np.float32), "vector": np.ones((2, 2, 3), np.float32)}
    lo, hi = -3 & 0xFFFFFFFF, 2
    packed = struct.pack("<II", lo ^ 0x80000000, ~(hi ^ 0x80000000) & 0xFFFFFFFF)
    error, size = _report("BucketSum", sums, packed, num_buckets=4)
    assert size == 8 and error and error in _reference_error(reference.bucket_sum, sums, num_buckets=4)
    good = struct.pack("<II", 0 ^ 0x80000000, ~(3 ^ 0x80000000) & 0xFFFFFFFF)
    assert _report("BucketSum", sums, good, num_buckets=4)[0] == ""

    # SortedChunkAttention: the negative-bucket flag; plain attention (N <= chunk_length) has none.
    attention = chunk_attention_inputs(rng, 1, 1, 16, 4, 2, 4)
    flag = struct.pack("<i", 1)
    assert _report("SortedChunkAttention", attention, flag, chunk_length=4) == (
        "SortedChunkAttention: input 'buckets' must be >= 0",
        4,
    )
    assert _report("SortedChunkAttention", attention, struct.pack("<i", 0), chunk_length=4)[0] == ""
    assert _report("SortedChunkAttention", attention, flag, chunk_length=16) == ("", 0)

    # ArgmaxHash: bucket_sizes itself.
    argmax = {
        "mask": np.ones((1, 4), np.int32),
        "vector": np.ones((1, 1, 4, 8), np.float32),
        "projection": np.ones((1, 8, 10), np.float32),
        "bucket_sizes": np.array([5, 5], np.int32),
    }
    error, size = _report("ArgmaxHash", argmax, argmax["bucket_sizes"].tobytes(), num_hash=1)
    assert size == 8 and error and error in _reference_error(reference.argmax_hash, argmax, num_hash=1)

    # ExpertFFN: counts, then order.
    ffn = {
        "hidden": np.ones((1, 4, 8), np.float32),
        "order": np.array([[0, 1, -1, -1]], np.int32),
        "counts": np.array([-1, 2], np.int32),
        "gate": np.ones((1, 4), np.float32),
        "wi": np.ones((2, 16, 8), np.float32),
        "wo": np.ones((2, 8, 16), np.float32),
    }
    report = np.concatenate([ffn["counts"], ffn["order"].ravel()]).astype(np.int32).tobytes()
    error, size = _report("ExpertFFN", ffn, report, activation="relu")
    assert size == 4 * (2 + 4) and error
    assert error in _reference_error(reference.expert_ffn, ffn, activation="relu")

    # TopKExperts: (the first bad flat index of expert_index [T, K]; its value), as LSHCumulation's.
    from op_inputs import topk_attrs, topk_experts_inputs

    topk = topk_experts_inputs(rng, 6, 3, 8, 5, 4, "glu")
    topk["expert_index"][2, 1] = 5
    topk["expert_index"][4, 0] = -1
    error, size = _report("TopKExperts", topk, struct.pack("<QiI", 2 * 3 + 1, 5, 0), **topk_attrs())
    assert size == 16 and error == _reference_error(reference.topk_experts, topk, **topk_attrs()), error
    assert error == "TopKExperts: input 'expert_index' has 5 at [2, 1], outside [0, E=4] (E: no expert)", error
    assert _report("TopKExperts", topk, struct.pack("<QiI", 2**64 - 1, 0, 0), **topk_attrs())[0] == ""

    # No data checks: nothing to report.
    assert _report("Top1Dispatch", {"probs": np.ones((1, 3, 2), np.float32)}, b"", expert_capacity=2) == ("", 0)


def _definitions(path: Path) -> list[tuple[str, str]]:
    """The function definitions of a C++/CUDA file at column 0: (name, signature to closing brace)."""
    text = path.read_text()
    found = []
    for match in re.finditer(r"^[A-Za-z][^;{}()]*?([A-Za-z_~][\w:~]*)\(([^;{}]*?)\)\s*(?:const\s*)?\{", text, re.M):
        end = text.find("\n}", match.end())
        found.append((match.group(1).split("::")[-1], text[match.start() : end]))
    return found


def _functions(path: Path) -> dict[str, str]:
    return dict(_definitions(path))


# Calls that make the host wait for the device (or may: cudaMalloc/cudaFree/cudaHostAlloc, blocking copies).
_WAITS = re.compile(
    r"\bcuda(?:Stream|Device|Event)Synchronize\b|\bcudaMemcpy\(|\bcudaMalloc\(|\bcudaFree\(|cudaHostAlloc"
)


def _methods(path: Path) -> dict[str, str]:
    """The member functions defined in a class body (two-space indent): name -> body."""
    text = path.read_text()
    found = {}
    for match in re.finditer(r"^  [A-Za-z][^;{}()=]*?\b([A-Za-z_]\w*)\(([^;{}]*?)\)\s*(?:const\s*)?\{", text, re.M):
        line_end = text.find("\n", match.end())
        one_line = text[match.end() : line_end].rstrip().endswith("}")
        end = line_end if one_line else text.find("\n  }", match.end())
        found[match.group(1)] = text[match.start() : end]
    return found


def test_the_ort_cuda_kernel_never_waits_on_the_default_per_run_path():
    # A structural check of plugins/ort/cuda_kernels.cc and cuda_reports.h (no GPU here to run
    # them): the only waits are the opt-in synchronous check, the run-ahead bound, and a workspace
    # growth on a device without memory pools; each is reached only under its condition. (The
    # destructor's no-pools cudaFree runs once, at session teardown.)
    functions = _functions(ROOT / "plugins/ort/cuda_kernels.cc")
    waiting = {name for name, body in functions.items() if _WAITS.search(body)}
    assert waiting == {"EnsureWorkspace", "~CudaKernel"}, waiting
    grow = functions["EnsureWorkspace"]
    assert grow.index("if (bytes <= s.workspace_bytes) return {};") < _WAITS.search(grow).start()
    assert re.search(r"if \(s\.pooled\) \{\s*status = cudaFreeAsync\(s\.workspace, s\.stream\);\s*\} else \{", grow)
    compute = functions["Compute"]
    calls = [line.strip() for line in compute.splitlines() if "Wait(" in line]
    assert calls == [
        "if (sync_checks_) ThrowIf(state.reports.Wait(*slot, read));  // opt-in: this run's data error fails this run"
    ]
    # The report queue: only Wait waits (and the pinned allocations, on a new or regrown slot);
    # Take calls Wait only at the run-ahead bound, Collect never.
    reports = ROOT / "plugins/ort/cuda_reports.h"
    methods = _methods(reports)
    assert {name for name, body in methods.items() if re.search(r"Synchronize\(", body)} == {"Wait", "Synchronize"}
    assert "Wait(" not in methods["Collect"] and "Synchronize" not in methods["Collect"]
    take = methods["Take"]
    assert re.search(r"if \(pending >= max_pending_\) \{.*?std::string error = Wait\(\*oldest, read\);", take, re.S)
    assert take.count("Wait(") == 1
    assert take.index("if (best == nullptr) {") < take.index("AllocHost") and "FreeHost" in take
    # The reports' enqueueing and the launches, in every op: never a wait.
    checked = []
    for path in sorted((ROOT / "plugins/cuda").glob("*.cu")) + [ROOT / "plugins/cuda/ops.cc"]:
        for name, body in _definitions(path):
            if name.startswith("Enqueue") or name == "Launch":
                assert not _WAITS.search(body), f"{path.name}: {name} waits"
                checked.append(name)
    # The launchers' Enqueue<Op>Report of the ops with data checks, each op's Launch and EnqueueReport
    # in the table, and the table's own two entry points.
    reports = sum(e.data_report for e in CUDA_TABLE)
    assert sum(n.endswith("Report") and n != "EnqueueReport" for n in checked) == reports, checked
    assert checked.count("Launch") == len(CUDA_TABLE) + 1, checked
    assert checked.count("EnqueueReport") == reports + 1, checked


def test_report_queue_logic_with_a_fake_device(tmp_path):
    """tests/cuda_reports_check.cc: the CUDA EP kernel's report queue (plugins/ort/cuda_reports.h)
    with a fake device: reports read once landed, the earliest error first, slots reused, only the
    run-ahead bound and the opt-in wait waiting."""
    cuda_include = next(
        (
            Path(h, "include")
            for h in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")
            if h and Path(h, "include", "cuda_runtime_api.h").is_file()
        ),
        None,
    )
    if cuda_include is None:
        pytest.skip("needs the CUDA headers (cuda_runtime_api.h)")
    driver = tmp_path / "cuda_reports_check"
    compile_ = subprocess.run(
        [os.environ.get("CXX", "g++"), "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'plugins'}"]
        + ["-isystem", str(cuda_include), str(ROOT / "tests/cuda_reports_check.cc"), "-o", str(driver)],
        capture_output=True,
        text=True,
    )
    assert compile_.returncode == 0, compile_.stderr
    result = subprocess.run([str(driver)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and re.search(r"^0 failed$", result.stdout, re.M), result.stdout + result.stderr
    assert result.stdout.count("ok ") >= 16, result.stdout
