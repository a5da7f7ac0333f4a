"""The native CPU kernels, through ONNX Runtime, against the PyTorch references (reference.py).

The shape grids and input makers live in op_inputs.py (the audits in kernel_cases.py), shared with the
CUDA kernel tests.
"""

from __future__ import annotations

import ctypes

import numpy as np
import onnx
import pytest
import torch
from child_process import run_op_in_child
from kernel_cases import gaussian_near_zero
from op_inputs import (
    BUCKET_SUM_CASES,
    GAUSSIAN_CASES,
    HADAMARD_ANY_DIAGONAL_CASES,
    HADAMARD_CASES,
    LSH_CASES,
    bucket_sum_inputs,
    lsh_inputs,
    lsh_seed,
    sign_inputs,
    signs,
)

import bucketrt
from bucketrt.library import run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import LSH_CUMULATION, OPS, SIGN_HASH, hadamard_parts
from bucketrt.ops.graph import IR_VERSION, OPSET, single_op_model


def _torch(arrays: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in arrays.values()]


# -- LSHCumulation ---------------------------------------------------------------------------


def check_lsh(inputs: dict[str, np.ndarray], capacity: int, **run_kwargs) -> np.ndarray:
    (out,) = run_op(LSH_CUMULATION, inputs, {"hashtable_capacity": capacity}, **run_kwargs)
    ref = reference.lsh_cumulation(*_torch(inputs), hashtable_capacity=capacity).numpy()
    assert out.dtype == np.float32 and out.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(out - ref).max())
    assert err <= 1e-5 * scale, f"max abs error {err} (scale {scale})"
    # Masked queries are exactly zero.
    assert not out[inputs["query_mask"] == 0].any()
    return out


@pytest.mark.parametrize("batch,num_query,num_key,dim,num_hash,capacity", LSH_CASES)
def test_lsh_cumulation_matches_reference(batch, num_query, num_key, dim, num_hash, capacity):
    rng = np.random.default_rng(lsh_seed(batch, num_query, num_key, dim, num_hash, capacity))
    check_lsh(lsh_inputs(rng, batch, num_query, num_key, dim, num_hash, capacity), capacity)


def test_lsh_cumulation_unmasked_and_fully_masked_rows():
    rng = np.random.default_rng(7)
    inputs = lsh_inputs(rng, 3, 33, 7, 32, 5, 16, masked=0.0)
    check_lsh(inputs, 16)
    # Batch row 1 has no live key (all its outputs are 0), row 2 no live query.
    inputs["key_mask"][1] = 0
    inputs["key_hash"][1] = 99
    inputs["query_mask"][2] = 0
    out = check_lsh(inputs, 16)
    assert not out[1:].any()
    assert np.abs(out[0]).max() > 0.1


def test_lsh_cumulation_large_capacity_small_codes():
    # Tables only need to reach the largest live code; the result must not depend on that.
    rng = np.random.default_rng(8)
    check_lsh(lsh_inputs(rng, 3, 33, 100, 64, 5, 1 << 20, max_code=100), 1 << 20)


def test_lsh_cumulation_codes_at_the_capacity_edge():
    rng = np.random.default_rng(9)
    inputs = lsh_inputs(rng, 1, 7, 33, 16, 5, 8, masked=0.0)
    inputs["key_hash"][:] = 7
    inputs["query_hash"][:, ::2] = 7
    out = check_lsh(inputs, 8)
    # Queries coded 7 everywhere see every key under every hash: the sum of all values.
    np.testing.assert_allclose(out[0, 0], inputs["value"][0].sum(0), rtol=1e-5, atol=1e-5)


# -- SignHash --------------------------------------------------------------------------------


def run_sign(inputs, attrs, **run_kwargs):
    (out,) = run_op(SIGN_HASH, inputs, attrs, **run_kwargs)
    ref = reference.sign_hash(*_torch(inputs), **attrs).numpy()
    assert out.dtype == np.int32 and out.shape == ref.shape
    assert not out[inputs["mask"] == 0].any()
    assert out.min() >= 0 and out.max() < 2 ** attrs["hash_code_len"]
    return out, ref


@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", HADAMARD_CASES)
def test_sign_hash_hadamard_matches_reference_exactly(batch, length, dim, num_hash, code_len, groups):
    rng = np.random.default_rng(batch + length + dim + num_hash + code_len + groups)
    parts = hadamard_parts(dim, num_hash, code_len)
    inputs = sign_inputs(rng, batch, length, dim, groups, (3 * parts, dim))
    inputs["projection"] = signs(inputs["projection"])  # ±1 diagonals
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "hadamard"}
    out, ref = run_sign(inputs, attrs)
    # Same butterflies in the same order: bit-identical floats, so identical codes.
    np.testing.assert_array_equal(out, ref)
    if batch * length > 8 and code_len > 1:
        assert len(np.unique(out[inputs["mask"] != 0])) > 2  # codes carry information


@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", HADAMARD_ANY_DIAGONAL_CASES)
def test_sign_hash_hadamard_any_diagonal_exactly(batch, length, dim, num_hash, code_len, groups):
    # Real-valued diagonals (not only ±1), small dims and rows that are no multiple of the kernel's
    # blocks: the same multiplies and butterflies in the same order still give identical codes.
    rng = np.random.default_rng(300 + batch + length + dim + num_hash + code_len + groups)
    inputs = sign_inputs(rng, batch, length, dim, groups, (3 * hadamard_parts(dim, num_hash, code_len), dim))
    inputs["mask"][:, 8:16] = 0  # whole blocks of masked rows
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "hadamard"}
    out, ref = run_sign(inputs, attrs)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("op", ["hadamard", "gaussian", "lsh"])
def test_simd_variants_agree(op):
    # BUCKETRT_SIMD=generic forces the baseline code where the CPU has AVX2: both variants do the
    # same float operations in the same order, lane by lane, so their outputs are identical. The
    # library reads the switch once per process: the generic run is a child process's.
    rng = np.random.default_rng(17)
    if op == "lsh":
        spec, attrs = LSH_CUMULATION, {"hashtable_capacity": 64}
        inputs = lsh_inputs(rng, 2, 203, 150, 40, 16, 64)  # D=40: slabs of 16, 16 and 8
    else:
        spec, attrs = SIGN_HASH, {"num_hash": 64, "hash_code_len": 9, "transform": op}
        shape = (3 * hadamard_parts(64, 64, 9), 64) if op == "hadamard" else (64, 64 * 9)
        inputs = sign_inputs(rng, 2, 203, 64, 2, shape)
    (default,) = run_op(spec, inputs, attrs)
    (generic,) = run_op_in_child(spec.name, inputs, attrs, env={"BUCKETRT_SIMD": "generic"})
    np.testing.assert_array_equal(default, generic)


@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", GAUSSIAN_CASES)
def test_sign_hash_gaussian_integer_data_exact(batch, length, dim, num_hash, code_len, groups):
    # Small integers make every dot product exact in float32 whatever the summation order, so the
    # codes must agree bit for bit (zeros included: y == 0 gives bit 0 on both sides).
    rng = np.random.default_rng(100 + batch + length + dim + num_hash + code_len + groups)
    inputs = sign_inputs(rng, batch, length, dim, groups, (dim, num_hash * code_len), integers=True)
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "gaussian"}
    out, ref = run_sign(inputs, attrs)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("batch,length,dim,num_hash,code_len,groups", GAUSSIAN_CASES)
def test_sign_hash_gaussian_float_data(batch, length, dim, num_hash, code_len, groups):
    # Real-valued data: the matmul's summation order differs from ours, so a code may differ only
    # where some projection of that hash is within rounding of zero.
    rng = np.random.default_rng(200 + batch + length + dim + num_hash + code_len + groups)
    inputs = sign_inputs(rng, batch, length, dim, groups, (dim, num_hash * code_len))
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "gaussian"}
    out, ref = run_sign(inputs, attrs)
    near_zero = gaussian_near_zero(inputs, num_hash, code_len)
    assert ((out == ref) | near_zero).all()
    assert (out == ref).mean() > 0.99


# -- float16 (T) ------------------------------------------------------------------------------


def test_lsh_cumulation_float16_and_deterministic():
    # float16 values: computed in float32 on the widened values, the output rounded once.
    rng = np.random.default_rng(21)
    inputs = lsh_inputs(rng, 3, 33, 100, 20, 5, 16)
    inputs["value"] = inputs["value"].astype(np.float16)
    (out,) = run_op(LSH_CUMULATION, inputs, {"hashtable_capacity": 16})
    ref = reference.lsh_cumulation(*_torch(inputs), hashtable_capacity=16).numpy()
    assert out.dtype == np.float16 and ref.dtype == np.float16
    scale = max(1.0, float(np.abs(ref.astype(np.float32)).max()))
    assert float(np.abs(out.astype(np.float32) - ref.astype(np.float32)).max()) <= 2e-3 * scale
    # The CPU kernel is deterministic whatever the attribute says.
    (det,) = run_op(LSH_CUMULATION, inputs, {"hashtable_capacity": 16, "deterministic": 1})
    np.testing.assert_array_equal(out, det)


@pytest.mark.parametrize("transform", ["hadamard", "gaussian"])
def test_sign_hash_float16_codes_are_the_widened_inputs_codes(transform):
    rng = np.random.default_rng(22)
    num_hash, code_len, dim = 6, 5, 32
    shape = (
        (3 * hadamard_parts(dim, num_hash, code_len), dim) if transform == "hadamard" else (dim, num_hash * code_len)
    )
    inputs = sign_inputs(rng, 3, 33, dim, 3, shape, integers=transform == "gaussian")
    half = {
        **inputs,
        "vector": inputs["vector"].astype(np.float16),
        "projection": inputs["projection"].astype(np.float16),
    }
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": transform}
    out, ref = run_sign(half, attrs)
    np.testing.assert_array_equal(out, ref)
    widened = {**half, "vector": half["vector"].astype(np.float32), "projection": half["projection"].astype(np.float32)}
    (out32,) = run_op(SIGN_HASH, widened, attrs)
    np.testing.assert_array_equal(out, out32)


@pytest.mark.parametrize(
    "entries",
    [
        ("bucketrt.deterministic",),
        ("bucketrt.cuda_sync_checks",),
        ("bucketrt.deterministic", "bucketrt.cuda_sync_checks"),
    ],
)
def test_session_config_entries_are_accepted(entries):
    # "bucketrt.deterministic" = "1" forces the attribute on for the session's nodes;
    # "bucketrt.cuda_sync_checks" = "1" concerns the CUDA kernels only (docs/cuda.md). Every
    # combination registers and leaves the CPU kernels' results and data errors as they are.
    import onnxruntime as ort

    from bucketrt.ops.graph import single_op_model

    rng = np.random.default_rng(23)
    inputs = lsh_inputs(rng, 2, 7, 9, 8, 3, 8)
    options = ort.SessionOptions()
    for entry in entries:
        options.add_session_config_entry(entry, "1")
    options.register_custom_ops_library(bucketrt.library_path())
    model = single_op_model(LSH_CUMULATION, {"hashtable_capacity": 8})
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, inputs)
    (plain,) = run_op(LSH_CUMULATION, inputs, {"hashtable_capacity": 8})
    np.testing.assert_array_equal(out, plain)
    inputs["key_mask"][1, 4] = 1  # a live key: its code is checked
    inputs["key_hash"][1, 4, 2] = 8
    with pytest.raises(Exception, match=r"input 'key_hash' has code 8 at \[1, 4, 2\]"):
        session.run(None, inputs)


# -- threads, registration, model building ---------------------------------------------------


def test_threads_give_identical_results():
    rng = np.random.default_rng(11)
    inputs = lsh_inputs(rng, 3, 500, 400, 64, 8, 64)
    one = check_lsh(inputs, 64, intra_op_num_threads=1)
    two = check_lsh(inputs, 64, intra_op_num_threads=2)
    np.testing.assert_array_equal(one, two)

    for transform, proj_shape in (("hadamard", (3 * hadamard_parts(64, 8, 8), 64)), ("gaussian", (64, 64))):
        inputs = sign_inputs(rng, 3, 300, 64, 3, proj_shape)
        attrs = {"num_hash": 8, "hash_code_len": 8, "transform": transform}
        one, _ = run_sign(inputs, attrs, intra_op_num_threads=1)
        two, _ = run_sign(inputs, attrs, intra_op_num_threads=2)
        np.testing.assert_array_equal(one, two)


def test_backends_cover_every_op():
    lib = ctypes.CDLL(bucketrt.library_path())
    lib.BucketrtBackends.restype = ctypes.c_char_p
    backends = dict(entry.split("=", 1) for entry in lib.BucketrtBackends().decode().split(";"))
    for op in OPS:
        assert "ort-cpu" in backends.get(op.name, "").split(","), f"{op.name} has no CPU kernel"


def test_single_op_model_follows_the_spec():
    model = single_op_model(SIGN_HASH, {"num_hash": 4, "hash_code_len": 8})
    assert model.ir_version == IR_VERSION
    assert {(o.domain, o.version) for o in model.opset_import} == {("", OPSET), (SIGN_HASH.domain, SIGN_HASH.version)}
    node = model.graph.node[0]
    assert (node.op_type, node.domain) == (SIGN_HASH.name, SIGN_HASH.domain)
    # The routing attributes TensorRT's parser needs, which ONNX Runtime's kernels ignore.
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"num_hash": 4, "hash_code_len": 8, "plugin_version": b"1", "plugin_namespace": b"bucketrt"}
    assert [i.name for i in model.graph.input] == [t.name for t in SIGN_HASH.inputs]
    (output,) = model.graph.output
    dims = output.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["B", "N", 4]


def test_sessions_share_the_library():
    # Registering the library into several sessions (one domain each) keeps all of them working.
    rng = np.random.default_rng(12)
    inputs = lsh_inputs(rng, 1, 7, 7, 16, 2, 4)
    first = [check_lsh(inputs, 4) for _ in range(3)]
    for out in first[1:]:
        np.testing.assert_array_equal(out, first[0])


# -- BucketSum (LSG's lsh merge) ---------------------------------------------------------------


@pytest.mark.parametrize("groups, rows, dim, buckets", BUCKET_SUM_CASES)
def test_bucket_sum_matches_reference(groups, rows, dim, buckets):
    from bucketrt.ops.catalogue import BUCKET_SUM

    rng = np.random.default_rng(groups * 1000 + rows)
    inputs = bucket_sum_inputs(rng, groups, rows, dim, buckets)
    got = run_op(BUCKET_SUM, inputs, {"num_buckets": buckets})
    ref = reference.bucket_sum(*_torch(inputs), num_buckets=buckets)
    for out, expected in zip(got, ref):
        assert out.shape == tuple(expected.shape)
        # Rows are added in the reference's order: identical sums.
        np.testing.assert_array_equal(out, expected.numpy())


def test_bucket_sum_float16_is_the_float32_sums_rounded_once():
    from bucketrt.ops.catalogue import BUCKET_SUM

    rng = np.random.default_rng(24)
    inputs = bucket_sum_inputs(rng, 6, 50, 20, 5)
    half = {**inputs, "weight": inputs["weight"].astype(np.float16), "vector": inputs["vector"].astype(np.float16)}
    got = run_op(BUCKET_SUM, half, {"num_buckets": 5})
    widened = run_op(
        BUCKET_SUM,
        {**half, "weight": half["weight"].astype(np.float32), "vector": half["vector"].astype(np.float32)},
        {"num_buckets": 5},
    )
    ref = reference.bucket_sum(*_torch(half), num_buckets=5)
    for out, out32, expected in zip(got, widened, ref):
        assert out.dtype == np.float16 and expected.dtype == torch.float16
        np.testing.assert_array_equal(out, out32.astype(np.float16))
        np.testing.assert_array_equal(out, expected.numpy())
