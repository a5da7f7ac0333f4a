"""The CUDA kernels against the PyTorch references, through the test-only CUDA harness library's C ABI
(libbucketrt_cuda_harness.so, beside the op library; bucketrt.library.cuda).

Skipped where torch sees no CUDA device or the library was built without CUDA. Needs only torch,
numpy and pytest (the GPU machine may lack onnx/onnxruntime): run from a source tree with

    BUCKETRT_LIBRARY=/path/to/libbucketrt_ort.so PYTHONPATH=src python -m pytest tests/test_kernels_cuda.py

(the harness is taken from beside $BUCKETRT_LIBRARY; $BUCKETRT_CUDA_HARNESS names another).

Data reports are checked asynchronously as the ORT CUDA EP reads them, and the EP itself
(onnxruntime-gpu, skipped without it): a data error fails the next run, the opt-in fails the same run,
CUDA-graph capture replays the eager result.

The grids are the CPU kernel tests' (op_inputs.py), each in float32 and float16, LSHCumulation in
both modes. Tolerances are the CPU tests': max abs error <= 1e-5 (float32; TopKExperts' two
projections 2e-5) or 2e-3 (float16) times max(1, max |reference|); SignHash codes equal the
reference's exactly, except gaussian codes of real-valued data where a projection lies within
rounding of zero (the CPU tests' audit). References
run on the CPU in float32 (for float16 inputs: on the widened inputs, rounded once, as the spec says).
ArgmaxHash buckets equal the reference's except where two candidates lie within rounding of each
other (audited in float64), and the CPU kernel's exactly; BucketSum sums equal the in-order float32
sums bit for bit; Top1Dispatch's outputs equal the reference's; TopKExperts' sums over a token's
picks run in the reference's order (exact where the products are).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from kernel_cases import (
    NONFINITE_CASES,
    NONFINITE_RTOL,
    argmax_flip_margins,
    assert_nonfinite_close,
    bucket_sum_in_order,
    gaussian_near_zero,
    nonfinite_inputs,
)
from op_inputs import (
    ARGMAX_CASES,
    BUCKET_SUM_CASES,
    CHUNK_ATTENTION_CASES,
    EXPERT_FFN_CASES,
    GAUSSIAN_CASES,
    HADAMARD_ANY_DIAGONAL_CASES,
    HADAMARD_CASES,
    LSH_CASES,
    MASKED_ATTENTION_CASES,
    TOP1_CASES,
    TOPK_CASES,
    argmax_inputs,
    attention_attrs,
    bucket_sum_inputs,
    chunk_attention_inputs,
    chunk_attention_seed,
    expert_ffn_inputs,
    lsh_inputs,
    lsh_seed,
    masked_attention_inputs,
    sign_inputs,
    signs,
    top1_probs,
    topk_attrs,
    topk_experts_inputs,
)

from bucketrt.library import cuda
from bucketrt.ops import reference
from bucketrt.ops.catalogue import EXPERT_ACTIVATIONS, EXPERT_GATINGS, hadamard_parts

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


def _cpu_run_op():
    """bucketrt.library.run_op: an op on its CPU kernel through ONNX Runtime (skips without onnx and
    onnxruntime, which the GPU machine may lack)."""
    pytest.importorskip("bucketrt.ops.graph", reason="onnx / onnxruntime not installed")
    pytest.importorskip("onnxruntime")
    from bucketrt.library import run_op

    return run_op


# -- LSHCumulation ---------------------------------------------------------------------------


def run_lsh(tensors, capacity, deterministic=0, **kwargs) -> torch.Tensor:
    (out,) = cuda.run(
        "LSHCumulation", *_gpu(tensors), hashtable_capacity=capacity, deterministic=deterministic, **kwargs
    )
    return out.cpu()


def check_lsh(inputs, capacity, dtype=torch.float32, deterministic=0) -> torch.Tensor:
    t = _tensors(inputs, dtype)
    out = run_lsh(t, capacity, deterministic)
    ref = reference.lsh_cumulation(*t.values(), hashtable_capacity=capacity)
    assert out.dtype == dtype == ref.dtype and out.shape == ref.shape
    scale = max(1.0, ref.float().abs().max().item())
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= TOLERANCE[dtype] * scale, (
        f"max abs error {err} (scale {scale}, {dtype}, deterministic={deterministic})"
    )
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
@pytest.mark.parametrize(
    "batch,length,dim,num_hash,code_len,groups", HADAMARD_ANY_DIAGONAL_CASES + HADAMARD_LAYOUT_CASES
)
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
    run_op = _cpu_run_op()
    from bucketrt.ops.catalogue import SIGN_HASH

    rng = np.random.default_rng(400)
    inputs = sign_inputs(rng, 3, 200, 64, 3, (64, 32 * 9))
    attrs = {"num_hash": 32, "hash_code_len": 9, "transform": "gaussian"}
    (cpu,) = run_op(SIGN_HASH, inputs, attrs)
    (gpu,) = cuda.run("SignHash", *_gpu(_tensors(inputs, torch.float32)), **attrs)
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)


# -- ArgmaxHash ------------------------------------------------------------------------------


def run_argmax(inputs, num_hash, dtype):
    t = _tensors(inputs, dtype)
    (out,) = cuda.run("ArgmaxHash", *_gpu(t), num_hash=num_hash)
    out = out.cpu()
    ref = reference.argmax_hash(*t.values(), num_hash=num_hash)
    assert out.dtype == torch.int32 and out.shape == ref.shape
    return out, ref, t


def _numpy(tensors: dict[str, torch.Tensor], dtype=None) -> dict[str, np.ndarray]:
    """numpy copies; float tensors in `dtype` when given."""
    return {
        name: (t.to(dtype) if dtype is not None and t.is_floating_point() else t).numpy() for name, t in tensors.items()
    }


# Beyond the CPU grid: D over one staged chunk (128) with 150 columns a round (two column tiles),
# factor boundaries inside warps, twenty one-column factors, a partly live last warp, and a
# Reformer-like size with many row tiles.
ARGMAX_LAYOUT_CASES = [
    (2, 2, 37, 200, 2, [300]),
    (1, 3, 50, 64, 4, [2, 4, 8, 6, 2]),
    (1, 1, 20, 16, 1, [2] * 20),
    (2, 1, 33, 8, 2, [6, 70]),
    (2, 4, 1000, 64, 8, [32]),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,heads,length,dim,num_hash,sizes", ARGMAX_CASES + ARGMAX_LAYOUT_CASES)
def test_argmax_hash_matches_reference(batch, heads, length, dim, num_hash, sizes, dtype):
    rng = np.random.default_rng(500 + batch + heads + length + dim + num_hash + len(sizes))
    inputs = argmax_inputs(rng, batch, heads, length, dim, num_hash, sizes)
    inputs["mask"][0, 0] = 1  # at least one live row
    out, ref, t = run_argmax(inputs, num_hash, dtype)
    padding = int(np.prod(sizes))
    live = (t["mask"] != 0)[:, None, None, :].expand_as(out)
    assert (out[~live] == padding).all()
    assert ((out[live] >= 0) & (out[live] < padding)).all()
    # Rounding may change a bucket only where two candidates tie to within float32 error.
    differing = out != ref
    assert differing.float().mean() < 0.01
    if differing.any():
        margins = argmax_flip_margins(_numpy(t, torch.float32), num_hash, out.numpy(), ref.numpy())
        assert margins.max() < 1e-4, f"{int(differing.sum())} buckets differ, worst margin {margins.max()}"


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_argmax_hash_equals_the_cpu_kernel(dtype):
    # Same sums in the same order (d ascending, multiply and add rounded separately) and the same
    # argmax: the CUDA and CPU kernels agree bit for bit, near-ties included. Needs onnxruntime (CPU).
    run_op = _cpu_run_op()
    from bucketrt.ops.catalogue import ARGMAX_HASH

    for index, (batch, heads, length, dim, num_hash, sizes) in enumerate(ARGMAX_CASES + ARGMAX_LAYOUT_CASES):
        rng = np.random.default_rng(600 + index)
        t = _tensors(argmax_inputs(rng, batch, heads, length, dim, num_hash, sizes), dtype)
        (cpu,) = run_op(ARGMAX_HASH, _numpy(t), {"num_hash": num_hash})
        (gpu,) = cuda.run("ArgmaxHash", *_gpu(t), num_hash=num_hash)
        np.testing.assert_array_equal(gpu.cpu().numpy(), cpu, err_msg=str(sizes))


def test_argmax_hash_ties_take_the_first_maximum():
    # Projections [1, -1]: y = (x, -x); candidates (x, -x, -x, x). x > 0 -> 0; x < 0 -> 1; x == 0 -> 0
    # (+0 and -0 tie: the first); so does a row of zeros with any projection.
    inputs = {
        "mask": np.ones((1, 5), np.int32),
        "vector": np.array([[[[2.0], [-2.0], [0.0], [-0.0], [1e-30]]]], np.float32),
        "projection": np.array([[[1.0, -1.0]]], np.float32),
        "bucket_sizes": np.array([4], np.int32),
    }
    for dtype in FLOATS:
        out, ref, _ = run_argmax(inputs, 1, dtype)
        assert torch.equal(out, ref) and out[0, 0, 0].tolist() == [0, 1, 0, 0, 0], (dtype, out)


def test_argmax_hash_nan_is_the_maximum():
    # NaN projection columns make y NaN there for every row: the first NaN column of a factor is its
    # digit (torch.argmax over concat(y, -y)); the other factors are unaffected.
    rng = np.random.default_rng(601)
    inputs = argmax_inputs(rng, 2, 2, 40, 8, 2, [6, 8], masked=0.1)
    inputs["projection"][0, :, [1, 2]] = np.nan  # head 0, round 0: factor 0's columns 1 and 2
    inputs["projection"][1, 3, 7 + 3 + 3] = np.nan  # head 1, round 1 (7 columns a round): factor 1's column 3
    for dtype in FLOATS:
        out, ref, t = run_argmax(inputs, 2, dtype)
        assert torch.equal(out, ref), dtype
        live = t["mask"] != 0
        assert (out[:, 0, 0][live] % 6 == 1).all() and (out[:, 1, 1][live] // 6 == 3).all()


# Bad bucket_sizes are data on the device: the launch writes bucket 0 and the check after it (the
# harness's synchronous run, the ORT glue's every run) words them as the CPU kernel does.
def _argmax_bad(sizes, columns=None, num_hash=2):
    rng = np.random.default_rng(602)
    inputs = argmax_inputs(rng, 2, 2, 5, 4, num_hash, [4, 6])
    inputs["bucket_sizes"] = np.array(sizes, np.int32)
    if columns is not None:
        inputs["projection"] = rng.standard_normal((2, 4, columns)).astype(np.float32)
    return inputs


ARGMAX_BAD = [
    ("odd", _argmax_bad([5, 5])),
    ("zero", _argmax_bad([0, 10])),
    ("negative", _argmax_bad([-4, 14])),
    ("overflow", _argmax_bad([65536, 65536], columns=2 * 65536)),
    ("31-factors", _argmax_bad([2] * 31, columns=2 * 31)),
    ("columns", _argmax_bad([4, 8])),
    ("num-hash", _argmax_bad([4, 6], num_hash=3)),
]


@pytest.mark.parametrize("inputs", [b[1] for b in ARGMAX_BAD], ids=[b[0] for b in ARGMAX_BAD])
def test_argmax_hash_bad_sizes_get_the_cpu_kernels_words(inputs):
    t = _tensors(inputs, torch.float32)
    num_hash = 2
    with pytest.raises(ValueError) as ref:
        reference.argmax_hash(*t.values(), num_hash=num_hash)
    with pytest.raises(cuda.CudaOpError) as info:
        cuda.run("ArgmaxHash", *_gpu(t), num_hash=num_hash)
    assert str(ref.value) in str(info.value), str(info.value)
    # The library still works after it.
    good = _tensors(_argmax_bad([4, 6]), torch.float32)
    (out,) = cuda.run("ArgmaxHash", *_gpu(good), num_hash=2)
    assert torch.equal(out.cpu(), reference.argmax_hash(*good.values(), num_hash=2))


# -- BucketSum -------------------------------------------------------------------------------

# Beyond the CPU grid: one group of one column, D + 1 = 130 columns a bucket (warps across buckets),
# more buckets than rows (empty ones), one bucket holding 5000 rows, LSG's merge (many groups of a
# chunk of rows), and 2^20 buckets (a 21-bit bucket field in the sort keys).
BUCKET_SUM_LAYOUT_CASES = [
    (1, 1000, 1, 3),
    (2, 300, 129, 50),
    (4, 10, 5, 64),
    (1, 5000, 8, 1),
    (768, 64, 128, 16),
    (1, 10, 2, 1 << 20),
]


def run_bucket_sum(t, num_buckets):
    sums, weights = cuda.run("BucketSum", *_gpu(t), num_buckets=num_buckets)
    return sums.cpu(), weights.cpu()


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("groups,rows,dim,num_buckets", BUCKET_SUM_CASES + BUCKET_SUM_LAYOUT_CASES)
def test_bucket_sum_matches_reference(groups, rows, dim, num_buckets, dtype):
    rng = np.random.default_rng(700 + groups + rows + dim)
    t = _tensors(bucket_sum_inputs(rng, groups, rows, dim, num_buckets), dtype)
    sums, weights = run_bucket_sum(t, num_buckets)
    ref = reference.bucket_sum(*t.values(), num_buckets=num_buckets)
    for out, expected in zip((sums, weights), ref):
        assert out.dtype == dtype == expected.dtype and out.shape == expected.shape
        scale = max(1.0, expected.float().abs().max().item())
        err = (out.float() - expected.float()).abs().max().item()
        assert err <= TOLERANCE[dtype] * scale, f"max abs error {err} (scale {scale}, {dtype})"
    # Rows added in order n from 0 in float32 (rounded once for float16): those sums bit for bit.
    exact_sums, exact_weights = bucket_sum_in_order(_numpy(t), num_buckets)
    np.testing.assert_array_equal(sums.numpy(), exact_sums)
    np.testing.assert_array_equal(weights.numpy(), exact_weights)


def test_bucket_sum_is_deterministic():
    rng = np.random.default_rng(701)
    t = _tensors(bucket_sum_inputs(rng, 3, 20000, 64, 4), torch.float32)
    first = run_bucket_sum(t, 4)
    for _ in range(3):
        again = run_bucket_sum(t, 4)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize(
    "ids,num_buckets",
    [([[0, 5]], 4), ([[-3, 1], [2, 0]], 4), ([[3, 2**31 - 1], [-(2**31), 0]], 4), ([[0, 1, 2, 3]], 3)],
    ids=["above", "negative", "int32-extremes", "at-num_buckets"],
)
def test_bucket_sum_bad_ids_get_the_cpu_kernels_words(ids, num_buckets):
    bucket = np.array(ids, np.int32)
    inputs = {
        "bucket": bucket,
        "weight": np.ones(bucket.shape, np.float32),
        "vector": np.ones((*bucket.shape, 3), np.float32),
    }
    t = _tensors(inputs, torch.float32)
    with pytest.raises(ValueError) as ref:
        reference.bucket_sum(*t.values(), num_buckets=num_buckets)
    with pytest.raises(cuda.CudaOpError) as info:
        run_bucket_sum(t, num_buckets)
    assert str(ref.value) in str(info.value), str(info.value)
    good = _tensors(bucket_sum_inputs(np.random.default_rng(702), 2, 9, 3, 4), torch.float32)
    sums, _ = run_bucket_sum(good, 4)
    np.testing.assert_array_equal(sums.numpy(), bucket_sum_in_order(_numpy(good), 4)[0])


# -- Top1Dispatch ----------------------------------------------------------------------------

DISPATCH_OUTPUTS = ("expert", "gate", "priority", "counts", "order")

# Beyond the CPU grid: a long sequence with Switch's 128 experts, one expert, more experts than the
# slot scan's block (256), many sequences, and a capacity beyond int32.
TOP1_LAYOUT_CASES = [
    (1, 4096, 128, 40, 1.0),
    (3, 300, 1, 100, 0.0),
    (2, 50, 300, 2, 0.0),
    (600, 3, 4, 1, 0.0),
    (2, 20, 4, 1 << 40, 0.0),
]


def check_dispatch(probs: torch.Tensor, capacity: int):
    ours = [t.cpu() for t in cuda.run("Top1Dispatch", probs.cuda(), expert_capacity=capacity)]
    ref = reference.top1_dispatch(probs, expert_capacity=capacity)
    for name, a, b in zip(DISPATCH_OUTPUTS, ours, ref):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)  # NaN gates compare equal
    return ours


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,length,experts,capacity,skew", TOP1_CASES + TOP1_LAYOUT_CASES)
def test_top1_dispatch_matches_reference(batch, length, experts, capacity, skew, dtype):
    probs = top1_probs(np.random.default_rng(800 + batch * 100 + length + experts), batch, length, experts, skew)
    expert, _, _, counts, order = check_dispatch(torch.from_numpy(probs).to(dtype), capacity)
    assert counts.sum() == (expert >= 0).sum() == (order >= 0).sum()
    if skew >= 2.0:
        assert (expert == -1).any(), "no token overflowed"


def test_top1_dispatch_ties_and_nan():
    probs = np.full((2, 4, 4), 0.25, np.float32)  # all tied: expert 0 (the first maximum)
    probs[0, 1] = [0.1, 0.4, 0.4, 0.1]  # tie between 1 and 2: 1
    probs[0, 2] = [0.1, np.nan, 0.5, np.nan]  # NaN is the maximum, the first one: 1 (as torch.argmax)
    probs[1, 0] = [np.nan, 0.9, np.nan, 0.0]  # a NaN first: 0
    probs[1, 1] = [-0.0, 0.0, -1.0, -np.inf]  # -0 and +0 tie: 0
    probs[1, 2] = [-np.inf, -np.inf, -np.inf, -np.inf]
    probs[1, 3] = [0.5, np.inf, np.inf, 1.0]
    for dtype in FLOATS:
        expert, gate, _, _, _ = check_dispatch(torch.from_numpy(probs).to(dtype), 8)
        assert expert.tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]], dtype
        assert torch.isnan(gate[0, 2]) and torch.isnan(gate[1, 0])


# -- bad input for the ops above: the reference's words ---------------------------------------


def test_bad_shapes_and_attributes_of_the_hashing_and_routing_ops():
    probs = torch.full((1, 2, 2), 0.5).cuda()
    cases = [
        (
            "Top1Dispatch",
            (probs,),
            {"expert_capacity": -1},
            "Top1Dispatch: attribute 'expert_capacity' must be >= 0, got -1",
        ),
        ("Top1Dispatch", (probs[0],), {"expert_capacity": 1}, "Top1Dispatch: input 'probs' must have rank 3"),
        (
            "Top1Dispatch",
            (probs[:, :0],),
            {"expert_capacity": 1},
            "Top1Dispatch: input 'probs' dim 1 (S) must be >= 1, got 0",
        ),
        (
            "Top1Dispatch",
            (probs.double(),),
            {"expert_capacity": 1},
            "Top1Dispatch: input 'probs' must be float32 or float16, got float64",
        ),
        (
            "BucketSum",
            (torch.zeros(1, 2, dtype=torch.int32).cuda(), torch.ones(1, 3).cuda(), torch.ones(1, 2, 3).cuda()),
            {"num_buckets": 8},
            "BucketSum: input 'weight' dim 1 (N) is 3, but input 'bucket' says N=2",
        ),
        (
            "BucketSum",
            (torch.zeros(1, 2, dtype=torch.int32).cuda(), torch.ones(1, 2).cuda(), torch.ones(1, 2, 3).cuda()),
            {"num_buckets": 0},
            "BucketSum: attribute 'num_buckets' must be >= 1, got 0",
        ),
        (
            "BucketSum",
            (torch.zeros(1, 2, dtype=torch.int32).cuda(), torch.ones(1, 2).cuda(), torch.ones(1, 2, 3).cuda().half()),
            {"num_buckets": 2},
            "BucketSum: input 'vector' must be float32 like input 'weight', got float16",
        ),
        (
            "ArgmaxHash",
            tuple(t.cuda() for t in _tensors(_argmax_bad([4, 6]), torch.float32).values())[:3]
            + (torch.tensor([4, 6]).cuda(),),
            {"num_hash": 2},
            "ArgmaxHash: input 'bucket_sizes' must be int32, got int64",
        ),
    ]
    for op, inputs, attrs, words in cases:
        with pytest.raises(cuda.CudaOpError) as info:
            cuda.run(op, *inputs, **attrs)
        assert words in str(info.value), (op, str(info.value))
        with pytest.raises(ValueError) as ref:
            reference.REFERENCES[op](*[t.cpu() for t in inputs], **attrs)
        assert words in str(ref.value), (op, str(ref.value))


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
    from bucketrt.ops import codegen

    table = codegen.cuda_table((Path(__file__).resolve().parents[1] / codegen.CUDA_TABLE).read_text())
    for case in (c for c in cases if c.spec.name in {e.op for e in table}):  # the others have no CUDA kernel
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
        with pytest.raises(
            cuda.CudaOpError,
            match=r"LSHCumulation: input 'key_hash' has code 8 at \[1, 4, 2\], "
            r"outside \[0, hashtable_capacity=8\)",
        ):
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


# -- SortedChunkAttention ----------------------------------------------------------------------


def run_chunk_attention(tensors, synchronous=True, **attrs) -> torch.Tensor:
    (out,) = cuda.run("SortedChunkAttention", *_gpu(tensors), synchronous=synchronous, **attrs)
    return out.cpu()


def check_chunk_attention(inputs, attrs, dtype=torch.float32) -> torch.Tensor:
    t = _tensors(inputs, dtype)
    out = run_chunk_attention(t, **attrs)
    ref = reference.sorted_chunk_attention(*t.values(), **attrs)
    assert out.dtype == dtype == ref.dtype and out.shape == ref.shape
    scale = max(1.0, ref.float().abs().max().item())
    err = (out.float() - ref.float()).abs().max().item()
    print(f"max abs error {err:.3g} (scale {scale:.3g}, {dtype})")
    assert err <= TOLERANCE[dtype] * scale, f"max abs error {err} (scale {scale}, {dtype}, {attrs})"
    return out


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,heads,length,dim,rounds,buckets,attrs", CHUNK_ATTENTION_CASES)
def test_chunk_attention_matches_reference(batch, heads, length, dim, rounds, buckets, attrs, dtype):
    rng = np.random.default_rng(chunk_attention_seed(batch, heads, length, dim, rounds))
    inputs = chunk_attention_inputs(rng, batch, heads, length, dim, rounds, buckets)
    inputs["mask"][0, 0] = 1
    check_chunk_attention(inputs, attrs, dtype)


# Beyond the CPU grid: several query tiles (32 queries) per chunk, several key tiles (64 keys) per
# window with a partial last one, D over one chunk of 64 (queries streamed, not resident), a
# window longer than the K chunks (keys seen twice), 31-bit buckets (four radix passes), and a
# Reformer-like size (two radix passes over segments of 1024 entries). Queries scaled by 1/sqrt(D),
# as Reformer's are.
CHUNK_ATTENTION_LAYOUT_CASES = [
    (1, 2, 100, 130, 1, 4, dict(chunk_length=128)),  # plain: 4 query tiles, 2 key tiles, 3 dim chunks
    (2, 1, 96, 20, 3, 5, dict(chunk_length=48, chunks_after=1)),  # 2 query tiles; window 144: 3 key tiles
    (1, 1, 16, 8, 1, 3, dict(chunk_length=4, chunks_before=5)),  # window of 6 chunks over K = 4
    (1, 2, 64, 16, 2, 2**31 - 1, dict(chunk_length=16, causal=1, mask_self=1)),
    (2, 4, 1024, 64, 4, 65, dict(chunk_length=64, mask_self=1)),
    (1, 1, 300, 33, 2, 300, dict(chunk_length=30, chunks_before=2, chunks_after=2, causal=1)),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,heads,length,dim,rounds,buckets,attrs", CHUNK_ATTENTION_LAYOUT_CASES)
def test_chunk_attention_layouts(batch, heads, length, dim, rounds, buckets, attrs, dtype):
    rng = np.random.default_rng(500 + length + dim + rounds)
    inputs = chunk_attention_inputs(rng, batch, heads, length, dim, rounds, buckets)
    inputs["query"] *= np.float32(dim**-0.5)
    inputs["mask"][:, 0] = 1
    check_chunk_attention(inputs, attrs, dtype)


@pytest.mark.parametrize("attrs", [dict(chunk_length=8), dict(chunk_length=4, causal=1), dict(chunk_length=4)])
def test_chunk_attention_fully_masked_rows_weight_every_key_one(attrs):
    # Reformer's quirk (docs/reformer.md): every score -1e9, logsumexp == -1e9 in float32, each key
    # weight exp(0) = 1: the values' sum. Batch row 1 has no live key at all.
    rng = np.random.default_rng(17)
    inputs = chunk_attention_inputs(rng, 2, 2, 8, 5, 2, 3)
    inputs["mask"][1] = 0
    out = check_chunk_attention(inputs, attrs)
    if attrs["chunk_length"] >= 8:  # plain attention: every query sums all 8 values
        expected = inputs["value"][1].sum(-2, keepdims=True).repeat(8, axis=-2)
        np.testing.assert_allclose(out[1].numpy(), expected, rtol=0, atol=1e-5)


def test_chunk_attention_is_bitwise_reproducible():
    # No floating-point atomics: repeated runs give identical bits.
    rng = np.random.default_rng(18)
    inputs = chunk_attention_inputs(rng, 2, 3, 256, 64, 4, 33)
    gpu = _gpu(_tensors(inputs, torch.float32))
    attrs = dict(chunk_length=32, mask_self=1)
    (first,) = cuda.run("SortedChunkAttention", *gpu, **attrs)
    for _ in range(3):
        (again,) = cuda.run("SortedChunkAttention", *gpu, **attrs)
        assert torch.equal(first, again)


def test_chunk_attention_negative_buckets():
    rng = np.random.default_rng(19)
    inputs = chunk_attention_inputs(rng, 2, 2, 16, 4, 2, 4)
    inputs["buckets"][1, 0, 1, 5] = -1
    t = _tensors(inputs, torch.float32)
    with pytest.raises(ValueError) as ref:
        reference.sorted_chunk_attention(*t.values(), chunk_length=4)
    with pytest.raises(cuda.CudaOpError) as info:
        run_chunk_attention(t, chunk_length=4)
    assert str(info.value) == str(ref.value) == "SortedChunkAttention: input 'buckets' must be >= 0"
    # Plain attention ignores the buckets, negative or not.
    check_chunk_attention(inputs, dict(chunk_length=16))


def test_chunk_attention_bad_buckets_never_fault():
    # Without the data check (synchronous=False), negative buckets sort as 0 and any int32 bucket
    # stays in bounds: the results are those of the buckets clamped to >= 0.
    rng = np.random.default_rng(20)
    inputs = chunk_attention_inputs(rng, 2, 2, 64, 16, 3, 5)
    inputs["buckets"][0, 1] = np.iinfo(np.int32).min
    inputs["buckets"][1, 0, 2, ::3] = -7
    inputs["buckets"][1, 1, 0, :] = np.iinfo(np.int32).max
    attrs = dict(chunk_length=8, chunks_after=1)
    out = run_chunk_attention(_tensors(inputs, torch.float32), synchronous=False, **attrs)
    torch.cuda.synchronize()
    clamped = {**inputs, "buckets": np.maximum(inputs["buckets"], 0)}
    assert torch.equal(out, check_chunk_attention(clamped, attrs))


@pytest.mark.parametrize(
    "attrs,culprit",
    [
        (dict(chunk_length=4, max_length=8), "max_length"),
        (dict(chunk_length=5), "chunk_length"),
        (dict(chunk_length=4, causal=2), "causal"),
        (dict(chunk_length=4, mask_self=-1), "mask_self"),
    ],
)
def test_chunk_attention_bad_attributes_have_the_references_words(attrs, culprit):
    rng = np.random.default_rng(21)
    t = _tensors(chunk_attention_inputs(rng, 2, 2, 16, 4, 2, 4), torch.float32)
    with pytest.raises(ValueError) as ref:
        reference.sorted_chunk_attention(*t.values(), **attrs)
    with pytest.raises(cuda.CudaOpError) as info:
        run_chunk_attention(t, **attrs)
    assert str(ref.value) in str(info.value) and culprit in str(info.value)


# -- ExpertFFN ---------------------------------------------------------------------------------


def _ffn_listed(rng, batch, length, dim, ff, counts):
    """Inputs with the given counts per expert: a random choice of tokens, grouped by expert."""
    tokens = batch * length
    counts = np.asarray(counts, np.int32)
    listed = int(counts.sum())
    order = np.full(tokens, -1, np.int32)
    order[:listed] = rng.permutation(tokens)[:listed]
    experts = len(counts)
    return {
        "hidden": rng.standard_normal((batch, length, dim)).astype(np.float32),
        "order": order.reshape(batch, length),
        "counts": counts,
        "gate": rng.random((batch, length)).astype(np.float32),
        "wi": (rng.standard_normal((experts, ff, dim)) / np.sqrt(dim)).astype(np.float32),
        "wo": (rng.standard_normal((experts, dim, ff)) / np.sqrt(ff)).astype(np.float32),
    }


def check_ffn(inputs, dtype=torch.float32, activation="relu") -> torch.Tensor:
    t = _tensors(inputs, dtype)
    (out,) = cuda.run("ExpertFFN", *_gpu(t), activation=activation)
    out = out.cpu()
    ref = reference.expert_ffn(*t.values(), activation=activation)
    assert out.dtype == dtype == ref.dtype and out.shape == ref.shape
    scale = max(1.0, ref.float().abs().max().item())
    err = (out.float() - ref.float()).abs().max().item()
    print(f"max abs error {err:.3g} (scale {scale:.3g}, {dtype}, {activation})")
    assert err <= TOLERANCE[dtype] * scale, f"max abs error {err} (scale {scale}, {dtype}, {activation})"
    # Tokens not listed (dropped) get exactly zero.
    tokens = inputs["order"].size
    listed = torch.zeros(tokens, dtype=torch.bool)
    listed[torch.from_numpy(inputs["order"].reshape(-1)[: int(inputs["counts"].sum())]).long()] = True
    assert not out.reshape(tokens, -1)[~listed].any()
    return out


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,length,dim,ff,experts,capacity,skew", EXPERT_FFN_CASES)
def test_expert_ffn_matches_reference(batch, length, dim, ff, experts, capacity, skew, dtype):
    check_ffn(expert_ffn_inputs(np.random.default_rng(length), batch, length, dim, ff, experts, capacity, skew), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("activation", EXPERT_ACTIVATIONS)
def test_expert_ffn_activations(activation, dtype):
    inputs = expert_ffn_inputs(np.random.default_rng(1), 2, 12, 16, 24, 3, 12)
    inputs["hidden"] *= 4.0  # reach the saturating and clipping regions (gelu_10, relu6, softplus threshold)
    check_ffn(inputs, dtype, activation)


# Beyond the CPU grid: experts whose tokens straddle the 64-row tiles (63, 64, 65, 0, 1), D and F
# over one 64-column tile and no multiple of the 16-wide inner step, more experts than the schedule
# scans at once (256), one expert with every token (9 row tiles), nothing listed at all.
def _ffn_layout_cases():
    rng = np.random.default_rng(600)
    many = rng.integers(0, 4, 300)
    many[100:200] = 0
    return [
        ("tile-edges", (2, 100, 100, 130, [63, 64, 65, 0, 1])),
        ("300-experts", (1, 700, 16, 24, many.tolist())),
        ("one-expert", (4, 130, 64, 256, [520])),
        ("none-listed", (1, 3, 8, 12, [0, 0, 0])),
    ]


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("case", [c[1] for c in _ffn_layout_cases()], ids=[c[0] for c in _ffn_layout_cases()])
def test_expert_ffn_layouts(case, dtype):
    batch, length, dim, ff, counts = case
    check_ffn(_ffn_listed(np.random.default_rng(601 + dim), batch, length, dim, ff, counts), dtype, "gelu_new")


def test_expert_ffn_is_bitwise_reproducible():
    inputs = expert_ffn_inputs(np.random.default_rng(22), 4, 128, 64, 256, 8, 128)
    gpu = _gpu(_tensors(inputs, torch.float32))
    (first,) = cuda.run("ExpertFFN", *gpu, activation="gelu")
    for _ in range(3):
        (again,) = cuda.run("ExpertFFN", *gpu, activation="gelu")
        assert torch.equal(first, again)


def _ffn_bad_dispatch():
    good = expert_ffn_inputs(np.random.default_rng(3), 2, 5, 8, 12, 3, 5)
    order = good["order"].reshape(-1)
    twice = order.copy()
    twice[1] = twice[0]
    return good, [
        ("negative count", dict(counts=np.array([-1, 5, 6], np.int32))),
        ("counts over tokens", dict(counts=np.array([5, 5, 1], np.int32))),
        ("order out of range", dict(order=np.where(order == order[0], 10, order).astype(np.int32).reshape(2, 5))),
        ("order twice", dict(order=twice.reshape(2, 5))),
    ]


def test_expert_ffn_bad_dispatch_has_the_references_words():
    good, cases = _ffn_bad_dispatch()
    for name, change in cases:
        t = _tensors({**good, **change}, torch.float32)
        with pytest.raises(ValueError) as ref:
            reference.expert_ffn(*t.values())
        with pytest.raises(cuda.CudaOpError) as info:
            cuda.run("ExpertFFN", *_gpu(t))
        assert str(info.value) == str(ref.value), name
    check_ffn(good)


def test_expert_ffn_bad_dispatch_never_faults():
    # Without the data check (synchronous=False) nothing reads or writes out of bounds, however
    # wrong counts and order are; the device stays usable.
    good, cases = _ffn_bad_dispatch()
    int_min, int_max = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    cases += [
        ("huge counts", dict(counts=np.array([int_max, int_max, int_max], np.int32))),
        ("extreme ids", dict(order=np.array([[int_min, int_max, -1, 10, 3], [0, 1, 2, 3, 4]], np.int32))),
    ]
    for _, change in cases:
        cuda.run("ExpertFFN", *_gpu(_tensors({**good, **change}, torch.float32)), synchronous=False)
    torch.cuda.synchronize()
    check_ffn(good)


def test_expert_ffn_bad_shapes_and_attributes():
    good = expert_ffn_inputs(np.random.default_rng(4), 2, 5, 8, 12, 3, 5)
    for change, attrs, culprit in [
        (dict(wo=good["wo"][:2].copy()), {}, "wo"),
        (dict(wo=np.zeros((3, 8, 11), np.float32)), {}, "wo"),
        ({}, {"activation": "gated-gelu"}, "activation"),
    ]:
        t = _tensors({**good, **change}, torch.float32)
        with pytest.raises(ValueError) as ref:
            reference.expert_ffn(*t.values(), **attrs)
        with pytest.raises(cuda.CudaOpError) as info:
            cuda.run("ExpertFFN", *_gpu(t), **attrs)
        assert str(ref.value) in str(info.value) and culprit in str(info.value)


# -- TopKExperts -------------------------------------------------------------------------------

# The CPU kernel tests' tolerance for TopKExperts (two projections with a gating between): 2e-5 in
# float32; float16 as every op's.
TOPK_TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3}


def run_topk(tensors, attrs, **kwargs) -> torch.Tensor:
    (out,) = cuda.run("TopKExperts", *_gpu(tensors), **attrs, **kwargs)
    return out.cpu()


def check_topk(inputs, attrs, dtype=torch.float32) -> torch.Tensor:
    t = _tensors(inputs, dtype)
    out = run_topk(t, attrs)
    ref = reference.topk_experts(*t.values(), **attrs)
    assert out.dtype == dtype == ref.dtype and out.shape == ref.shape
    scale = max(1.0, ref.float().abs().max().item())
    err = (out.float() - ref.float()).abs().max().item()
    print(f"max abs error {err:.3g} (scale {scale:.3g}, {dtype}, {attrs})")
    assert err <= TOPK_TOLERANCE[dtype] * scale, f"max abs error {err} (scale {scale}, {dtype}, {attrs})"
    # A token none of whose picks has an expert gets exactly 0.
    dead = torch.from_numpy((inputs["expert_index"] == inputs["gate_up"].shape[0]).all(1))
    assert not out[dead].any()
    return out


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("tokens,picks,dim,ff,experts,gating,none", TOPK_CASES)
def test_topk_experts_matches_reference(tokens, picks, dim, ff, experts, gating, none, dtype):
    rng = np.random.default_rng(tokens * 1000 + picks * 100 + experts)
    check_topk(topk_experts_inputs(rng, tokens, picks, dim, ff, experts, gating, none), topk_attrs(gating), dtype)


@pytest.mark.parametrize("gating", EXPERT_GATINGS)
@pytest.mark.parametrize("activation", ["silu", "gelu", "quick_gelu", "relu", "gelu_pytorch_tanh", "relu2"])
def test_topk_experts_every_gating(gating, activation):
    rng = np.random.default_rng(len(gating) * 31 + len(activation))
    inputs = topk_experts_inputs(rng, 40, 3, 24, 40, 6, gating, none=0.1)
    inputs["hidden"] *= 4.0  # reach the clamps (limit 7 or 10) and the activations' saturation
    inputs["gate_up_bias"] *= 20.0
    check_topk(inputs, topk_attrs(gating, activation))


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("activation", EXPERT_ACTIVATIONS)
def test_topk_experts_every_activation(activation, dtype):
    inputs = topk_experts_inputs(np.random.default_rng(3), 12, 2, 16, 24, 3, "glu", none=0.1)
    inputs["hidden"] *= 4.0
    check_topk(inputs, topk_attrs("glu", activation), dtype)


def test_topk_experts_limits_clamp_where_the_gating_says():
    inputs = topk_experts_inputs(np.random.default_rng(4), 30, 2, 16, 20, 4, "glu")
    outs = {}
    for gating in ("glu", "glu_clamped", "glu_clamped_after", "glu_clamped_offset"):
        attrs = {"activation": "silu", "gating": gating, "limit": 0.0 if gating == "glu" else 0.25}
        outs[gating] = check_topk(inputs, attrs)
    assert len({o.numpy().tobytes() for o in outs.values()}) == 4


def _topk_routed(rng, tokens, picks, dim, ff, counts, gating="glu"):
    """Inputs whose experts get exactly `counts` pairs (the rest: no expert), in a random order."""
    experts = len(counts)
    flat = np.concatenate([np.repeat(np.arange(experts), counts), np.full(tokens * picks - sum(counts), experts)])
    index = rng.permutation(flat).astype(np.int32).reshape(tokens, picks)
    return topk_experts_inputs(rng, tokens, picks, dim, ff, experts, gating, index=index)


# Beyond the CPU grid: experts whose pairs straddle the 64-row tiles (63, 64, 65, 0, 1), D and F over
# one 64-column tile and no multiple of the 16-wide inner step, more experts than the schedule scans
# at once (256), one expert with every pair (several row tiles), no pair with an expert, and tokens
# whose activations and outputs pass the 256 MiB of one pass (two passes, each sorting its pairs).
def _topk_layout_cases():
    rng = np.random.default_rng(610)
    many = rng.integers(0, 3, 300)
    many[100:200] = 0
    return [
        ("tile-edges", lambda r: _topk_routed(r, 100, 2, 100, 130, [63, 64, 65, 0, 1]), "glu_clamped"),
        ("300-experts", lambda r: _topk_routed(r, 400, 2, 16, 24, many.tolist()), "glu"),
        ("one-expert", lambda r: _topk_routed(r, 260, 2, 64, 80, [520], "none"), "none"),
        ("none-routed", lambda r: _topk_routed(r, 5, 3, 8, 12, [0, 0, 0]), "glu"),
        ("two-passes", lambda r: topk_experts_inputs(r, 130, 8, 65536, 8, 3, "none", none=0.1), "none"),
    ]


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("case", [c[1:] for c in _topk_layout_cases()], ids=[c[0] for c in _topk_layout_cases()])
def test_topk_experts_layouts(case, dtype):
    make, gating = case
    inputs = make(np.random.default_rng(611))
    check_topk(inputs, topk_attrs(gating, "gelu_new" if gating != "none" else "relu"), dtype)


def test_topk_experts_duplicate_picks_and_ignored_weights():
    # A token may pick one expert twice (K > E here): each pick counts with its own weight; a pick
    # without an expert adds nothing, whatever its weight (NaN, Inf).
    rng = np.random.default_rng(7)
    inputs = topk_experts_inputs(rng, 9, 8, 12, 10, 1, "glu")
    assert (inputs["expert_index"] == 0).sum() > 9
    check_topk(inputs, topk_attrs())
    inputs = topk_experts_inputs(rng, 20, 4, 16, 24, 8, "glu")
    inputs["expert_index"][3] = 8
    inputs["expert_index"][inputs["expert_index"] == 2] = 8
    inputs["expert_weight"][3] = np.nan
    out = check_topk(inputs, topk_attrs())
    assert not out[3].any() and torch.isfinite(out).all()


def test_topk_experts_sum_is_in_pick_order():
    # y_j = down_bias[e_j] exactly (down is 0): biases 1e30, 1, -1e30 make the order of the sum over
    # picks visible, whatever order the experts are computed in: the reference's bits.
    index = np.array([[0, 1, 2], [0, 2, 1], [2, 0, 1], [1, 3, 0]], np.int32)
    inputs = topk_experts_inputs(np.random.default_rng(8), 4, 3, 4, 2, 3, "none", index=index)
    inputs["down"][:] = 0.0
    inputs["down_bias"][:] = np.array([1e30, 1.0, -1e30], np.float32)[:, None]
    inputs["expert_weight"][:] = 1.0
    attrs = topk_attrs("none", "relu")
    t = _tensors(inputs, torch.float32)
    out = run_topk(t, attrs)
    np.testing.assert_array_equal(out.numpy(), reference.topk_experts(*t.values(), **attrs).numpy())
    np.testing.assert_array_equal(out[:, 0].numpy(), np.array([0.0, 1.0, 1.0, 1e30], np.float32))


def test_topk_experts_is_bitwise_reproducible():
    inputs = topk_experts_inputs(np.random.default_rng(22), 300, 4, 64, 96, 8, "glu", none=0.1, crowd=0.5)
    gpu = _gpu(_tensors(inputs, torch.float32))
    (first,) = cuda.run("TopKExperts", *gpu, **topk_attrs())
    for _ in range(3):
        (again,) = cuda.run("TopKExperts", *gpu, **topk_attrs())
        assert torch.equal(first, again)


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_topk_experts_agrees_with_the_cpu_kernel(dtype):
    # Both compute the float32 function of the widened inputs; their sums run in different orders, so
    # they agree to the tolerance, not to the bit. Needs onnxruntime (CPU).
    run_op = _cpu_run_op()
    from bucketrt.ops.catalogue import TOPK_EXPERTS

    for index, (tokens, picks, dim, ff, experts, gating, none) in enumerate(TOPK_CASES):
        t = _tensors(
            topk_experts_inputs(np.random.default_rng(620 + index), tokens, picks, dim, ff, experts, gating, none),
            dtype,
        )
        attrs = topk_attrs(gating)
        (cpu,) = run_op(TOPK_EXPERTS, _numpy(t), attrs)
        gpu = run_topk(t, attrs).float().numpy()
        scale = max(1.0, float(np.abs(cpu.astype(np.float32)).max()))
        assert float(np.abs(gpu - cpu.astype(np.float32)).max()) <= TOPK_TOLERANCE[dtype] * scale, (index, dtype)


def _topk_bad_index():
    good = topk_experts_inputs(np.random.default_rng(13), 6, 3, 8, 5, 4, "glu")
    above = good["expert_index"].copy()
    above[2, 1] = 5
    above[4, 0] = -1  # later in row-major order: the first culprit is named
    negative = good["expert_index"].copy()
    negative[0, 2] = -(2**31)
    return good, [("above E", above), ("int32 min", negative)]


def test_topk_experts_bad_index_has_the_references_words():
    good, cases = _topk_bad_index()
    for name, index in cases:
        t = _tensors({**good, "expert_index": index}, torch.float32)
        with pytest.raises(ValueError) as ref:
            reference.topk_experts(*t.values(), **topk_attrs())
        with pytest.raises(cuda.CudaOpError) as info:
            run_topk(t, topk_attrs())
        assert str(info.value) == str(ref.value), name
    check_topk(good, topk_attrs())


def test_topk_experts_bad_index_never_faults():
    # Without the data check (synchronous=False) nothing reads or writes out of bounds, whatever the
    # indices (taken as no expert); the device stays usable.
    good, cases = _topk_bad_index()
    int_min, int_max = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    cases.append(("extremes", np.array([[int_min, int_max, 4]] * 6, np.int32)))
    for _, index in cases:
        cuda.run(
            "TopKExperts",
            *_gpu(_tensors({**good, "expert_index": index}, torch.float32)),
            synchronous=False,
            **topk_attrs(),
        )
    torch.cuda.synchronize()
    check_topk(good, topk_attrs())


def test_topk_experts_bad_shapes_and_attributes():
    good = topk_experts_inputs(np.random.default_rng(14), 6, 3, 8, 5, 4, "glu")
    plain = topk_experts_inputs(np.random.default_rng(14), 6, 3, 8, 5, 4, "none")
    for inputs, attrs, culprit in [
        (plain, topk_attrs(), "gate_up"),
        (good, topk_attrs("none"), "gate_up"),
        (good, {"gating": "glu_clamped"}, "limit"),
        (good, {"gating": "glu", "limit": 7.0}, "limit"),
        (good, {"gating": "glu_clamped", "limit": 7}, "limit"),
        (good, {"activation": "gated-gelu"}, "activation"),
    ]:
        t = _tensors(inputs, torch.float32)
        with pytest.raises(ValueError) as ref:
            reference.topk_experts(*t.values(), **attrs)
        with pytest.raises(cuda.CudaOpError) as info:
            run_topk(t, attrs)
        assert str(ref.value) in str(info.value) and culprit in str(info.value), str(info.value)


# -- MaskedAttention ---------------------------------------------------------------------------


def run_masked_attention(tensors, **attrs) -> torch.Tensor:
    (out,) = cuda.run("MaskedAttention", *_gpu(tensors), **attrs)
    return out.cpu()


def check_masked_attention(inputs, attrs=None, dtype=torch.float32) -> torch.Tensor:
    attrs = attention_attrs(inputs["query"].shape[-1]) if attrs is None else attrs
    t = _tensors(inputs, dtype)
    out = run_masked_attention(t, **attrs)
    ref = reference.masked_attention(*t.values(), **attrs)
    assert out.dtype == dtype == ref.dtype and out.shape == ref.shape
    # A query attending no key gives exactly 0, whatever its sink.
    assert not out[torch.from_numpy(~inputs["mask"].any(-1))].any()
    if not torch.isfinite(ref).all():  # NaN and Inf exactly where the reference has them
        rtol = NONFINITE_RTOL[str(dtype).removeprefix("torch.")]
        assert_nonfinite_close(out.numpy(), ref.numpy(), rtol, name=f"MaskedAttention ({dtype})")
        return out
    scale = max(1.0, ref.float().abs().max().item())
    err = (out.float() - ref.float()).abs().max().item()
    print(f"max abs error {err:.3g} (scale {scale:.3g}, {dtype})")
    assert err <= TOLERANCE[dtype] * scale, f"max abs error {err} (scale {scale}, {dtype})"
    return out


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,heads,kv_heads,queries,keys,dim,value_dim,kind,sinks", MASKED_ATTENTION_CASES)
def test_masked_attention_matches_reference(batch, heads, kv_heads, queries, keys, dim, value_dim, kind, sinks, dtype):
    rng = np.random.default_rng(700 + batch + heads + queries + keys + dim + value_dim)
    inputs = masked_attention_inputs(rng, batch, heads, kv_heads, queries, keys, dim, value_dim, kind, sinks)
    check_masked_attention(inputs, dtype=dtype)


# Beyond the CPU grid, the CUDA kernel's own layout: rows are (query, head of the key/value head's
# group) pairs, 32 per block, so GQA prefills span several row tiles with a tile's rows of several
# heads; keys in tiles of 32 (a span ending mid-tile), D in chunks of 128 (queries streamed past
# it), Dv in chunks of 128 (the keys gone over once per chunk); decoding steps (S = 1) over long
# caches and with every head of a group in one tile; a sliding window much narrower than T (spans
# start far from key 0); H = N = 1.
MASKED_ATTENTION_LAYOUT_CASES = [
    (2, 8, 2, 17, 50, 64, 64, "causal", True),  # GQA (H/N 4): 68 rows per (b, n), three tiles
    (2, 8, 2, 17, 50, 64, 64, "causal", False),  # the same without sinks (-inf)
    (1, 8, 2, 40, 300, 16, 24, "window", True),  # a KV cache of 260, a window of 76 keys
    (1, 2, 2, 5, 40, 130, 20, "causal", True),  # D over one chunk of 128: queries streamed
    (1, 4, 1, 6, 33, 257, 200, "left", False),  # three D chunks, two Dv chunks, MQA
    (1, 1, 1, 70, 70, 8, 129, "holes", True),  # Dv 129: a chunk of one column; empty rows
    (3, 8, 2, 1, 5000, 64, 64, "left", True),  # decode over a long cache: one tile of 4 heads
    (2, 32, 8, 1, 257, 128, 128, "causal", False),  # decode, head_dim 128
    (1, 1, 1, 1, 1, 1, 1, "full", False),
    (1, 1, 1, 33, 33, 4, 4, "right", True),  # 33 rows: a second tile of one row
    (2, 6, 3, 64, 64, 32, 32, "full", True),  # no mask: every span the whole T
]


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
@pytest.mark.parametrize("batch,heads,kv_heads,queries,keys,dim,value_dim,kind,sinks", MASKED_ATTENTION_LAYOUT_CASES)
def test_masked_attention_layouts(batch, heads, kv_heads, queries, keys, dim, value_dim, kind, sinks, dtype):
    rng = np.random.default_rng(800 + batch + heads + queries + keys + dim + value_dim)
    inputs = masked_attention_inputs(rng, batch, heads, kv_heads, queries, keys, dim, value_dim, kind, sinks)
    check_masked_attention(inputs, dtype=dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_masked_attention_gqa_causal_cache_sinks_and_dv(dtype):
    # GQA (H = 8 over N = 2: heads 0-3 read key/value head 0, 4-7 head 1), a causal mask over a KV
    # cache of 24 keys before the 9 new ones, left padding in row 1, sinks on some heads only (-inf
    # on the others), Dv != D, and a scale that is not D^-0.5.
    rng = np.random.default_rng(31)
    inputs = masked_attention_inputs(rng, 2, 8, 2, 9, 33, 16, 10, "causal")
    inputs["mask"][1, :, :5] = 0
    inputs["sinks"][[1, 4, 6]] = -np.inf
    check_masked_attention(inputs, {"scale": 0.3}, dtype)
    # Every head of a group reads its own key/value head: moving key/value head 1 changes heads 4-7 only.
    t = _tensors(inputs, torch.float32)
    before = run_masked_attention(t, scale=0.3)
    t["value"][:, 1] += 1.0
    after = run_masked_attention(t, scale=0.3)
    assert torch.equal(before[:, :, :4], after[:, :, :4]) and not torch.equal(before[:, :, 4:], after[:, :, 4:])


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_masked_attention_query_without_keys_is_zero(dtype):
    # Padded queries (right padding) and a mask row of zeros give exactly 0, whatever their sink
    # (large, NaN) and whatever their queries hold; a single attended key gives its value's share.
    rng = np.random.default_rng(32)
    inputs = masked_attention_inputs(rng, 2, 4, 2, 6, 10, 8, 5, "causal")
    inputs["mask"][0, 2] = 0
    inputs["mask"][1] = 0
    inputs["mask"][1, 3, 7] = 1  # one key only
    inputs["query"][0, :, 2] = np.nan
    inputs["sinks"][0] = 50.0
    inputs["sinks"][3] = -np.inf
    out = check_masked_attention(inputs, dtype=dtype)
    assert not out[0, 2].any() and not out[1, [0, 1, 2, 4, 5]].any()
    # Head 3 (no sink) of row 1's query 3 attends key 7 alone: weight 1, its value exactly.
    expected = torch.from_numpy(inputs["value"][1, 1, 7]).to(dtype)
    torch.testing.assert_close(out[1, 3, 3], expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_masked_attention_masked_keys_never_leak(dtype):
    # A sliding window of 30 keys over a KV cache: the cache's first 4 keys, masked for every query,
    # hold NaN and Inf in their keys and values, none of which may show; key 5, in the first three
    # queries' windows only, has a NaN value, which shows in those queries' outputs only.
    rng = np.random.default_rng(33)
    inputs = masked_attention_inputs(rng, 2, 8, 2, 40, 72, 16, 12, "window", window=30)
    inputs["mask"][:, :, :4] = 0
    inputs["key"][:, :, :4] = np.nan
    inputs["value"][:, :, :4] = np.inf
    inputs["value"][:, 0, 5, 3] = np.nan  # key 5: only the first queries' windows reach it
    live = inputs["mask"].any(1)  # [B, T]: attended by some query
    assert not live[:, :4].any()
    out = check_masked_attention(inputs, dtype=dtype)
    reach = torch.from_numpy(inputs["mask"][:, :, 5] != 0)  # [B, S]
    assert reach.any() and not reach.all()
    assert torch.isfinite(out[~reach]).all()
    assert torch.isnan(out[:, :, :4, 3][reach]).all() and torch.isfinite(out[:, :, 4:][reach]).all()


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_masked_attention_weights_of_zero_add_nothing(dtype):
    # An attended key whose weight underflows to exactly 0 (its logit 200 below the row's max, or a
    # sink 200 above every logit) adds nothing though its value is Inf or NaN.
    rng = np.random.default_rng(34)
    inputs = masked_attention_inputs(rng, 1, 2, 1, 4, 6, 4, 3, "full", sinks=False)
    inputs["query"][:] = 0.0
    inputs["query"][..., 0] = 1.0
    inputs["key"][:] = 0.0
    inputs["key"][0, 0, 2, 0] = 200.0
    inputs["key"][0, 0, 4, 0] = -200.0  # weight 0 beside key 2
    inputs["value"][0, 0, 4] = [np.inf, np.nan, -np.inf]
    inputs["sinks"][1] = 400.0  # head 1: every key's weight 0 (exp(-200)), its output 0
    out = check_masked_attention(inputs, {"scale": 1.0}, dtype)
    assert torch.isfinite(out).all()
    expected = torch.from_numpy(inputs["value"][0, 0, 2]).to(dtype).expand(4, 3)
    torch.testing.assert_close(out[0, :, 0], expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    assert not out[0, :, 1].any()


def test_masked_attention_nan_logit_and_sink_make_the_row_nan():
    # A NaN logit (a NaN in an attended key) or a NaN / +Inf sink: the reference's max is NaN or +Inf
    # and its query's whole output row NaN; other rows untouched; a row attending no key stays 0.
    rng = np.random.default_rng(35)
    inputs = masked_attention_inputs(rng, 1, 4, 2, 5, 8, 6, 4, "causal")
    inputs["key"][0, 0, 6, 1] = np.nan  # key 6: queries 3 and 4 of heads 0, 1
    inputs["sinks"][2] = np.nan
    inputs["sinks"][3] = np.inf
    inputs["mask"][0, 0] = 0
    t = _tensors(inputs, torch.float32)
    out = run_masked_attention(t, **attention_attrs(6))
    ref = reference.masked_attention(*t.values(), **attention_attrs(6))
    assert_nonfinite_close(out.numpy(), ref.numpy(), NONFINITE_RTOL["float32"], name="MaskedAttention")
    assert torch.isnan(out[0, 3:, :2]).all() and torch.isfinite(out[0, :3, :2]).all()
    assert torch.isnan(out[0, 1:, 2:]).all() and not out[0, 0].any()


def test_masked_attention_is_bitwise_reproducible():
    # No atomics: repeated runs give identical bits.
    rng = np.random.default_rng(36)
    inputs = masked_attention_inputs(rng, 2, 8, 2, 50, 120, 64, 64, "window")
    gpu = _gpu(_tensors(inputs, torch.float32))
    (first,) = cuda.run("MaskedAttention", *gpu, **attention_attrs(64))
    for _ in range(3):
        (again,) = cuda.run("MaskedAttention", *gpu, **attention_attrs(64))
        assert torch.equal(first, again)


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float16"])
def test_masked_attention_agrees_with_the_cpu_kernel(dtype):
    # Both compute the float32 function of the widened inputs in different orders: they agree to the
    # tolerance. Needs onnxruntime (CPU).
    run_op = _cpu_run_op()
    from bucketrt.ops.catalogue import MASKED_ATTENTION

    for index, case in enumerate(MASKED_ATTENTION_CASES):
        t = _tensors(masked_attention_inputs(np.random.default_rng(720 + index), *case), dtype)
        attrs = attention_attrs(case[5])
        (cpu,) = run_op(MASKED_ATTENTION, _numpy(t), attrs)
        gpu = run_masked_attention(t, **attrs).float().numpy()
        scale = max(1.0, float(np.abs(cpu.astype(np.float32)).max()))
        assert float(np.abs(gpu - cpu.astype(np.float32)).max()) <= TOLERANCE[dtype] * scale, (index, dtype)


def test_masked_attention_bad_heads_have_the_references_words():
    # H not a multiple of N: the CPU kernel's check, in the reference's words.
    rng = np.random.default_rng(37)
    t = _tensors(masked_attention_inputs(rng, 1, 3, 2, 2, 4, 4, 4, "causal"), torch.float32)
    with pytest.raises(ValueError) as ref:
        reference.masked_attention(*t.values(), **attention_attrs(4))
    with pytest.raises(cuda.CudaOpError) as info:
        run_masked_attention(t, **attention_attrs(4))
    assert str(ref.value) in str(info.value), (str(ref.value), str(info.value))


# -- CUDA graphs -------------------------------------------------------------------------------


def _graph_cases():
    rng = np.random.default_rng(23)
    attention = _tensors(chunk_attention_inputs(rng, 2, 2, 64, 16, 2, 6), torch.float16)
    ffn = _tensors(expert_ffn_inputs(np.random.default_rng(24), 2, 40, 24, 96, 8, 6, 2.0), torch.float16)
    topk = _tensors(topk_experts_inputs(np.random.default_rng(25), 70, 4, 24, 40, 8, "glu", none=0.1), torch.float16)
    masked = _tensors(
        masked_attention_inputs(np.random.default_rng(26), 2, 8, 2, 20, 50, 32, 24, "left"), torch.float16
    )
    return {
        "SortedChunkAttention": (attention, dict(chunk_length=16, mask_self=1)),
        "ExpertFFN": (ffn, dict(activation="silu")),
        "TopKExperts": (topk, topk_attrs("glu", "silu")),
        "MaskedAttention": (masked, attention_attrs(32)),
    }


@pytest.mark.parametrize("op", ["SortedChunkAttention", "ExpertFFN", "TopKExperts", "MaskedAttention"])
def test_launch_records_into_a_cuda_graph(op):
    # Launch only enqueues (no allocation, no synchronisation, no host read of device data), so a
    # call captures into a CUDA graph, whose replay gives the eager result bit for bit.
    tensors, attrs = _graph_cases()[op]
    gpu = _gpu(tensors)
    (eager,) = cuda.run(op, *gpu, **attrs)
    workspace_bytes, _ = cuda.plan(op, *gpu, **attrs)
    workspace = torch.empty(max(workspace_bytes, 1), dtype=torch.uint8, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch recommends before capture
        cuda.run(op, *gpu, synchronous=False, workspace=workspace, **attrs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        (captured,) = cuda.run(op, *gpu, synchronous=False, workspace=workspace, **attrs)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)


# -- non-finite data (the CPU kernels' cases, tests/test_nonfinite.py) -------------------------


def _nonfinite_params():
    from bucketrt.ops import codegen
    from bucketrt.ops.catalogue import BY_NAME

    table = codegen.cuda_table((Path(__file__).resolve().parents[1] / codegen.CUDA_TABLE).read_text())
    for case in (c for c in NONFINITE_CASES if c[1] in {e.op for e in table}):  # the others have no CUDA kernel
        for dtype in BY_NAME[case[1]].float_types:
            yield pytest.param(case, dtype, id=f"{case[0]}-{dtype}")


@pytest.mark.parametrize("case,dtype", list(_nonfinite_params()))
def test_nonfinite_matches_reference(case, dtype):
    # NaN and +-Inf exactly where the reference has them (masked rows and keys of weight 0 take no
    # part; clamps propagate NaN, which fminf/fmaxf would not), finite values within the CPU tests'
    # tolerance; the case's own checks hold on the kernel's outputs too.
    case_id, op, _, attrs, checks = case
    inputs = nonfinite_inputs(case, dtype)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.values()]
    ref = reference.REFERENCES[op](*tensors, **attrs)
    ref = [t.numpy() for t in (ref if isinstance(ref, tuple) else (ref,))]
    ours = [t.cpu().numpy() for t in cuda.run(op, *[t.cuda() for t in tensors], **attrs)]
    checks(inputs, attrs, ref)
    checks(inputs, attrs, ours)
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert_nonfinite_close(a, b, NONFINITE_RTOL[dtype], name=f"{case_id} ({dtype}) output {i}")


# -- data checks without a wait (plugins/cuda/ops.h: EnqueueReport, ReportError) ----------------


def _report_after_run(op, tensors, **attrs) -> str:
    """Runs `op` without waiting, enqueues its data report into pinned memory, then (only then)
    synchronises and reads it on the host: what the ORT CUDA EP does across two runs."""
    gpu = [t.cuda() for t in tensors]
    workspace_bytes, _ = cuda.plan(op, *gpu, **attrs)
    workspace = torch.empty(max(workspace_bytes, 1), dtype=torch.uint8, device="cuda")
    cuda.run(op, *gpu, synchronous=False, workspace=workspace, **attrs)
    report = torch.zeros(max(cuda.report_bytes(op, *gpu, **attrs), 1), dtype=torch.uint8, pin_memory=True)
    cuda.enqueue_report(op, *gpu, workspace=workspace, report=report, **attrs)
    torch.cuda.current_stream().synchronize()
    return cuda.report_error(op, *gpu, report=report, **attrs)


def test_asynchronous_data_reports_give_the_synchronous_errors():
    rng = np.random.default_rng(41)
    lsh = lsh_inputs(rng, 2, 5, 6, 8, 3, 8, masked=0.0)
    good = _tensors(lsh, torch.float32)
    lsh["key_hash"][1, 4, 2] = 8
    bad = _tensors(lsh, torch.float32)
    for deterministic in (0, 1):
        with pytest.raises(cuda.CudaOpError) as info:
            run_lsh(bad, 8, deterministic)
        assert _report_after_run("LSHCumulation", bad.values(), hashtable_capacity=8, deterministic=deterministic) == (
            str(info.value)
        )
        assert (
            _report_after_run("LSHCumulation", good.values(), hashtable_capacity=8, deterministic=deterministic) == ""
        )
    ids = _tensors(
        {
            "bucket": np.array([[-3, 1], [2, 0]], np.int32),
            "weight": np.ones((2, 2), np.float32),
            "vector": np.ones((2, 2, 3), np.float32),
        },
        torch.float32,
    )
    with pytest.raises(cuda.CudaOpError) as info:
        run_bucket_sum(ids, 4)
    assert _report_after_run("BucketSum", ids.values(), num_buckets=4) == str(info.value)
    attention = chunk_attention_inputs(rng, 2, 2, 16, 4, 2, 4)
    attention["buckets"][1, 0, 1, 5] = -1
    assert _report_after_run("SortedChunkAttention", _tensors(attention, torch.float32).values(), chunk_length=4) == (
        "SortedChunkAttention: input 'buckets' must be >= 0"
    )
    sizes = _tensors(_argmax_bad([5, 5]), torch.float32)
    with pytest.raises(cuda.CudaOpError) as info:
        cuda.run("ArgmaxHash", *_gpu(sizes), num_hash=2)
    assert _report_after_run("ArgmaxHash", sizes.values(), num_hash=2) == str(info.value)
    good, cases = _topk_bad_index()
    for _, index in cases:
        bad = _tensors({**good, "expert_index": index}, torch.float32)
        with pytest.raises(cuda.CudaOpError) as info:
            run_topk(bad, topk_attrs())
        assert _report_after_run("TopKExperts", bad.values(), **topk_attrs()) == str(info.value)
    assert _report_after_run("TopKExperts", _tensors(good, torch.float32).values(), **topk_attrs()) == ""


# -- the ORT CUDA execution provider (onnxruntime-gpu, where installed) ----------------------------


def _ort_cuda():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu not installed)")
    return ort


def _lsh_session(ort, config=None, provider_options=None):
    import bucketrt
    from bucketrt.ops.catalogue import LSH_CUMULATION
    from bucketrt.ops.graph import single_op_model

    options = ort.SessionOptions()
    for key, value in (config or {}).items():  # before the library is registered, which reads them
        options.add_session_config_entry(key, value)
    options.register_custom_ops_library(bucketrt.library_path())
    model = single_op_model(LSH_CUMULATION, {"hashtable_capacity": 8, "deterministic": 1})
    providers = [("CUDAExecutionProvider", provider_options or {}), "CPUExecutionProvider"]
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=providers)
    return session


def _lsh_feeds(bad=False, seed=42):
    inputs = lsh_inputs(np.random.default_rng(seed), 2, 5, 6, 8, 3, 8, masked=0.0)
    if bad:
        inputs["key_hash"][1, 4, 2] = 8
    return inputs


def test_ort_cuda_data_error_fails_the_next_run_without_a_wait():
    ort = _ort_cuda()
    session = _lsh_session(ort)
    good = _lsh_feeds()
    (first,) = session.run(None, good)
    session.run(None, _lsh_feeds(bad=True))  # enqueued, not waited for: no error yet
    with pytest.raises(Exception, match=r"input 'key_hash' has code 8 at \[1, 4, 2\].*earlier run of this node"):
        session.run(None, good)
    (again,) = session.run(None, good)  # reported once; the node runs on
    np.testing.assert_array_equal(first, again)


def test_ort_cuda_sync_checks_fail_the_same_run():
    ort = _ort_cuda()
    session = _lsh_session(ort, config={"bucketrt.cuda_sync_checks": "1"})
    with pytest.raises(Exception, match=r"input 'key_hash' has code 8 at \[1, 4, 2\], outside") as info:
        session.run(None, _lsh_feeds(bad=True))
    assert "earlier run" not in str(info.value)
    session.run(None, _lsh_feeds())


def test_ort_cuda_graph_capture_replays_the_eager_result():
    # enable_cuda_graph: ORT captures a run after its warm-up runs and replays it; the kernel must
    # neither allocate nor wait while captured (its workspace is kept from the warm-up).
    ort = _ort_cuda()
    try:
        session = _lsh_session(ort, provider_options={"enable_cuda_graph": "1"})
    except Exception as e:  # an ORT build or device without CUDA-graph support
        pytest.skip(f"CUDA-graph session refused: {e}")
    feeds = _lsh_feeds()
    (eager,) = _lsh_session(ort).run(None, feeds)
    binding = session.io_binding()
    inputs = {name: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for name, a in feeds.items()}
    for name, value in inputs.items():
        binding.bind_ortvalue_input(name, value)
    out = ort.OrtValue.ortvalue_from_shape_and_type(list(eager.shape), eager.dtype, "cuda", 0)
    binding.bind_ortvalue_output("cumulation", out)
    for _ in range(4):  # warm-up, capture, replays
        session.run_with_iobinding(binding)
        np.testing.assert_array_equal(out.numpy(), eager)
    # New data in the same device buffers: the replay reads it.
    other = _lsh_feeds(seed=43)
    for name, value in inputs.items():
        value.update_inplace(other[name])
    session.run_with_iobinding(binding)
    (expected,) = _lsh_session(ort).run(None, other)
    np.testing.assert_array_equal(out.numpy(), expected)
