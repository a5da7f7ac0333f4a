"""Non-finite data (NaN, +-Inf, values near the float32 limit) through every op: the CPU kernels
against the PyTorch references, on the shared cases of kernel_cases.NONFINITE_CASES (which
tests/test_kernels_cuda.py runs against the CUDA kernels too), in float32 and float16.

The semantics (docs/ops.md, from the op catalogue): masked rows of LSHCumulation take no part; a key of
SortedChunkAttention whose softmax weight is 0 (masked, causal, self-masked, underflowed below
2^-126) and a round of weight 0 contribute nothing whatever their values; the clamped activations
of ExpertFFN propagate NaN as torch.clamp does; a NaN is the maximum for Top1Dispatch and
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
from bucketrt.ops.catalogue import BY_NAME


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
