"""The native CPU kernels, through ONNX Runtime, against the PyTorch references (reference.py).

Shapes cover sizes that are no multiple of the kernels' slabs (N of 1, 7, 33, 100; D of 7, 20, 33
beside 16, 32, 64, 96), Nq != Nk, several hash counts and code lengths, masks with zeros (and
out-of-range codes in masked rows, which must be ignored), batch 1 and 3, projection groups 1 and 3.
Each value appears in a few combinations rather than a full Cartesian product, to keep the file fast.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

import bucketrt
from bucketrt.ops import reference
from bucketrt.ops.graph import IR_VERSION, OPSET, run_op, single_op_model
from bucketrt.ops.spec import LSH_CUMULATION, OPS, SIGN_HASH, hadamard_parts


def _torch(arrays: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in arrays.values()]


def _mask(rng, shape, masked: float) -> np.ndarray:
    """int32 mask with about `masked` zeros; live entries are 1 or 3 (any non-zero counts)."""
    live = rng.random(shape) >= masked
    return np.where(live, rng.choice(np.array([1, 3], dtype=np.int32), size=shape), 0).astype(np.int32)


# -- LSHCumulation ---------------------------------------------------------------------------


def lsh_inputs(rng, batch, num_query, num_key, dim, num_hash, capacity, masked=0.25, max_code=None):
    hi = capacity if max_code is None else max_code + 1
    query_mask = _mask(rng, (batch, num_query), masked)
    key_mask = _mask(rng, (batch, num_key), masked)
    query_hash = rng.integers(0, hi, (batch, num_query, num_hash), dtype=np.int32)
    key_hash = rng.integers(0, hi, (batch, num_key, num_hash), dtype=np.int32)
    # Masked rows may carry any code: out-of-range ones prove the kernel ignores them.
    query_hash[query_mask == 0] = -7
    key_hash[key_mask == 0] = capacity + 5
    value = rng.standard_normal((batch, num_key, dim)).astype(np.float32)
    return {"query_mask": query_mask, "query_hash": query_hash, "key_mask": key_mask, "key_hash": key_hash, "value": value}


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


@pytest.mark.parametrize(
    "batch,num_query,num_key,dim,num_hash,capacity",
    [
        (1, 1, 1, 16, 1, 1),
        (3, 7, 33, 32, 5, 8),
        (1, 100, 7, 64, 32, 64),
        (3, 33, 100, 96, 64, 512),  # D=96 at capacity 512: several passes over hash groups
        (3, 100, 33, 16, 64, 16),
        (3, 7, 1, 7, 1, 4),  # D below one slab, not a multiple of 4
        (1, 1, 100, 33, 32, 32),  # a one-column tail slab
        (3, 100, 100, 20, 5, 256),  # a four-column tail slab
        (1, 33, 7, 96, 1, 2),
        (1, 7, 33, 44, 5, 8),  # slabs of 16, 16 and 12 columns
        (3, 33, 7, 24, 32, 128),  # slabs of 16 and 8 columns
    ],
)
def test_lsh_cumulation_matches_reference(batch, num_query, num_key, dim, num_hash, capacity):
    rng = np.random.default_rng(1000 * batch + 10 * num_query + num_key + dim + num_hash)
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


def sign_inputs(rng, batch, length, dim, groups, proj_shape, integers=False, masked=0.25):
    mask = _mask(rng, (batch, length), masked)
    if integers:
        vector = rng.integers(-3, 4, (batch, length, dim)).astype(np.float32)
        projection = rng.integers(-2, 3, (groups, *proj_shape)).astype(np.float32)
    else:
        vector = rng.standard_normal((batch, length, dim)).astype(np.float32)
        projection = rng.standard_normal((groups, *proj_shape)).astype(np.float32)
    return {"mask": mask, "vector": vector, "projection": projection}


def run_sign(inputs, attrs, **run_kwargs):
    (out,) = run_op(SIGN_HASH, inputs, attrs, **run_kwargs)
    ref = reference.sign_hash(*_torch(inputs), **attrs).numpy()
    assert out.dtype == np.int32 and out.shape == ref.shape
    assert not out[inputs["mask"] == 0].any()
    assert out.min() >= 0 and out.max() < 2 ** attrs["hash_code_len"]
    return out, ref


@pytest.mark.parametrize(
    "batch,length,dim,num_hash,code_len,groups",
    [
        (1, 1, 16, 1, 1, 1),
        (3, 7, 16, 5, 4, 3),
        (3, 33, 32, 32, 9, 1),  # 3 codes per part: 11 parts
        (1, 100, 64, 64, 4, 1),
        (3, 100, 64, 5, 9, 3),
        (3, 7, 16, 32, 9, 3),  # one code per part: 32 parts
        (1, 33, 32, 3, 30, 1),  # 30-bit codes
        (3, 1, 128, 1, 1, 1),
    ],
)
def test_sign_hash_hadamard_matches_reference_exactly(batch, length, dim, num_hash, code_len, groups):
    rng = np.random.default_rng(batch + length + dim + num_hash + code_len + groups)
    parts = hadamard_parts(dim, num_hash, code_len)
    inputs = sign_inputs(rng, batch, length, dim, groups, (3 * parts, dim))
    inputs["projection"] = np.sign(inputs["projection"]) + (inputs["projection"] == 0)  # ±1 diagonals
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": "hadamard"}
    out, ref = run_sign(inputs, attrs)
    # Same butterflies in the same order: bit-identical floats, so identical codes.
    np.testing.assert_array_equal(out, ref)
    if batch * length > 8 and code_len > 1:
        assert len(np.unique(out[inputs["mask"] != 0])) > 2  # codes carry information


@pytest.mark.parametrize(
    "batch,length,dim,num_hash,code_len,groups",
    [
        (2, 9, 1, 3, 1, 1),  # D below every SIMD width: no butterflies at all
        (2, 9, 2, 4, 2, 2),
        (1, 20, 4, 6, 3, 1),
        (3, 17, 8, 9, 4, 3),
        (1, 70, 256, 40, 9, 1),
    ],
)
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
def test_simd_variants_agree(monkeypatch, op):
    # BUCKETRT_SIMD=generic forces the baseline code where the CPU has AVX2: both variants do the
    # same float operations in the same order, lane by lane, so their outputs are identical.
    rng = np.random.default_rng(17)
    if op == "lsh":
        spec, attrs = LSH_CUMULATION, {"hashtable_capacity": 64}
        inputs = lsh_inputs(rng, 2, 203, 150, 40, 16, 64)  # D=40: slabs of 16, 16 and 8
    else:
        spec, attrs = SIGN_HASH, {"num_hash": 64, "hash_code_len": 9, "transform": op}
        shape = (3 * hadamard_parts(64, 64, 9), 64) if op == "hadamard" else (64, 64 * 9)
        inputs = sign_inputs(rng, 2, 203, 64, 2, shape)
    (default,) = run_op(spec, inputs, attrs)
    monkeypatch.setenv("BUCKETRT_SIMD", "generic")
    (generic,) = run_op(spec, inputs, attrs)
    np.testing.assert_array_equal(default, generic)


GAUSSIAN_CASES = [
    (1, 1, 16, 1, 1, 1),
    (3, 7, 96, 5, 4, 3),
    (3, 33, 32, 32, 9, 1),
    (1, 100, 64, 64, 4, 1),
    (3, 100, 20, 5, 9, 3),
    (3, 33, 7, 3, 30, 3),
]


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
    x = inputs["vector"].astype(np.float64).reshape(batch // groups, groups, length, dim)
    y = (x @ inputs["projection"].astype(np.float64)[None]).reshape(batch, length, num_hash, code_len)
    near_zero = (np.abs(y) < 1e-4 * np.sqrt(dim)).any(-1)
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
    shape = (3 * hadamard_parts(dim, num_hash, code_len), dim) if transform == "hadamard" else (dim, num_hash * code_len)
    inputs = sign_inputs(rng, 3, 33, dim, 3, shape, integers=transform == "gaussian")
    half = {**inputs, "vector": inputs["vector"].astype(np.float16), "projection": inputs["projection"].astype(np.float16)}
    attrs = {"num_hash": num_hash, "hash_code_len": code_len, "transform": transform}
    out, ref = run_sign(half, attrs)
    np.testing.assert_array_equal(out, ref)
    widened = {**half, "vector": half["vector"].astype(np.float32), "projection": half["projection"].astype(np.float32)}
    (out32,) = run_op(SIGN_HASH, widened, attrs)
    np.testing.assert_array_equal(out, out32)


def test_deterministic_session_config_is_accepted():
    # "bucketrt.deterministic" = "1" forces the attribute on for the session's nodes.
    import onnxruntime as ort

    from bucketrt.ops.graph import single_op_model

    rng = np.random.default_rng(23)
    inputs = lsh_inputs(rng, 2, 7, 9, 8, 3, 8)
    options = ort.SessionOptions()
    options.add_session_config_entry("bucketrt.deterministic", "1")
    options.register_custom_ops_library(bucketrt.library_path())
    model = single_op_model(LSH_CUMULATION, {"hashtable_capacity": 8})
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, inputs)
    (plain,) = run_op(LSH_CUMULATION, inputs, {"hashtable_capacity": 8})
    np.testing.assert_array_equal(out, plain)


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


@pytest.mark.parametrize("groups, rows, dim, buckets", [(1, 1, 1, 1), (5, 8, 6, 4), (37, 16, 64, 8), (3, 100, 33, 7)])
def test_bucket_sum_matches_reference(groups, rows, dim, buckets):
    from bucketrt.ops.spec import BUCKET_SUM

    rng = np.random.default_rng(groups * 1000 + rows)
    inputs = {
        "bucket": rng.integers(0, buckets, (groups, rows)).astype(np.int32),
        "weight": rng.random((groups, rows)).astype(np.float32),
        "vector": rng.standard_normal((groups, rows, dim)).astype(np.float32),
    }
    got = run_op(BUCKET_SUM, inputs, {"num_buckets": buckets})
    ref = reference.bucket_sum(*_torch(inputs), num_buckets=buckets)
    for out, expected in zip(got, ref):
        assert out.shape == tuple(expected.shape)
        # Rows are added in the reference's order: identical sums.
        np.testing.assert_array_equal(out, expected.numpy())
