"""The comparison rule: Polygraphy's element-wise one, and the criteria for quantized exports.

One rule for every backend (SimpleCompareFunc, check_error_stat "elemwise"): an element fails
when it exceeds both atol and rtol (relative to the reference), or is NaN. Polygraphy gives the
verdict and the error statistics; `mismatched_elements` counts the elements that rule rejects, and
a count that disagrees with Polygraphy's verdict is an error (an installed Polygraphy that changed
its rule), so the numbers reported are always the ones the verdict came from.

A quantized export fails that rule by design; `quantized_metrics` judges it by criteria that fit
quantization instead.
"""

from __future__ import annotations

import math

from .report import OutputResult

# Default tolerances (atol, rtol) and the hash-code rounding margin, by the precision the backend
# computes in. "reduced": fp16 exports, and TensorRT engines built with TF32 or --fp16 - an fp16
# or TF32 product carries about 1e-3 relative error (10 mantissa bits), which layers accumulate.
TOLERANCES = {"fp32": (1e-4, 1e-3, 1e-4), "reduced": (1e-2, 1e-2, 1e-2), "int8": (1e-2, 1e-2, 1e-2)}


def mismatched_elements(actual, expected, atol: float, rtol: float) -> int:
    """How many elements fail Polygraphy's element-wise rule (SimpleCompareFunc, "elemwise"):
    |a - e| > atol (or NaN) and |a - e| / |e| > rtol (or NaN), where a zero e counts as
    Polygraphy's epsilon. `compare` checks that this count agrees with Polygraphy's verdict."""
    import numpy as np
    from polygraphy.comparator import util as comp_util

    a, e = comp_util.cast_up(np.asarray(actual)), comp_util.cast_up(np.asarray(expected))
    diff = np.abs(a - e)
    if e.dtype.kind == "f":
        e = np.where(e == 0, _POLYGRAPHY_ZERO_EPSILON, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.abs(e)
    bad = ((diff > atol) | np.isnan(diff)) & ((rel > rtol) | np.isnan(rel))
    return int(np.count_nonzero(bad))


# What polygraphy.comparator.compare.SimpleCompareFunc adds to zero reference values.
_POLYGRAPHY_ZERO_EPSILON = 2.220446049250313e-16


def compare(
    actual: dict, expected: dict, output_names: list[str], atol: float, rtol: float, backend_name: str = "backend"
) -> list[OutputResult]:
    """Every output in `output_names`, `actual` (the backend's) against `expected`, by Polygraphy's
    comparator; an output missing from either side fails."""
    from polygraphy.comparator import Comparator, IterationResult, RunResults
    from polygraphy.comparator.compare import SimpleCompareFunc

    results = RunResults()
    results.append((backend_name, [IterationResult(actual, 0.0, backend_name)]))
    results.append(("pytorch", [IterationResult(expected, 0.0, "pytorch")]))
    accuracy = Comparator.compare_accuracy(
        results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True, check_error_stat="elemwise")
    )
    compared = next(iter(accuracy[0].values()))[0]  # one compare func, one runner pair, one iteration
    rows = []
    for name in output_names:
        got, want, result = actual.get(name), expected.get(name), compared.get(name)
        row = OutputResult(
            name,
            list(got.shape) if got is not None else None,
            list(want.shape) if want is not None else None,
        )
        rows.append(row)
        if row.missing or result is None:
            continue
        row.size = int(got.size)
        row.passed = bool(result)
        if row.shape != row.reference_shape:  # Polygraphy fails it without statistics
            row.mismatched = row.size
            continue
        row.max_abs, row.mean_abs = result.max_absdiff, result.mean_absdiff
        row.max_rel, row.mean_rel = result.max_reldiff, result.mean_reldiff
        row.mismatched = mismatched_elements(got, want, atol, rtol)
        if (row.mismatched == 0) != row.passed:
            raise RuntimeError(
                f"{name}: {row.mismatched} elements outside atol {atol:g}/rtol {rtol:g} by bucketrt's count, "
                f"Polygraphy says {'passed' if row.passed else 'failed'}: the installed Polygraphy changed its rule"
            )
    return rows


def quantized_metrics(row: OutputResult, actual, expected, criteria: dict, mask=None) -> None:
    """Fills `row`'s cosine, rel_l2 and (for outputs named *logits) agreement, and its verdict by
    `criteria` (min_cosine, max_rel_l2, min_agreement). The answers are the argmax over the last
    axis: a class, each token's label or top-1 word, a QA start or end position. `mask` [B, N]
    (the attention mask) leaves padded positions out of per-token answers. NaN fails."""
    import numpy as np

    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype.kind != "f" or e.dtype.kind != "f":  # integer outputs are answers themselves
        row.agreement = float(np.mean(a == e)) if a.size else 1.0
        row.passed = row.agreement >= criteria["min_agreement"]
        return
    a64, e64 = a.astype(np.float64).ravel(), e.astype(np.float64).ravel()
    na, ne, nd = np.linalg.norm(a64), np.linalg.norm(e64), np.linalg.norm(a64 - e64)
    row.cosine = float(a64 @ e64 / (na * ne)) if na > 0 and ne > 0 else (1.0 if na == ne else 0.0)
    row.rel_l2 = float(nd / ne) if ne > 0 else (0.0 if nd == 0 else math.inf)
    passed = row.cosine >= criteria["min_cosine"] and row.rel_l2 <= criteria["max_rel_l2"]
    if row.name.endswith("logits") and a.ndim >= 2 and a.shape[-1] > 1:
        same = a.argmax(-1) == e.argmax(-1)
        if mask is not None and a.ndim == 3 and tuple(np.shape(mask)) == a.shape[:2]:
            same = same[np.asarray(mask) != 0]
        row.agreement = float(np.mean(same)) if same.size else 1.0
        passed = passed and row.agreement >= criteria["min_agreement"]
    row.passed = bool(passed)
