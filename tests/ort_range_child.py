"""Runs inside one of `make test-ort-range`'s environments, which hold only onnxruntime (or
onnxruntime-gpu) and numpy: no torch, no onnx, no bucketrt. tests/test_ort_range.py writes the cases
(single-node graphs and one whole export, with their inputs and expected outputs) and runs this with
the environment's python:

    python ort_range_child.py CASES_DIR LIBRARY

It registers LIBRARY on a fresh SessionOptions per case, runs the case on the CPU execution
provider and compares (ints exactly, floats within the case's tolerance). Prints one JSON object:
{"version": onnxruntime's, "register_error": str or null, "cases": {id: "" or what differed}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime


def compare(got: list, want: dict, names: list[str], rtol: float, atol: float) -> str:
    for name, value in zip(names, got):
        expected = want[name]
        if value.shape != expected.shape or value.dtype != expected.dtype:
            return f"{name}: {value.dtype}{list(value.shape)}, expected {expected.dtype}{list(expected.shape)}"
        if value.dtype.kind == "f":
            ok = np.isclose(value.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
        else:
            ok = value == expected
        if not ok.all():
            where = tuple(np.argwhere(~ok)[0].tolist())
            return f"{name} differs at {list(where)}: {value[where]!r}, expected {expected[where]!r}"
    return ""


def options(library: str) -> onnxruntime.SessionOptions:
    made = onnxruntime.SessionOptions()
    made.intra_op_num_threads = 2
    made.register_custom_ops_library(library)
    return made


def main(cases_dir: str, library: str) -> int:
    result = {"version": onnxruntime.__version__, "register_error": None, "cases": {}}
    try:
        options(library)
    except Exception as error:  # what this runtime says when it cannot take the library
        result["register_error"] = str(error)
        print(json.dumps(result))
        return 0
    for case in json.loads((Path(cases_dir) / "cases.json").read_text()):
        try:
            session = onnxruntime.InferenceSession(
                str(Path(cases_dir) / case["model"]), sess_options=options(library), providers=["CPUExecutionProvider"]
            )
            with np.load(Path(cases_dir) / case["inputs"]) as feeds:
                names = [o.name for o in session.get_outputs()]
                got = session.run(names, dict(feeds))
            with np.load(Path(cases_dir) / case["expected"]) as want:
                result["cases"][case["id"]] = compare(got, dict(want), names, case["rtol"], case["atol"])
        except Exception as error:
            result["cases"][case["id"]] = f"failed: {' '.join(str(error).split())[:400]}"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
