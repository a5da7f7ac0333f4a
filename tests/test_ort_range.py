"""The op library, built once, under every ONNX Runtime release of the supported range: the oldest
(pyproject.toml's lower bound) and the newest of onnxruntime and of onnxruntime-gpu (its CPU path,
what users install on GPU machines), each in an environment holding only that package and numpy
(`make test-ort-range` makes them under build/ort-range/ and runs this file). A release older than
the range gets one clear error naming both versions.

The cases are every op's valid calls from tests/op_inputs.py (the small ones and those large
enough to split over workers, float32 and, where the op allows it, float16) as single-node graphs,
and one whole export (yoso-tiny in LSH mode). Their expected outputs are the same library's under
this environment's onnxruntime (the float32 ones first checked against the PyTorch reference), and
the kernels are the same code under every release: single-node outputs must be identical; the
export's may differ within float32 rounding, since ONNX Runtime's own kernels change between
releases.

Without BUCKETRT_ORT_RANGE_DIR (plain `make test`) the file is skipped: the environments cost
downloads and time that `make test-ort-range` spends once, in CI after the suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tomllib
import torch
from op_inputs import in_float_type, small_calls, workers_calls

import bucketrt
from bucketrt.ops import reference
from bucketrt.ops.catalogue import BY_NAME
from bucketrt.ops.graph import single_op_model

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("ort_range_child.py")
RANGE_DIR = os.environ.get("BUCKETRT_ORT_RANGE_DIR")
# Environments the Makefile finished (.installed), by folder DIST@VERSION.
ENVS = sorted(p for p in Path(RANGE_DIR).iterdir() if (p / ".installed").exists()) if RANGE_DIR else []


def lower_bound() -> tuple[int, ...]:
    """pyproject.toml's onnxruntime lower bound, e.g. (1, 21, 0)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bound = next(re.fullmatch(r"onnxruntime>=([0-9.]+)", d)[1] for d in deps if d.startswith("onnxruntime>="))
    parts = tuple(int(p) for p in bound.split("."))
    return parts + (0,) * (3 - len(parts))


def version_of(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)", text).groups())


def environment(env: Path) -> tuple[str, tuple[int, ...]]:
    """(distribution, version) of the one onnxruntime package in `env`, from its folder name
    (the Makefile's DIST@VERSION)."""
    dist, version = env.name.split("@")
    return dist, version_of(version)


pytestmark = pytest.mark.skipif(not ENVS, reason="needs make test-ort-range's environments (BUCKETRT_ORT_RANGE_DIR)")


def _node_attrs(attrs: dict) -> dict:
    from onnx import numpy_helper

    return {k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v for k, v in attrs.items()}


def _run_here(path: Path, feeds: dict) -> dict[str, np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    options.register_custom_ops_library(bucketrt.library_path())
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


@pytest.fixture(scope="module")
def cases(tmp_path_factory, cli_export) -> Path:
    folder = tmp_path_factory.mktemp("ort-range-cases")
    listed = []

    def add(case_id: str, model: onnx.ModelProto | Path, feeds: dict, rtol: float, atol: float) -> dict:
        path = folder / f"{case_id}.onnx"
        if isinstance(model, onnx.ModelProto):
            onnx.save(model, path)
        else:
            path.write_bytes(model.read_bytes())
        expected = _run_here(path, feeds)
        np.savez(folder / f"{case_id}.in.npz", **feeds)
        np.savez(folder / f"{case_id}.out.npz", **expected)
        listed.append(
            {"id": case_id, "model": path.name, "inputs": f"{case_id}.in.npz", "expected": f"{case_id}.out.npz"}
            | {"rtol": rtol, "atol": atol}
        )
        return expected

    calls = [(f"{op}-{base}", op, make) for op, base, make in small_calls()]
    calls += [(f"{case_id}-workers", op, make) for case_id, op, make in workers_calls()]
    for case_id, op, make in calls:
        spec = BY_NAME[op]
        call = make(np.random.default_rng(zlib.crc32(case_id.encode())))
        for float_type in spec.float_types:
            inputs = in_float_type(op, call.inputs, float_type)
            meta = {name: (str(a.dtype), list(a.shape)) for name, a in inputs.items()}
            model = single_op_model(spec, _node_attrs(call.attrs), meta)
            got = add(f"{case_id}-{float_type}", model, inputs, rtol=0.0, atol=0.0)
            if float_type == "float32":
                # The expected outputs are this runtime's: first, they are the reference's.
                tensors = [torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in spec.inputs]
                with torch.inference_mode():
                    out = reference.REFERENCES[op](*tensors, **call.attrs)
                want = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
                for value, ref in zip(got.values(), want):
                    if value.dtype.kind == "f":
                        np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-5, err_msg=case_id)
                    else:
                        np.testing.assert_array_equal(value, ref, err_msg=case_id)

    # One whole export, in LSH mode (SignHash and LSHCumulation inside ONNX Runtime's own ops);
    # its parity with PyTorch is tests/test_check.py's (bucketrt check on the same preset).
    export = cli_export("--model", "yoso-tiny")
    rng = np.random.default_rng(5)
    ids = rng.integers(3, 1000, (2, 24), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 18:] = 0
    add("yoso-tiny", export / "model.onnx", {"input_ids": ids, "attention_mask": mask}, rtol=1e-4, atol=1e-5)

    (folder / "cases.json").write_text(json.dumps(listed))
    return folder


def run_child(env: Path, cases: Path) -> tuple[dict, str]:
    done = subprocess.run(
        [str(env / "bin" / "python"), str(CHILD), str(cases), bucketrt.library_path()],
        capture_output=True,
        text=True,
        timeout=600,
        # Nothing of this environment's site-packages: the child sees its own onnxruntime only.
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_range_is_pyproject_bound():
    """The oldest release that runs the cases is pyproject.toml's lower bound, for onnxruntime and
    onnxruntime-gpu; an older one is tested to fail; and the newest of each is there."""
    supported = [environment(env) for env in ENVS if environment(env)[1] >= lower_bound()]
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        versions = sorted(v for d, v in supported if d == dist)
        assert versions and versions[0] == lower_bound(), (dist, versions, lower_bound())
        assert len(versions) >= 2, f"{dist}: only {versions}: the newest release is missing"
    assert any(environment(env)[1] < lower_bound() for env in ENVS), "no release older than the range"


@pytest.mark.parametrize("env", [e for e in ENVS if environment(e)[1] >= lower_bound()], ids=lambda e: e.name)
def test_kernels_and_export_under(env, cases):
    dist, version = environment(env)
    result, _ = run_child(env, cases)
    assert version_of(result["version"]) == version
    assert result["register_error"] is None, result["register_error"]
    listed = [c["id"] for c in json.loads((cases / "cases.json").read_text())]
    assert sorted(result["cases"]) == sorted(listed)
    failed = {case: why for case, why in result["cases"].items() if why}
    assert not failed, f"{dist} {result['version']}: {failed}"


@pytest.mark.parametrize("env", [e for e in ENVS if environment(e)[1] < lower_bound()], ids=lambda e: e.name)
def test_an_older_runtime_gets_one_error_naming_both_versions(env, cases):
    result, stderr = run_child(env, cases)
    error = result["register_error"]
    assert error is not None, f"onnxruntime {result['version']} took the library"
    needed = f"1.{lower_bound()[1]}"
    assert f"ONNX Runtime {result['version']}" in error and f"needs ONNX Runtime {needed} or later" in error, error
    assert "upgrade onnxruntime" in error and "\n" not in error.strip(), error
    # The library refuses before asking for an API version the runtime lacks, which would make
    # ONNX Runtime print a second message of its own.
    assert "API version" not in stderr.replace(error, ""), stderr
    assert not result["cases"]
