"""The CUDA kernels against the PyTorch references, through the op library's C ABI (bucketrt.ops.cuda).

Skipped where torch sees no CUDA device or the library was built without CUDA. Needs only torch,
numpy and pytest (the GPU machine may lack onnx/onnxruntime): run from a source tree with

    BUCKETRT_LIBRARY=/path/to/libbucketrt_ort.so PYTHONPATH=src python -m pytest tests/test_kernels_cuda.py

The grids are the CPU kernel tests' (kernel_cases.py), each in float32 and float16, LSHCumulation in
both modes. Tolerances are the CPU tests': max abs error <= 1e-5 (float32) or 2e-3 (float16) times
max(1, max |reference|); SignHash codes equal the reference's exactly, except gaussian codes of
real-valued data where a projection lies within rounding of zero (the CPU tests' audit). References
run on the CPU in float32 (for float16 inputs: on the widened inputs, rounded once, as the spec says).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bucketrt.ops import cuda, reference
from bucketrt.ops.spec import hadamard_parts
from kernel_cases import (
    GAUSSIAN_CASES,
    HADAMARD_ANY_DIAGONAL_CASES,
    HADAMARD_CASES,
    LSH_CASES,
    gaussian_near_zero,
    lsh_inputs,
    lsh_seed,
    sign_inputs,
    signs,
)

REASON = cuda.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"CUDA kernels unavailable: {REASON}")

FLOATS = [torch.float32, torch.float16]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


def _tensors(inputs: dict[str, np.ndarray], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """CPU tensors, float arrays in `dtype`."""
    out = {}
    for name, array in inputs.items():
        t = torch.from_numpy(np.ascontiguousarray(array))
        out[name] = t.to(dtype) if t.is_floating_point() else t
    return out


def _gpu(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [t.cuda() for t in tensors.values()]


# -- LSHCumulation ---------------------------------------------------------------------------


def run_lsh(tensors, capacity, deterministic=0, **kwargs) -> torch.Tensor:
    (out,) = cuda.run("LSHCumulation", *_gpu(tensors), hashtable_capacity=capacity, deterministic=deterministic, **kwargs)
    return out.cpu()


def check_lsh(inputs, capacity, dtype=torch.float32, deterministic=0) -> torch.Tensor:
    t = _tensors(inputs, dtype)
    out = run_lsh(t, capacity, deterministic)
    ref = reference.lsh_cumulation(*t.values(), hashtable_capacity=capacity)
    assert out.dtype == dtype == ref.dtype and out.shape == ref.shape
    scale = max(1.0, ref.float().abs().max().item())
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= TOLERANCE[dtype] * scale, f"max abs error {err} (scale {scale}, {dtype}, deterministic={deterministic})"
    assert (out[t["query_mask"] == 0] == 0).all(), "masked queries must be exactly zero"
    return out


@pytest.mark.parametrize("deterministic", [0, 1])
@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,num_query,num_key,dim,num_hash,capacity", LSH_CASES)
def test_lsh_cumulation_matches_reference(batch, num_query, num_key, dim, num_hash, capacity, dtype, deterministic):
    rng = np.random.default_rng(lsh_seed(batch, num_query, num_key, dim, num_hash, capacity))
    check_lsh(lsh_inputs(rng, batch, num_query, num_key, dim, num_hash, capacity), capacity, dtype, deterministic)


@pytest.mark.parametrize("deterministic", [0, 1])
def test_lsh_cumulation_unmasked_and_fully_masked_rows(deterministic):
    rng = np.random.default_rng(7)
    inputs = lsh_inputs(rng, 3, 33, 7, 32, 5, 16, masked=0.0)
    check_lsh(inputs, 16, deterministic=deterministic)
    # Batch row 1 has no live key (all its outputs are 0), row 2 no live query.
    inputs["key_mask"][1] = 0
    inputs["key_hash"][1] = 99
    inputs["query_mask"][2] = 0
    out = check_lsh(inputs, 16, deterministic=deterministic)
    assert not out[1:].any()
    assert out[0].abs().max() > 0.1


@pytest.mark.parametrize("deterministic", [0, 1])
def test_lsh_cumulation_large_capacity_small_codes(deterministic):
    # 2^20 buckets of D=64 for m=5 hashes is more than the dense way's table budget: both modes
    # take the sorted way, whose memory follows the keys, not the capacity.
    rng = np.random.default_rng(8)
    check_lsh(lsh_inputs(rng, 3, 33, 100, 64, 5, 1 << 20, max_code=100), 1 << 20, deterministic=deterministic)


def test_lsh_cumulation_capacity_beyond_int32():
    # Codes are int32, so a capacity of 2^40 only widens the sort keys; the result is that of 2^20.
    rng = np.random.default_rng(18)
    t = _tensors(lsh_inputs(rng, 2, 40, 60, 8, 3, 1 << 20, max_code=1000), torch.float32)
    small = run_lsh(t, 1 << 20, deterministic=1)
    huge = run_lsh(t, 1 << 40, deterministic=1)
    assert torch.equal(small, huge)


def test_lsh_cumulation_codes_at_the_capacity_edge():
    rng = np.random.default_rng(9)
    inputs = lsh_inputs(rng, 1, 7, 33, 16, 5, 8, masked=0.0)
    inputs["key_hash"][:] = 7
    inputs["query_hash"][:, ::2] = 7
    for deterministic in (0, 1):
        out = check_lsh(inputs, 8, deterministic=deterministic)
        # Queries coded 7 everywhere see every key under every hash: the sum of all values.
        np.testing.assert_allclose(out[0, 0].numpy(), inputs["value"][0].sum(0), rtol=1e-5, atol=1e-5)


def test_lsh_cumulation_misaligned_values_take_the_scalar_path():
    # D % 4 == 0 but a value pointer off a 16-byte boundary: one column per thread, same results.
    rng = np.random.default_rng(10)
    inputs = lsh_inputs(rng, 2, 30, 50, 32, 6, 64)
    t = _tensors(inputs, torch.float32)
    gpu = _gpu(t)
    backing = torch.empty(gpu[4].numel() + 1, device="cuda")
    backing[1:] = gpu[4].reshape(-1)
    gpu[4] = backing[1:].view(gpu[4].shape)
    assert gpu[4].data_ptr() % 16 != 0
    (out,) = cuda.run("LSHCumulation", *gpu, hashtable_capacity=64)
    ref = reference.lsh_cumulation(*t.values(), hashtable_capacity=64)
    assert (out.cpu() - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_lsh_cumulation_deterministic_is_bitwise_stable(dtype):
    # Many keys per bucket (atomics contend), repeated runs: deterministic=1 gives identical bits.
    rng = np.random.default_rng(11)
    t = _tensors(lsh_inputs(rng, 2, 3000, 3000, 64, 8, 16, masked=0.1), dtype)
    gpu = _gpu(t)
    first = None
    for _ in range(5):
        (out,) = cuda.run("LSHCumulation", *gpu, hashtable_capacity=16, deterministic=1)
        if first is None:
            first = out.clone()
        else:
            assert torch.equal(out, first), "deterministic mode changed bits between runs"
    ref = reference.lsh_cumulation(*t.values(), hashtable_capacity=16)
    scale = max(1.0, ref.float().abs().max().item())
    assert (first.cpu().float() - ref.float()).abs().max().item() <= TOLERANCE[dtype] * scale
    # The fast mode agrees to rounding.
    (fast,) = cuda.run("LSHCumulation", *gpu, hashtable_capacity=16)
    assert (fast.cpu().float() - ref.float()).abs().max().item() <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("deterministic", [0, 1])
def test_lsh_cumulation_yoso_size_in_several_passes(deterministic):
    # YOSO's hashing at N = 16384: the sorted way sorts the 128 (b, h) segments in three passes
    # whose boundaries fall inside batch rows; the dense way fills all tables in one pass.
    rng = np.random.default_rng(12)
    check_lsh(lsh_inputs(rng, 2, 16384, 16384, 64, 64, 512, masked=0.05), 512, deterministic=deterministic)


# -- SignHash --------------------------------------------------------------------------------


def run_sign(inputs, attrs, dtype):
    t = _tensors(inputs, dtype)
    (out,) = cuda.run("SignHash", *_gpu(t), **attrs)
    out = out.cpu()
    ref = reference.sign_hash(*t.values(), **attrs)
    assert out.dtype == torch.int32 and out.shape == ref.shape
    assert not out[t["mask"] == 0].any()
    assert out.min() >= 0 and out.max() < 2 ** attrs["hash_code_len"]
    return out, ref, t


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", HADAMARD_CASES)
def test_sign_hash_hadamard_matches_reference_exactly(batch, length, dim, num_hash, code_len, groups, dtype):
    rng = np.random.default_rng(batch + length + dim + num_hash + code_len + groups)
    parts = hadamard_parts(dim, num_hash, code_len)
    inputs = sign_inputs(rng, batch, length, dim, groups, (3 * parts, dim))
    inputs["projection"] = signs(inputs["projection"])
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "hadamard"}
    out, ref, _ = run_sign(inputs, attrs, dtype)
    # The reference's float operations in its order, rounded alike: identical codes.
    assert torch.equal(out, ref)
    if batch * length > 8 and code_len > 1:
        assert len(torch.unique(out[torch.from_numpy(inputs["mask"]) != 0])) > 2


# Beyond the CPU grid: the warp layouts (D < 32: several rows per warp; D = 32: one element per
# lane; D = 1024: 32 in registers; D = 2048: the workspace path) and many parts.
HADAMARD_LAYOUT_CASES = [
    (2, 37, 32, 7, 5, 1),
    (3, 40, 512, 100, 9, 3),
    (1, 9, 1024, 300, 9, 1),
    (1, 5, 2048, 10, 9, 1),
    (2, 70, 4, 50, 2, 2),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", HADAMARD_ANY_DIAGONAL_CASES + HADAMARD_LAYOUT_CASES)
def test_sign_hash_hadamard_any_diagonal_exactly(batch, length, dim, num_hash, code_len, groups, dtype):
    rng = np.random.default_rng(300 + batch + length + dim + num_hash + code_len + groups)
    inputs = sign_inputs(rng, batch, length, dim, groups, (3 * hadamard_parts(dim, num_hash, code_len), dim))
    inputs["mask"][:, 8:16] = 0
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "hadamard"}
    out, ref, _ = run_sign(inputs, attrs, dtype)
    assert torch.equal(out, ref)


# Beyond the CPU grid: D over one shared-memory chunk (128) and hashes over one column tile.
GAUSSIAN_LAYOUT_CASES = [(2, 50, 300, 20, 9, 2), (1, 17, 129, 45, 3, 1)]


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", GAUSSIAN_CASES + GAUSSIAN_LAYOUT_CASES)
def test_sign_hash_gaussian_integer_data_exact(batch, length, dim, num_hash, code_len, groups, dtype):
    rng = np.random.default_rng(100 + batch + length + dim + num_hash + code_len + groups)
    inputs = sign_inputs(rng, batch, length, dim, groups, (dim, num_hash * code_len), integers=True)
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "gaussian"}
    out, ref, _ = run_sign(inputs, attrs, dtype)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", GAUSSIAN_CASES + GAUSSIAN_LAYOUT_CASES)
def test_sign_hash_gaussian_float_data(batch, length, dim, num_hash, code_len, groups, dtype):
    rng = np.random.default_rng(200 + batch + length + dim + num_hash + code_len + groups)
    inputs = sign_inputs(rng, batch, length, dim, groups, (dim, num_hash * code_len))
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "gaussian"}
    out, ref, t = run_sign(inputs, attrs, dtype)
    widened = {name: x.float().numpy() if x.is_floating_point() else x.numpy() for name, x in t.items()}
    near_zero = torch.from_numpy(gaussian_near_zero(widened, num_hash, code_len))
    assert ((out == ref) | near_zero).all()
    assert (out == ref).float().mean() > 0.99


def test_sign_hash_gaussian_codes_equal_the_cpu_kernel():
    # Same sums in the same order (d ascending, multiply and add rounded separately): the CUDA and
    # CPU kernels agree bit for bit, near-zero projections included. Needs onnxruntime (CPU).
    graph = pytest.importorskip("bucketrt.ops.graph", reason="onnx / onnxruntime not installed")
    pytest.importorskip("onnxruntime")
    from bucketrt.ops.spec import SIGN_HASH

    rng = np.random.default_rng(400)
    inputs = sign_inputs(rng, 3, 200, 64, 3, (64, 32 * 9))
    attrs = {"num_hash": 32, "hash_code_len": 9, "transform": "gaussian"}
    (cpu,) = graph.run_op(SIGN_HASH, inputs, attrs)
    (gpu,) = cuda.run("SignHash", *_gpu(_tensors(inputs, torch.float32)), **attrs)
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)


# -- bad input -------------------------------------------------------------------------------


def _bad_input_cases():
    """test_bad_input.py's cases (it needs onnx and onnxruntime to import; skip without them)."""
    name = "bucketrt_bad_input_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_bad_input.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
        except ImportError as e:
            del sys.modules[name]
            pytest.skip(f"test_bad_input.py does not import here: {e}")
    module = sys.modules[name]
    return module.CASES, module.names


def test_bad_input_is_rejected_with_the_references_words():
    cases, names = _bad_input_cases()
    for case in cases:
        tensors = [torch.from_numpy(np.ascontiguousarray(case.inputs[t.name])).cuda() for t in case.spec.inputs]
        with pytest.raises(cuda.CudaOpError) as info:
            cuda.run(case.spec.name, *tensors, **case.attrs)
        message = str(info.value)
        assert names(message, case.spec.name), (case.id, message)
        assert names(message, case.culprit), (case.id, message)
        if case.same_text:
            with pytest.raises(ValueError) as ref:
                reference.REFERENCES[case.spec.name](*[t.cpu() for t in tensors], **case.attrs)
            assert str(ref.value) in message, (case.id, message)
    # The library still works after all of them.
    rng = np.random.default_rng(13)
    check_lsh(lsh_inputs(rng, 2, 9, 11, 8, 3, 8), 8)


def test_out_of_range_codes_name_the_first_culprit():
    rng = np.random.default_rng(14)
    inputs = lsh_inputs(rng, 2, 5, 6, 8, 3, 8, masked=0.0)
    inputs["key_hash"][1, 4, 2] = 8
    inputs["key_hash"][1, 5, 0] = -3
    for deterministic in (0, 1):
        with pytest.raises(cuda.CudaOpError, match=r"LSHCumulation: input 'key_hash' has code 8 at \[1, 4, 2\], "
                                                    r"outside \[0, hashtable_capacity=8\)"):
            run_lsh(_tensors(inputs, torch.float32), 8, deterministic)
    inputs["query_hash"][0, 3, 1] = 123
    with pytest.raises(cuda.CudaOpError, match=r"input 'query_hash' has code 123 at \[0, 3, 1\]"):
        run_lsh(_tensors(inputs, torch.float32), 8)


def test_library_allocated_workspace():
    # An empty workspace: the library allocates its own (cudaMallocAsync on the stream) and frees it.
    rng = np.random.default_rng(16)
    gpu = _gpu(_tensors(lsh_inputs(rng, 2, 300, 300, 32, 8, 64), torch.float32))
    (ours,) = cuda.run("LSHCumulation", *gpu, hashtable_capacity=64, deterministic=1)
    empty = torch.empty(0, dtype=torch.uint8, device="cuda")
    (theirs,) = cuda.run("LSHCumulation", *gpu, hashtable_capacity=64, deterministic=1, workspace=empty)
    assert torch.equal(ours, theirs)


def test_asynchronous_calls_agree_with_synchronous_ones():
    # What the benchmarks time: enqueue only, on the current stream, then synchronise.
    rng = np.random.default_rng(15)
    gpu = _gpu(_tensors(lsh_inputs(rng, 2, 500, 500, 64, 16, 128), torch.float32))
    (sync,) = cuda.run("LSHCumulation", *gpu, hashtable_capacity=128, deterministic=1)
    (not_sync,) = cuda.run("LSHCumulation", *gpu, hashtable_capacity=128, deterministic=1, synchronous=False)
    torch.cuda.synchronize()
    assert torch.equal(sync, not_sync)
