"""Generated bad inputs for every op, run through ONNX Runtime in child processes (test_fuzz.py).

Each op has one or two small valid calls (`BASES`: the small calls of the one table of per-op test
inputs, tests/op_inputs.py); every case is one of them with one mutation (or, for the `combo`
cases, two): a rank added or dropped, another dtype, a dim off by one or zero, a huge dim beside a
zero one (an empty tensor whose shape arithmetic can still overflow), huge, negative, list-, tensor-, float- or string-typed attributes, float attributes NaN, Inf, out of
their bounds or ints, unknown and misspelt attribute names, out-of-range data (codes, buckets, order/counts values; also in masked rows, which must be
ignored), NaN and Inf. The generator is seeded and a case is a pure function of its id, so a child
process rebuilds exactly the cases it is given by id, and a failure reproduces with

    python tests/fuzz_cases.py CASE_ID [CASE_ID ...]

which prints one verdict line per case (`--list` prints every id).

A case's verdict (`judge`): "ok" when ONNX Runtime raised an error naming the op and the PyTorch
reference rejects the call too (or the case is one where a size limit may refuse it), or when both
accept and the outputs agree; otherwise "silent-acceptance" (ORT ran what the reference rejects),
"mismatch", "rejects-valid" or "unclear-error". Crashes and hangs are seen by the parent.
"""

from __future__ import annotations

import json
import math
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from op_inputs import small_calls

SEED = 20261201
# Seconds the PyTorch reference may take for one case: beyond it the call does work out of
# proportion to its (tiny) inputs, which the spec's bounds are meant to reject.
REFERENCE_SECONDS = 10
HUGE_INTS = (2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**61, 2**62, 2**63 - 1, -1, -(2**63))
HUGE_DIMS = (2**31 + 1, 2**40)  # numpy refuses shapes whose non-zero dims overflow its byte count
BAD_INT32 = (-1, -(2**31), 2**31 - 1, 2**24, 2**30)


@dataclass
class Case:
    id: str
    op: str  # spec name
    inputs: dict[str, np.ndarray]
    attrs: dict  # as put on the node: int, float, str, list, or a numpy array (a tensor attribute)
    kind: str  # the mutation family, e.g. "attr-huge"
    # A size limit may refuse the call even where the reference accepts it (huge dims/attributes).
    may_reject: bool = False
    tags: set[str] = field(default_factory=set)


# -- valid calls ---------------------------------------------------------------------------------


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([SEED, *(abs(hash_text(str(k))) for k in key)])


def hash_text(text: str) -> int:
    """A stable string hash (Python's hash() is salted per process)."""
    value = 0
    for ch in text.encode():
        value = (value * 131 + ch) % (2**61 - 1)
    return value


# The valid calls are the one table's small ones (tests/op_inputs.py): op, base id (the cases' id
# prefix), maker.
BASES: list[tuple[str, str, Callable]] = small_calls()


def data_inputs(op: str) -> dict[str, str | None]:
    """The op's index-like inputs, where out-of-range values matter: every int32 input, the masks
    last, each with the mask that makes its rows dead (an int32 input named like a mask whose dims
    lead its own), if any."""
    ints = [t for t in _spec(op).inputs if t.dtype == "int32"]
    masks = [t for t in ints if t.name.endswith("mask")]
    return {
        t.name: next((m.name for m in masks if len(m.dims) < len(t.dims) and t.dims[: len(m.dims)] == m.dims), None)
        for t in [t for t in ints if t not in masks] + masks
    }


# -- mutations -----------------------------------------------------------------------------------


def _spec(op: str):
    from bucketrt.ops.catalogue import BY_NAME

    return BY_NAME[op]


def _int_attrs(op: str) -> list:
    return [a for a in _spec(op).attributes if a.type == "int"]


def _mutations(op: str, base: str, inputs: dict, attrs: dict, rng) -> list[tuple[str, str, dict, dict, bool]]:
    """(suffix, kind, inputs, attrs, may_reject) for every single mutation of one valid call."""
    out = []
    spec = _spec(op)

    def add(suffix, kind, new_inputs=None, new_attrs=None, may_reject=False):
        out.append(
            (suffix, kind, {**inputs, **(new_inputs or {})}, attrs if new_attrs is None else new_attrs, may_reject)
        )

    add("valid", "valid")
    for name, array in inputs.items():
        # ranks
        add(f"{name}-rank-up", "rank", {name: array[None]})
        if array.ndim > 1:
            add(f"{name}-rank-down", "rank", {name: array[0]})
        else:
            add(f"{name}-scalar", "rank", {name: array.reshape(-1)[:1].reshape(())})
        # dtypes
        for dtype in ("int64", "float64", "float16", "uint8", "bool", "int32", "float32"):
            if np.dtype(dtype) == array.dtype:
                continue
            add(f"{name}-{dtype}", "dtype", {name: array.astype(dtype)})
        # dims: one more, zero, huge beside a zero
        for axis in range(array.ndim):
            grown = np.concatenate([array, array.take([0], axis=axis)], axis=axis)
            add(f"{name}-dim{axis}-plus1", "dims", {name: grown})
            add(f"{name}-dim{axis}-zero", "dims", {name: array.take([], axis=axis)})
            if array.ndim > 1:
                other = (axis + 1) % array.ndim
                for huge in HUGE_DIMS[axis % 2 :: 2]:  # the two sizes take turns over the axes
                    shape = list(array.shape)
                    shape[axis], shape[other] = huge, 0
                    add(
                        f"{name}-dim{axis}-huge{huge}-empty",
                        "dims-huge",
                        {name: np.zeros(shape, array.dtype)},
                        may_reject=True,
                    )
        # NaN / Inf in float inputs
        if array.dtype.kind == "f":
            for label, value in (("nan", np.nan), ("inf", np.inf), ("neginf", -np.inf)):
                bad = array.copy()
                bad.reshape(-1)[rng.integers(0, bad.size)] = value
                add(f"{name}-{label}", "nonfinite", {name: bad})
            add(f"{name}-all-nan", "nonfinite", {name: np.full_like(array, np.nan)})
            with np.errstate(over="ignore"):
                add(f"{name}-huge-values", "nonfinite", {name: (array * 3e38).astype(array.dtype)})
    # out-of-range data in index-like inputs (live rows; dead rows where the op has masks)
    for name, mask_name in data_inputs(op).items():
        array = inputs[name]
        for value in BAD_INT32:
            bad = array.copy()
            bad.reshape(-1)[rng.integers(0, bad.size)] = value
            add(f"{name}-value{value}", "data", {name: bad})
        if name == "counts":  # ExpertFFN's: as many entries as order has, all to expert 0; sums past int32
            tokens, rest = inputs["order"].size, [0] * (array.size - 1)
            add("counts-all-tokens-twice", "data", {name: np.array([tokens, *rest], np.int32)})
            overflow = [2**31 - 1, 2**31 - 1, *([2] * (array.size - 2))]
            add("counts-sum-overflow", "data", {name: np.array(overflow, np.int32)})
        if name == "order":  # its second entry a copy of its first
            duplicate = array.copy()
            duplicate.reshape(-1)[1] = duplicate.reshape(-1)[0]
            add("order-duplicate", "data", {name: duplicate})
        if mask_name is not None:
            dead = inputs[mask_name].copy()
            dead[0, 0] = 0
            bad = array.copy()
            bad[0, 0] = [2**31 - 1, -(2**31)][: bad.shape[-1]] + [0] * max(0, bad.shape[-1] - 2)
            add(f"{name}-dead-row-out-of-range", "data-dead", {name: bad, mask_name: dead})
    # attributes
    for a in spec.attributes:
        valid = attrs.get(a.name, a.default)
        if a.type == "int":
            for value in HUGE_INTS:
                add(f"attr-{a.name}={value}", "attr-huge", new_attrs={**attrs, a.name: value}, may_reject=True)
            add(f"attr-{a.name}-float", "attr-type", new_attrs={**attrs, a.name: float(valid) + 0.5})
            add(f"attr-{a.name}-float-integral", "attr-type", new_attrs={**attrs, a.name: float(valid)})
            add(f"attr-{a.name}-string", "attr-type", new_attrs={**attrs, a.name: str(valid)})
            add(f"attr-{a.name}-list", "attr-type", new_attrs={**attrs, a.name: [valid, valid]})
            add(f"attr-{a.name}-list1", "attr-type", new_attrs={**attrs, a.name: [valid]})
            add(f"attr-{a.name}-tensor", "attr-type", new_attrs={**attrs, a.name: np.array([valid], np.int64)})
        elif a.type == "float":
            for label, value in (("nan", math.nan), ("inf", math.inf), ("neginf", -math.inf), ("huge", 3e38)):
                add(f"attr-{a.name}-{label}", "attr-value", new_attrs={**attrs, a.name: value})
            add(f"attr-{a.name}-below", "attr-value", new_attrs={**attrs, a.name: a.minimum - 0.5})
            add(f"attr-{a.name}-above", "attr-value", new_attrs={**attrs, a.name: a.maximum * 2 + 1.0})
            add(f"attr-{a.name}-other", "attr-value", new_attrs={**attrs, a.name: valid + 1.5})
            add(f"attr-{a.name}-zero", "attr-value", new_attrs={**attrs, a.name: 0.0})
            add(f"attr-{a.name}-int", "attr-type", new_attrs={**attrs, a.name: int(valid) or 1})
            add(f"attr-{a.name}-string", "attr-type", new_attrs={**attrs, a.name: repr(valid)})
            add(f"attr-{a.name}-list", "attr-type", new_attrs={**attrs, a.name: [valid, valid]})
            add(f"attr-{a.name}-list1", "attr-type", new_attrs={**attrs, a.name: [valid]})
            add(f"attr-{a.name}-tensor", "attr-type", new_attrs={**attrs, a.name: np.array([valid], np.float32)})
        else:
            add(f"attr-{a.name}-int", "attr-type", new_attrs={**attrs, a.name: 1})
            add(f"attr-{a.name}-list", "attr-type", new_attrs={**attrs, a.name: [valid]})
            add(f"attr-{a.name}-tensor", "attr-type", new_attrs={**attrs, a.name: np.array([1.0], np.float32)})
            add(f"attr-{a.name}-upper", "attr-value", new_attrs={**attrs, a.name: valid.upper()})
            add(f"attr-{a.name}-empty", "attr-value", new_attrs={**attrs, a.name: ""})
            add(f"attr-{a.name}-padded", "attr-value", new_attrs={**attrs, a.name: valid + " "})
        # misspelt: the name less its last letter, with the value it should have had
        others = {k: v for k, v in attrs.items() if k != a.name}
        add(f"attr-{a.name}-misspelt", "attr-name", new_attrs={**others, a.name[:-1]: valid})
        add(f"attr-{a.name}-capitalised", "attr-name", new_attrs={**others, a.name.capitalize(): valid})
        if a.default is None:
            add(f"attr-{a.name}-missing", "attr-name", new_attrs=others)
    add("attr-unknown-int", "attr-name", new_attrs={**attrs, "bogus": 1})
    add("attr-unknown-string", "attr-name", new_attrs={**attrs, "bogus": "x"})
    add("attr-unknown-float", "attr-name", new_attrs={**attrs, "bogus": 1.5})
    return out


def generate() -> list[Case]:
    cases: list[Case] = []
    for op, base, maker in BASES:
        call = maker(_rng(base))
        inputs, attrs = call.inputs, call.attrs
        singles = _mutations(op, base, inputs, attrs, _rng(base, "mutations"))
        for suffix, kind, new_inputs, new_attrs, may_reject in singles:
            cases.append(Case(f"{base}/{suffix}", op, new_inputs, new_attrs, kind, may_reject))
        # combos: two mutations applied together (seeded pairs)
        rng = _rng(base, "combos")
        picks = [s for s in singles if s[1] != "valid"]
        for i in range(12):
            first, second = (picks[j] for j in rng.choice(len(picks), 2, replace=False))
            merged_inputs, merged_attrs = dict(inputs), dict(attrs)
            for _, _, new_inputs, new_attrs, _ in (first, second):
                merged_inputs.update({k: v for k, v in new_inputs.items() if v is not inputs[k]})
                for k in set(attrs) - set(new_attrs):
                    merged_attrs.pop(k, None)
                merged_attrs.update({k: v for k, v in new_attrs.items() if repr(attrs.get(k)) != repr(v)})
            cases.append(
                Case(
                    f"{base}/combo{i}:{first[0]}+{second[0]}",
                    op,
                    merged_inputs,
                    merged_attrs,
                    "combo",
                    first[4] or second[4],
                )
            )
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "fuzz case ids must be unique"
    return cases


# -- running one case (in the child) -------------------------------------------------------------


def names(message: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", message) is not None


def _node_attrs(attrs: dict) -> dict:
    from onnx import numpy_helper

    return {k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v for k, v in attrs.items()}


def run_ort(case: Case):
    from bucketrt.library import run_op

    return run_op(_spec(case.op), case.inputs, _node_attrs(case.attrs), intra_op_num_threads=2)


def _node_check_error(case: Case) -> str | None:
    """What bucketrt.ort_session's node check (bucketrt.ops.node_check) says of the case's node."""
    from bucketrt.ops.graph import single_op_model
    from bucketrt.ops.node_check import check_nodes

    meta = {name: (str(a.dtype), list(a.shape)) for name, a in case.inputs.items()}
    try:
        check_nodes(single_op_model(_spec(case.op), _node_attrs(case.attrs), meta))
    except ValueError as error:
        return str(error)
    return None


class _ReferenceTooSlow(Exception):
    pass


def run_reference(case: Case):
    import torch

    from bucketrt.ops import reference

    def too_slow(signum, frame):
        raise _ReferenceTooSlow(f"the reference took over {REFERENCE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(REFERENCE_SECONDS)
    try:
        tensors = [torch.from_numpy(np.ascontiguousarray(case.inputs[t.name])) for t in _spec(case.op).inputs]
        with torch.inference_mode():
            out = reference.REFERENCES[case.op](*tensors, **case.attrs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _compare(ort_out: list, ref_out: list) -> str:
    """ "" when the outputs agree (ints exactly, floats to float32/float16 rounding), else why not."""
    if len(ort_out) != len(ref_out):
        return f"{len(ort_out)} outputs, the reference has {len(ref_out)}"
    for i, (got, want) in enumerate(zip(ort_out, ref_out)):
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"output {i}: {got.dtype}{list(got.shape)}, the reference gives {want.dtype}{list(want.shape)}"
        if got.dtype.kind == "f":
            tol = dict(rtol=2e-2, atol=2e-3) if got.dtype == np.float16 else dict(rtol=1e-4, atol=1e-5)
            ok = np.isclose(got.astype(np.float64), want.astype(np.float64), equal_nan=True, **tol)
        else:
            ok = got == want
        if not ok.all():
            where = np.argwhere(~ok)[0].tolist()
            return f"output {i} differs at {where}: {got[tuple(where)]!r} vs the reference's {want[tuple(where)]!r}"
    return ""


def judge(case: Case) -> dict:
    started = time.monotonic()
    verdict: dict = {"id": case.id}
    try:
        ort_out = run_ort(case)
        ort_error = None
    except Exception as error:  # noqa: BLE001 - any ORT error is judged by its text
        ort_out, ort_error = None, str(error)
    # The reference rejects with ValueError; any other failure (an allocation its capacity-sized
    # tables cannot get, the time limit) means it could not run the call, which leaves ORT's
    # result unverified rather than wrong.
    ref_out = ref_error = ref_failure = None
    try:
        ref_out = run_reference(case)
    except ValueError as error:
        ref_error = str(error)
    except Exception as error:  # noqa: BLE001
        ref_failure = f"{type(error).__name__}: {error}"
    if ort_error is not None:
        if not names(ort_error, case.op):
            verdict.update(verdict="unclear-error", detail=ort_error[:600])
        elif ref_out is not None and not case.may_reject:
            verdict.update(verdict="rejects-valid", detail=ort_error[:600])
        else:
            verdict.update(verdict="ok", detail=ort_error[:300])
    elif ref_error is not None and "unknown attribute" in ref_error:
        # ONNX Runtime shows a custom op no list of its node's attributes: a name more than one edit
        # away from the op's own is invisible to the kernel (docs/ops.md). bucketrt.ort_session's
        # check of the model must then reject it, in the reference's words.
        caught = _node_check_error(case)
        if caught is not None and names(caught, case.op) and "unknown attribute" in caught:
            verdict.update(
                verdict="ok", detail=f"raw ORT cannot see the name; bucketrt.ort_session's check says: {caught[:300]}"
            )
        else:
            verdict.update(
                verdict="silent-acceptance", detail=f"the reference says: {ref_error[:500]}; the model check: {caught}"
            )
    elif ref_error is not None:
        verdict.update(verdict="silent-acceptance", detail=f"the reference says: {ref_error[:500]}")
    elif ref_failure is not None:
        # Only where a size limit is in play (huge dims/attributes) is an unverified result passable.
        verdict.update(
            verdict="ok" if case.may_reject else "unverified",
            detail=f"ORT ran it; the reference could not: {ref_failure[:400]}",
        )
    else:
        why = _compare(ort_out, ref_out)
        verdict.update(verdict="mismatch" if why else "ok", detail=why or "equal to the reference")
    verdict["seconds"] = round(time.monotonic() - started, 3)
    return verdict


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)


# Not fuzz cases: ids the child answers by crashing or hanging, so that the parent's handling of
# both is tested too.
HARNESS_CHECKS = {"harness/segfault": _segfault, "harness/hang": lambda: time.sleep(3600)}


def child_main(ids: list[str]) -> int:
    """Runs the given cases in order: "START id" before each, then its verdict as one JSON line."""
    by_id = {c.id: c for c in generate()}
    import onnxruntime  # loaded before the first START, so the parent's clock times cases only
    import torch  # noqa: F401

    onnxruntime.set_default_logger_severity(4)  # errors come back as exceptions: no log line per failed run

    print("READY", flush=True)
    for case_id in ids:
        print(f"START {case_id}", flush=True)
        if case_id in HARNESS_CHECKS:  # test_fuzz.py's checks of the parent's crash and hang handling
            HARNESS_CHECKS[case_id]()
        try:
            result = judge(by_id[case_id])
        except Exception:  # noqa: BLE001 - a defect of the harness, reported as such
            result = {"id": case_id, "verdict": "harness-error", "detail": traceback.format_exc()[-800:]}
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    args = sys.argv[1:]
    if args == ["--list"]:
        for c in generate():
            print(c.id)
        sys.exit(0)
    if args[:1] == ["--child"]:
        sys.exit(child_main([line.strip() for line in sys.stdin if line.strip()]))
    sys.exit(child_main(args))
