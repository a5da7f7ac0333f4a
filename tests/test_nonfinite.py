"""Non-finite data (NaN, +-Inf, values near the float32 limit) through every op: the CPU kernels
against the PyTorch references, on the shared cases of kernel_cases.NONFINITE_CASES (which
tests/test_kernels_cuda.py runs against the CUDA kernels too), in float32 and float16.

The semantics (docs/ops.md, from the op catalogue): masked rows of LSHCumulation take no part; a key of
SortedChunkAttention whose softmax weight is 0 (masked, causal, self-masked, underflowed below
2^-126) and a round of weight 0 contribute nothing whatever their values; the clamped activations
of ExpertFFN and TopKExperts' gatings propagate NaN as torch.clamp does, and a TopKExperts pick
without an expert adds nothing whatever its weight; a NaN is the maximum for Top1Dispatch and
ArgmaxHash; BucketSum sums as IEEE. Each case first asserts, on the reference's outputs and then on
the kernel's, what it is about (NaN where it must be, finite where masked data must not leak), then
that the kernel's outputs have NaN and +-Inf at exactly the reference's positions and finite values
within 1e-5 (float16: 2e-3) of max(1, max |reference|).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_cases import NONFINITE_CASES, NONFINITE_RTOL, assert_nonfinite_close, nonfinite_inputs

from bucketrt.library import run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import ARGMAX_HASH, BY_NAME, SIGN_HASH


def reference_outputs(op: str, inputs: dict[str, np.ndarray], attrs: dict) -> list[np.ndarray]:
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.values()]
    out = reference.REFERENCES[op](*tensors, **attrs)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _params():
    for case in NONFINITE_CASES:
        for dtype in BY_NAME[case[1]].float_types:
            yield pytest.param(case, dtype, id=f"{case[0]}-{dtype}")


@pytest.mark.parametrize("case,dtype", list(_params()))
def test_nonfinite_cpu_kernel_matches_reference(case, dtype):
    case_id, op, _, attrs, checks = case
    inputs = nonfinite_inputs(case, dtype)
    ref = reference_outputs(op, inputs, attrs)
    checks(inputs, attrs, ref)
    ours = run_op(BY_NAME[op], inputs, attrs)
    checks(inputs, attrs, ours)
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert_nonfinite_close(a, b, NONFINITE_RTOL[dtype], name=f"{case_id} ({dtype}) output {i}")


def _ordered_projections(x: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """The spec's y, written out: products rounded to float32, summed over d in ascending order."""
    y = np.zeros(
        np.broadcast_shapes(x.shape[:-1] + (1,), projection.shape[:-2] + (1, 1))[:-1] + projection.shape[-1:],
        np.float32,
    )
    with np.errstate(over="ignore", invalid="ignore"):
        for d in range(x.shape[-1]):
            y = (y + x[..., d, None] * projection[..., d, None, :]).astype(np.float32)
    return y


@pytest.mark.parametrize("spec", [ARGMAX_HASH, SIGN_HASH], ids=lambda spec: spec.name)
def test_an_overflowing_projection_follows_the_specs_summation_order(spec):
    """Where products or partial sums overflow (vectors near the float32 limit), the summation order
    decides between a finite y, an Inf and a NaN: the reference and the kernel both follow the
    spec's order (docs/ops.md), whatever order the matmul torch runs on this CPU takes."""
    rng = np.random.default_rng(7)
    # Finite vectors near the limit (an Inf or a NaN in them would make y NaN by the spec's rule for
    # non-finite inputs, whatever the order): their products and partial sums overflow.
    vector = (np.clip(rng.standard_normal((1, 2, 16, 8)), -3, 3) * 1e38).astype(np.float32)
    projection = rng.standard_normal((2, 8, 8)).astype(np.float32)
    mask = np.ones((1, 16), np.int32)
    if spec is ARGMAX_HASH:
        inputs = {"mask": mask, "vector": vector, "projection": projection, "bucket_sizes": np.array([4, 4], np.int32)}
        attrs = {"num_hash": 2}
        y = reference.argmax_projections(*(torch.from_numpy(a) for a in inputs.values()), **attrs)
        want = _ordered_projections(vector, projection[None]).reshape(1, 2, 16, 2, 4).transpose(0, 1, 3, 2, 4)
    else:
        vector, projection = vector[0], projection[:1]
        inputs = {"mask": np.ones((2, 16), np.int32), "vector": vector, "projection": projection}
        attrs = {"num_hash": 2, "hash_code_len": 4, "transform": "gaussian"}
        y = reference.sign_projections(*(torch.from_numpy(a) for a in inputs.values()), **attrs)
        want = _ordered_projections(vector, projection).reshape(2, 16, 2, 4)
    assert not np.isfinite(want).all()  # the case is about overflow
    np.testing.assert_array_equal(y.numpy(), want)
    ref = reference_outputs(spec.name, inputs, attrs)
    ours = run_op(spec, inputs, attrs)
    assert [a.tolist() for a in ours] == [b.tolist() for b in ref]
