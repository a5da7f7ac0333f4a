"""examples/cpp: the C++ example built with its CMakeLists through bucketrt's C/C++ package (the SDK
`make sdk` lays out: find_package(bucketrt), bucketrt::ort_ops), against the ONNX Runtime headers
the build fetched and the libonnxruntime inside the onnxruntime wheel, run on YOSO (LSH mode) and
Reformer exports with the op library loaded by path and linked, its outputs bit-identical to the
same model run from Python (bucketrt.ort_session); and its errors, one readable line each."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import bucketrt

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cpp"
# Two rows of one length: the example feeds input_ids as given and attention_mask ones.
ROWS = [[5, 7, 9, 11, 13, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], list(range(3, 23))]


def ort_include_dir() -> Path:
    # The Makefile's default (Debian's libonnxruntime-dev unpacked into .cache/) unless the build
    # was pointed elsewhere with ORT_INCLUDE_DIR.
    include = Path(os.environ.get("ORT_INCLUDE_DIR") or ROOT / ".cache/libonnxruntime-dev/usr/include/onnxruntime")
    assert (include / "onnxruntime_cxx_api.h").is_file(), f"no ONNX Runtime headers in {include} (make install)"
    return include


def wheel_library() -> Path:
    found = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*"))
    assert found, f"no libonnxruntime.so.* in the onnxruntime wheel ({onnxruntime.__file__})"
    return found[0]


@pytest.fixture(scope="module")
def sdk(tmp_path_factory) -> Path:
    """The C/C++ package: $BUCKETRT_SDK (make sdk's dist/sdk) or, as make sdk does, installed from
    make install's build folder (the same build as the package's library)."""
    if os.environ.get("BUCKETRT_SDK"):
        return Path(os.environ["BUCKETRT_SDK"])
    build = ROOT / "build" / f"py3-none-linux_{platform.machine()}"
    assert (build / "CMakeCache.txt").is_file(), f"no build in {build} (make install)"
    prefix = tmp_path_factory.mktemp("sdk")
    done = subprocess.run(
        ["cmake", "--install", str(build), "--component", "sdk", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix


def test_sdk_layout(sdk):
    files = sorted(str(p.relative_to(sdk)) for p in sdk.rglob("*") if p.is_file())
    for name in (
        "include/bucketrt/bucketrt_ort.h",
        "lib/libbucketrt_ort.so",
        "lib/cmake/bucketrt/bucketrtConfig.cmake",
        "lib/cmake/bucketrt/bucketrtConfigVersion.cmake",
        "lib/cmake/bucketrt/bucketrtTargets.cmake",
    ):
        assert name in files, files
    # Nothing of the Python package's, and no test-only harness.
    assert not [f for f in files if f.endswith(".py") or "harness" in f], files
    # The same build as the Python package's library: the same backends.
    backends = []
    for path in (sdk / "lib/libbucketrt_ort.so", bucketrt.library_path()):
        lib = ctypes.CDLL(str(path))
        lib.BucketrtBackends.restype = ctypes.c_char_p
        backends.append(lib.BucketrtBackends().decode())
    assert backends[0] == backends[1]
    header = (sdk / "include/bucketrt/bucketrt_ort.h").read_text()
    version = re.search(r'#define BUCKETRT_VERSION "(.+?)"', header)[1]
    assert version == bucketrt_version()
    # The C API version the library asks for is the build's ONNX Runtime headers'.
    api = re.search(r"#define ORT_API_VERSION (\d+)", (ort_include_dir() / "onnxruntime_c_api.h").read_text())[1]
    assert f"#define BUCKETRT_ORT_API_VERSION {api}\n" in header
    # The header is C as well as C++.
    if shutil.which("cc"):
        done = subprocess.run(
            ["cc", "-std=c99", "-Wall", "-Werror", "-fsyntax-only", "-I", str(sdk / "include"), "-x", "c", "-"],
            input="#include <bucketrt/bucketrt_ort.h>\nint main(void) { return BucketrtBackends() == 0; }\n",
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr


def bucketrt_version() -> str:
    from importlib.metadata import version

    return version("bucketrt")


@pytest.fixture(scope="module")
def binary(tmp_path_factory, sdk) -> Path:
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.fail("cmake and a C++ compiler are needed (make install uses them too)")
    include, library = ort_include_dir(), wheel_library()
    # The C++ API asks the library for the headers' C API version: headers no newer than the
    # runtime (1.21's headers against the wheel's 1.2x/1.3x) is what makes this pairing valid.
    header_api = int(re.search(r"#define ORT_API_VERSION (\d+)", (include / "onnxruntime_c_api.h").read_text())[1])
    wheel_api = int(onnxruntime.__version__.split(".")[1])
    assert header_api <= wheel_api, f"headers' ORT_API_VERSION {header_api} is newer than the wheel's {wheel_api}"
    build = tmp_path_factory.mktemp("cpp-build")
    for command in (
        ["cmake", "-S", EXAMPLE, "-B", build, f"-DORT_INCLUDE_DIR={include}", f"-DORT_LIBRARY={library}"]
        + [f"-Dbucketrt_DIR={sdk / 'lib/cmake/bucketrt'}"],
        ["cmake", "--build", build],
    ):
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build / "bucketrt_run"


@pytest.fixture(scope="module")
def exports(cli_export) -> dict[str, Path]:
    # The exports test_check/test_tensorrt and test_cli_reformer use: made once (tests/conftest.py).
    yoso = cli_export("--model", "yoso-tiny")
    # yoso-tiny is in LSH mode (use_expectation false): the bucketrt hashing ops run.
    manifest = json.loads((yoso / "bucketrt.json").read_text())
    assert manifest["mode"] == "lsh" and manifest["config"]["use_expectation"] is False
    return {"yoso": yoso, "reformer": cli_export("--model", "reformer-tiny", "--seed", 3)}


def run(binary: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120)


def parse_outputs(stdout: str) -> dict[str, np.ndarray]:
    """The example's "output NAME TYPE [dims]" lines, each followed by its values."""
    lines = stdout.splitlines()
    outputs = {}
    for i, line in enumerate(lines):
        if line.startswith("output "):
            _, name, dtype, dims = line.split()
            shape = [int(d) for d in dims.strip("[]").split(",")]
            outputs[name] = np.array(lines[i + 1].split(), dtype=np.float64).astype(dtype).reshape(shape)
    return outputs


@pytest.mark.parametrize("family", ["yoso", "reformer"])
@pytest.mark.parametrize("how", ["path", "linked"])
def test_outputs_equal_pythons(binary, exports, family, how):
    # By path ONNX Runtime loads the package's library; linked, the program calls the SDK's
    # RegisterCustomOps itself.
    library = bucketrt.library_path() if how == "path" else "linked"
    done = run(binary, exports[family], library, *(",".join(map(str, row)) for row in ROWS))
    assert done.returncode == 0, done.stderr
    assert "input input_ids int64 [2,20]" in done.stdout and "input attention_mask int64 [2,20]" in done.stdout
    got = parse_outputs(done.stdout)

    session = bucketrt.ort_session(exports[family])
    ids = np.array(ROWS, dtype=np.int64)
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})))
    assert list(got) == names
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        # The same runtime build, op library, graph and thread count: identical bits (%.9g
        # round-trips float32).
        np.testing.assert_array_equal(got[name], want, err_msg=f"{family} {name}")


def test_errors_are_one_readable_line(binary, exports, tmp_path):
    library = bucketrt.library_path()
    usage = run(binary, exports["yoso"])
    assert usage.returncode == 2 and usage.stderr.startswith("usage: bucketrt_run MODEL LIBRARY IDS")
    cases = [
        ((tmp_path / "missing", library, "1,2"), "is not a file or an export folder"),
        ((tmp_path, library, "1,2"), f"no model.onnx in {tmp_path}"),
        ((exports["yoso"], tmp_path / "libmissing.so", "1,2"), "op library"),
        ((exports["yoso"], library, "1,x"), "row 1: 'x' is not an integer token id"),
        ((exports["yoso"], library, "1,2", "3"), "row 2 has 1 token ids, row 1 has 2"),
        ((exports["yoso"], library, "1,-2"), "token id -2 is negative"),
        # yoso-tiny's vocabulary is 1000 tokens: ONNX Runtime's Gather refuses the id, reported as is.
        ((exports["yoso"], library, "1,1000"), "onnxruntime: Non-zero status code returned while running Gather"),
        ((exports["yoso"] / "bucketrt.json", library, "1"), "onnxruntime: Load model from"),
    ]
    for args, message in cases:
        done = run(binary, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("bucketrt_run: error: ") and message in lines[0], (args, lines)
