"""Runs one op through ONNX Runtime in a fresh Python process, for what the op library reads once
per process (environment switches such as BUCKETRT_SIMD): a test cannot change those in its own
process after the library has run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_SCRIPT = r"""
import os, sys
import numpy as np
from bucketrt.library import op_session
from bucketrt.ops.catalogue import BY_NAME

folder, op, attrs, set_after_first, cpus = sys.argv[1], sys.argv[2], eval(sys.argv[3]), eval(sys.argv[4]), eval(sys.argv[5])
if cpus:
    os.sched_setaffinity(0, cpus)  # before the library first runs, which reads the CPU limit once
with np.load(os.path.join(folder, "inputs.npz")) as data:
    inputs = {name: data[name] for name in data.files}
meta = {name: (str(a.dtype), list(a.shape)) for name, a in inputs.items()}
first = op_session(BY_NAME[op], attrs, meta)
outputs = first.run(None, inputs)
if set_after_first:
    # The library has run once: a switch set now must change nothing, in a new session too. The
    # first session stays alive, and with it the library (ORT unloads it with its last session;
    # a fresh load reads the environment afresh).
    os.environ.update(set_after_first)
    outputs = op_session(BY_NAME[op], attrs, meta).run(None, inputs)
np.savez(os.path.join(folder, "outputs.npz"), *outputs)
"""


def run_op_in_child(
    op: str,
    inputs: dict[str, np.ndarray],
    attrs: dict,
    env: dict[str, str] | None = None,
    set_after_first: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> list[np.ndarray]:
    """run_op(BY_NAME[op], inputs, attrs) in a child process whose environment adds `env`; with
    `set_after_first`, the child runs the op once, sets those variables, and returns a second
    session's run (the first one kept alive, so that the library stays loaded);
    with `cpus`, the child first restricts itself to those CPUs (its affinity mask)."""
    with tempfile.TemporaryDirectory() as folder:
        np.savez(Path(folder, "inputs.npz"), **inputs)
        child_env = {**os.environ, **(env or {})}
        for name in set_after_first or {}:
            child_env.pop(name, None)
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, folder, op, repr(attrs), repr(set_after_first), repr(cpus)],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        with np.load(Path(folder, "outputs.npz")) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]
