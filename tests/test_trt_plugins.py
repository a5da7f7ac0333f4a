"""The TensorRT plugin library (trt_plugins/) on machines without TensorRT or a GPU.

* Always: CMake's one status line, and no plugin target, wherever TensorRT's headers or the CUDA
  kernels are missing (configure runs in a scratch folder, CPU only).
* Where the installed package has libbucketrt_trt.so: it exports exactly TensorRT's two entry
  points, needs neither libnvinfer nor libcudart, loads without TensorRT and has one creator per op
  with a CUDA kernel.
* Where TensorRT's headers are at hand (BUCKETRT_TEST_TENSORRT_ROOT=/path/to/TensorRT, the folder
  holding include/NvInfer.h) and nvcc is: the plugin library builds against them in a scratch folder
  with no warning from its sources, tests/trt_plugin_check.cc drives it through TensorRT's plugin
  interfaces (everything that needs no GPU and no libnvinfer) and tests/trt_workspace_check.cc
  sweeps every op's workspace over optimisation profiles. What the two know of each op is generated
  here: the plugin check's op texts from the catalogue and the table of per-op test inputs
  (tests/op_inputs.py), written as trt_check_ops.h (`plugin_check_header`); the workspace check's
  profiles from the table (`workspace_profiles`), whose tensors' dims it takes from the spec
  (op_specs.h). Mutated, both make their checks fail (the tests below prove it).

What TensorRT does with the plugins (parsing, building, running engines) needs TensorRT and a GPU.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from op_inputs import TABLE

import bucketrt
import bucketrt.library
from bucketrt.ops import codegen
from bucketrt.ops.catalogue import BY_NAME, OPS

ROOT = Path(__file__).resolve().parents[1]
SKIP_LINE = "bucketrt: TensorRT not found (set TensorRT_ROOT); skipping the TensorRT plugins"


def _include_dirs() -> tuple[Path, Path]:
    """ONNX Runtime's and Eigen's headers, as `make install` provides them (or the environment)."""
    ort = Path(os.environ.get("ORT_INCLUDE_DIR") or ROOT / ".cache/libonnxruntime-dev/usr/include/onnxruntime")
    eigen = Path(os.environ.get("EIGEN3_INCLUDE_DIR") or ROOT / ".cache/libeigen3-dev/usr/include/eigen3")
    if not (ort / "onnxruntime_cxx_api.h").is_file() or not (eigen / "Eigen/Core").is_file():
        pytest.skip(
            "ONNX Runtime or Eigen headers not found (run `make install`, or set ORT_INCLUDE_DIR and EIGEN3_INCLUDE_DIR)"
        )
    return ort, eigen


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None or not (ROOT / "CMakeLists.txt").is_file():
        pytest.skip("needs cmake and the source tree")
    return cmake


def _system_tensorrt_headers() -> list[Path]:
    """NvInfer.h where CMake's find_path looks without being told (e.g. Debian's libnvinfer-dev)."""
    prefixes = {Path("/usr"), Path("/usr/local")} | {Path(p).parent for p in os.environ.get("PATH", "").split(":") if p}
    folders = [prefix / "include" for prefix in prefixes] + [Path("/usr/include/x86_64-linux-gnu")]
    return [folder for folder in folders if (folder / "NvInfer.h").is_file()]


def _configure(build: Path, *defines: str, cuda: str = "OFF") -> str:
    """Configures the project in `build`; returns CMake's output. TensorRT_ROOT, CPATH and
    CPLUS_INCLUDE_PATH are left out of CMake's environment: TensorRT is where the defines say."""
    ort, eigen = _include_dirs()
    env = {k: v for k, v in os.environ.items() if k not in ("TensorRT_ROOT", "CPATH", "CPLUS_INCLUDE_PATH")}
    command = [
        _cmake(),
        "-S",
        str(ROOT),
        "-B",
        str(build),
        f"-DORT_INCLUDE_DIR={ort}",
        f"-DEIGEN3_INCLUDE_DIR={eigen}",
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-DBUCKETRT_CUDA={cuda}",
        *defines,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _fake_headers(folder: Path, major: int, minor: int, patch: int) -> Path:
    """A folder CMake takes for TensorRT's: NvInfer.h and NvInferVersion.h (10.x's layout). Only
    for the configure step's checks; nothing compiles against it."""
    include = folder / "include"
    include.mkdir(parents=True)
    (include / "NvInfer.h").write_text("// stand-in: configure-time checks only\n")
    (include / "NvInferVersion.h").write_text(
        f"#define TRT_MAJOR_ENTERPRISE {major}\n#define TRT_MINOR_ENTERPRISE {minor}\n"
        f"#define TRT_PATCH_ENTERPRISE {patch}\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n"
    )
    return folder


# --------------------------------------------------------------------------------------------
# what the TensorRT checks know of each op, generated from the spec and the table
# --------------------------------------------------------------------------------------------

_TYPE_CHARS = {"int32": "I", "int8": "B", "float": "T"}


def _node(op) -> dict:
    """An op as tests/trt_plugin_check.cc reads it: a valid node's attributes (the table's first
    small call, defaults filled, in spec order) and its tensors (type char, dims; a dim named like an
    int attribute is that attribute's value)."""
    attrs = op.resolve_attributes(next(iter(TABLE[op.name].small.values()))(np.random.default_rng(0)).attrs)
    ints = {k: v for k, v in attrs.items() if isinstance(v, int)}

    def tensor(t):
        bad = [d for d in t.dims if not d.isidentifier()]
        if bad:
            raise ValueError(f"{op.name}: input or output '{t.name}' has dims {bad} the check cannot evaluate")
        return (_TYPE_CHARS[t.dtype], [str(ints[d]) if d in ints else d for d in t.dims])

    return {
        "op": op.name,
        "values": [(a.name, attrs[a.name]) for a in op.attributes],
        "inputs": [tensor(t) for t in op.inputs],
        "outputs": [tensor(t) for t in op.outputs],
    }


def plugin_check_header(mutate=None) -> str:
    """trt_check_ops.h for tests/trt_plugin_check.cc: every op of the catalogue (`_node`; `mutate`
    may change them first) and sample sizes for every dim name, distinct within a sample (so that an
    output dim taken from the wrong input dim shows). Written from the catalogue itself, not from
    op_specs.h, which the plugins are built with: a fault of that header's generator shows too."""
    nodes = [_node(op) for op in OPS]
    if mutate is not None:
        mutate(nodes)

    def strings(items) -> str:
        return "{" + ", ".join(f'"{s}"' for s in items) + "}"

    def tensors(ts) -> str:
        return "{" + ", ".join(f"{{'{kind}', {strings(dims)}}}" for kind, dims in ts) + "}"

    def values(vs) -> str:
        out = []
        for name, v in vs:
            if isinstance(v, float):  # a float: its repr, which C++ reads back to the same double
                out.append(f'{{"{name}", 0, nullptr, true, {v!r}}}')
                continue
            assert isinstance(v, str) or -(2**31) <= v < 2**31, (name, v)
            out.append(f'{{"{name}", 0, "{v}"}}' if isinstance(v, str) else f'{{"{name}", {v}, nullptr}}')
        return "{" + ", ".join(out) + "}"

    symbols = sorted({d for n in nodes for _, dims in n["inputs"] + n["outputs"] for d in dims if not d.isdigit()})
    samples = [
        {s: 2 + i for i, s in enumerate(symbols)},
        {s: 100 + 7 * i for i, s in enumerate(symbols)},
        {s: 4096 - 3 * i for i, s in enumerate(symbols)},
    ]
    lines = [
        "// Generated by tests/test_trt_plugins.py (plugin_check_header) from the op catalogue and the table",
        "// of per-op test inputs (tests/op_inputs.py), for tests/trt_plugin_check.cc. Do not edit.",
        "#pragma once",
        "#include <cstdint>",
        "#include <map>",
        "#include <string>",
        "#include <vector>",
        "",
        "namespace trt_check_ops {",
        "// An op's tensors as its spec declares them: 'I' int32, 'B' int8 or 'T' the op's float type (float32",
        "// or float16, one for the whole node), then the dims, each a size's name or a number (an attribute's).",
        "struct TensorText {",
        "  char type;",
        "  std::vector<std::string> dims;",
        "};",
        "// One attribute of a valid node, in spec order: an int (`number`), a string (`text`, not null) or a",
        "// float (`is_float`, `real`).",
        "struct Value {",
        "  const char* name;",
        "  int32_t number;",
        "  const char* text;",
        "  bool is_float = false;",
        "  double real = 0;",
        "};",
        "struct OpText {",
        "  const char* op;",
        "  std::vector<Value> values;",
        "  std::vector<TensorText> inputs, outputs;",
        "};",
        "inline const std::vector<OpText>& OpTexts() {",
        "  static const std::vector<OpText> texts = {",
        *(
            f'      {{"{n["op"]}", {values(n["values"])}, {tensors(n["inputs"])}, {tensors(n["outputs"])}}},'
            for n in nodes
        ),
        "  };",
        "  return texts;",
        "}",
        "// Sizes for every dim name, for evaluating output shapes.",
        "inline const std::vector<std::map<std::string, int64_t>>& Samples() {",
        "  static const std::vector<std::map<std::string, int64_t>> samples = {",
        *("      {" + ", ".join(f'{{"{s}", {v}}}' for s, v in sample.items()) + "}," for sample in samples),
        "  };",
        "  return samples;",
        "}",
        "}  // namespace trt_check_ops",
        "",
    ]
    return "\n".join(lines)


def workspace_profiles(mutate=None) -> str:
    """The profiles tests/trt_workspace_check.cc sweeps, one per line: the table's (`mutate` may
    change them first). Fields, tab-separated: what, op, float type, attributes (name=i:int,
    name=f:float or name=s:string), ranges (symbol=lo:hi:step), fixed (symbol=value), tied (symbol=other*factor),
    samples, exhaustive symbol (or -)."""
    profiles = [(row.op, p) for row in TABLE.values() for p in row.trt_profiles]
    if mutate is not None:
        profiles = mutate(profiles)
    lines = []
    for op, p in profiles:
        kinds = {str: "s", float: "f"}
        attrs = ",".join(
            f"{k}={kinds.get(type(v), 'i')}:{repr(v) if isinstance(v, float) else v}" for k, v in p.attrs.items()
        )
        ranges = ",".join(f"{k}={lo}:{hi}:{step}" for k, (lo, hi, step) in p.ranges.items())
        fixed = ",".join(f"{k}={v}" for k, v in p.fixed.items())
        tied = ",".join(f"{k}={other}*{factor}" for k, (other, factor) in p.tied.items())
        fields = (p.what, op, p.float_type, attrs, ranges, fixed, tied, str(p.samples), p.exhaustive or "-")
        assert all("\t" not in f and "\n" not in f for f in fields), fields
        lines.append("\t".join(fields))
    return "\n".join(lines) + "\n"


def test_every_cuda_op_has_workspace_profiles_covering_its_dims():
    # What trt_workspace_check.cc sweeps: every op of the CUDA op table, each profile giving every
    # dim of the op's inputs a size (an int attribute names its own), valid per the spec.
    cuda_ops = {e.op for e in codegen.cuda_table((ROOT / codegen.CUDA_TABLE).read_text())}
    assert {row.op for row in TABLE.values() if row.trt_profiles} == cuda_ops
    for row in TABLE.values():
        spec = BY_NAME[row.op]
        for p in row.trt_profiles:
            attrs = spec.resolve_attributes(p.attrs)
            given = set(p.ranges) | set(p.fixed) | set(p.tied) | {k for k, v in attrs.items() if isinstance(v, int)}
            needed = {d for t in spec.inputs for d in t.dims}
            assert needed <= given, (p.what, needed - given)
            assert p.float_type in spec.float_types and (p.exhaustive is None or p.exhaustive in p.ranges), p.what
            assert all(other in p.ranges or other in p.fixed for other, _ in p.tied.values()), p.what


def _tensorrt_lines(output: str) -> list[str]:
    return [line.removeprefix("-- ") for line in output.splitlines() if "TensorRT" in line]


# --------------------------------------------------------------------------------------------
# CMake's verdict where the plugins cannot be built
# --------------------------------------------------------------------------------------------


def test_configure_without_tensorrt_says_so_in_one_line(tmp_path):
    if _system_tensorrt_headers():
        pytest.skip(f"this machine has TensorRT's headers in {_system_tensorrt_headers()[0]}")
    output = _configure(tmp_path / "build")
    assert _tensorrt_lines(output) == [SKIP_LINE], output
    assert not (tmp_path / "build/trt_plugins/CMakeFiles/bucketrt_trt.dir").exists()


@pytest.mark.parametrize(
    "version, expected",
    [
        (
            (10, 16, 0),
            "bucketrt: TensorRT 10.16.0 headers at {include}, but the CUDA kernels are not built (nvcc not "
            "found, or BUCKETRT_CUDA=OFF); skipping the TensorRT plugins, which wrap them",
        ),
        (
            (8, 6, 1),
            "bucketrt: TensorRT 8.6.1 at {include} is too old (the plugins are IPluginV3: TensorRT 10 or "
            "later); skipping the TensorRT plugins",
        ),
    ],
)
def test_configure_with_tensorrt_headers_but_no_plugins_says_why_in_one_line(tmp_path, version, expected):
    root = _fake_headers(tmp_path / "TensorRT", *version)
    output = _configure(tmp_path / "build", f"-DTensorRT_ROOT={root}")
    assert _tensorrt_lines(output) == [expected.format(include=root / "include")], output
    assert not (tmp_path / "build/trt_plugins/CMakeFiles/bucketrt_trt.dir").exists()


def test_the_sdk_carries_the_plugins_where_they_are_built(tmp_path):
    """make sdk (sdk/CMakeLists.txt) installs libbucketrt_trt.so beside the op library and exports it
    as bucketrt::trt_plugins when the plugins are built: the configure step's install rules and
    exported targets say so (TensorRT's headers are stand-ins; nothing is compiled)."""
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("the plugins wrap the CUDA kernels: needs nvcc")
    root = _fake_headers(tmp_path / "TensorRT", 10, 16, 0)
    output = _configure(tmp_path / "build", f"-DTensorRT_ROOT={root}", "-DCMAKE_CUDA_ARCHITECTURES=90", cuda="ON")
    assert "bucketrt: TensorRT plugins ON (TensorRT 10.16.0" in output, output
    rules = (tmp_path / "build/sdk/cmake_install.cmake").read_text()
    assert "libbucketrt_ort.so" in rules and "libbucketrt_trt.so" in rules, rules
    (targets,) = (tmp_path / "build/sdk").rglob("bucketrtTargets.cmake")
    text = targets.read_text()
    assert "add_library(bucketrt::ort_ops SHARED IMPORTED)" in text, text
    assert "add_library(bucketrt::trt_plugins SHARED IMPORTED)" in text, text
    assert "set(bucketrt_WITH_TENSORRT ON)" in (tmp_path / "build/sdk/bucketrtConfig.cmake").read_text()


def test_configure_with_a_wrong_tensorrt_include_dir_says_so_in_one_line(tmp_path):
    output = _configure(tmp_path / "build", f"-DTENSORRT_INCLUDE_DIR={tmp_path}")
    assert _tensorrt_lines(output) == [
        f"bucketrt: TensorRT not found (TENSORRT_INCLUDE_DIR={tmp_path} has no NvInfer.h); skipping the TensorRT plugins"
    ], output


# --------------------------------------------------------------------------------------------
# the installed library, where this machine built it
# --------------------------------------------------------------------------------------------


def _cuda_ops() -> list[str]:
    """The ops the installed ORT library has CUDA kernels for: the plugin library's ops."""
    lib = ctypes.CDLL(bucketrt.library_path())
    lib.BucketrtBackends.restype = ctypes.c_char_p
    entries = (entry.split("=", 1) for entry in lib.BucketrtBackends().decode().split(";"))
    return [name for name, backends in entries if "ort-cuda" in backends.split(",")]


def _defined_dynamic_symbols(library: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", library], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def _check_library(library: str) -> None:
    assert _defined_dynamic_symbols(library) == {"getCreators", "setLoggerFinder"}
    needed = subprocess.run(["readelf", "-d", library], capture_output=True, text=True, check=True).stdout
    assert "libnvinfer" not in needed and "libcudart" not in needed and "libcuda." not in needed, needed


@pytest.fixture
def installed_trt_library() -> str:
    try:
        return bucketrt.trt_library_path()
    except bucketrt.TrtLibraryNotBuiltError:
        pytest.skip("bucketrt was built without TensorRT (no libbucketrt_trt.so in the package)")


def test_installed_library_exports_only_tensorrt_entry_points(installed_trt_library):
    if shutil.which("nm") is None or shutil.which("readelf") is None:
        pytest.skip("needs binutils (nm, readelf)")
    _check_library(installed_trt_library)


def test_installed_library_loads_without_tensorrt_with_a_creator_per_cuda_op(installed_trt_library):
    # Loading runs the library's constructor, which registers nothing where TensorRT is not loaded.
    script = (
        "import ctypes, sys\n"
        "lib = ctypes.CDLL(sys.argv[1])\n"
        "lib.getCreators.restype = ctypes.c_void_p\n"
        "lib.getCreators.argtypes = [ctypes.POINTER(ctypes.c_int32)]\n"
        "n = ctypes.c_int32(-1)\n"
        "assert lib.getCreators(ctypes.byref(n))\n"
        "print(n.value)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, installed_trt_library], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(_cuda_ops())


# --------------------------------------------------------------------------------------------
# against TensorRT's real headers (BUCKETRT_TEST_TENSORRT_ROOT)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tensorrt_root() -> Path:
    root = os.environ.get("BUCKETRT_TEST_TENSORRT_ROOT")
    if not root or not Path(root, "include", "NvInfer.h").is_file():
        pytest.skip("set BUCKETRT_TEST_TENSORRT_ROOT to a TensorRT folder holding include/NvInfer.h")
    return Path(root)


def _cuda_include() -> Path:
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        homes.insert(0, str(Path(nvcc).resolve().parents[1]))
    for home in filter(None, homes):
        if Path(home, "include", "cuda_runtime_api.h").is_file():
            return Path(home, "include")
    pytest.skip("needs the CUDA toolkit (nvcc and its headers)")


@pytest.fixture(scope="module")
def trt_build(tensorrt_root, tmp_path_factory) -> tuple[Path, str]:
    """The plugin library built against the headers: (library, the plugin sources' build output)."""
    _cuda_include()
    build = tmp_path_factory.mktemp("trt") / "build"
    output = _configure(build, f"-DTensorRT_ROOT={tensorrt_root}", "-DCMAKE_CUDA_ARCHITECTURES=90", cuda="ON")
    assert "bucketrt: TensorRT plugins ON (TensorRT " in output, output
    jobs = str(os.cpu_count() or 2)
    # The kernels first (shared with the ORT library), then the plugin sources alone.
    for target in ("bucketrt_trt_kernels", "bucketrt_trt"):
        result = subprocess.run(
            [_cmake(), "--build", str(build), "--target", target, "-j", jobs],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return build / "trt_plugins" / "libbucketrt_trt.so", result.stdout + result.stderr


def test_plugin_sources_build_without_warnings(trt_build):
    library, output = trt_build
    assert "warning" not in output.lower(), output
    _check_library(str(library))


def _plugin_check(tensorrt_root, library, folder: Path, header: str) -> subprocess.CompletedProcess:
    """tests/trt_plugin_check.cc built with `header` as its trt_check_ops.h and run on `library`."""
    (folder / "trt_check_ops.h").write_text(header)
    driver = folder / "trt_plugin_check"
    compile_ = subprocess.run(
        [
            os.environ.get("CXX", "g++"),
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-isystem",
            str(tensorrt_root / "include"),
            "-isystem",
            str(_cuda_include()),
            f"-I{folder}",
            str(ROOT / "tests/trt_plugin_check.cc"),
            "-ldl",
            "-o",
            str(driver),
        ],
        capture_output=True,
        text=True,
    )
    assert compile_.returncode == 0, compile_.stderr
    return subprocess.run([str(driver), str(library), str(len(_cuda_ops()))], capture_output=True, text=True)


def test_plugins_through_tensorrt_interfaces(tensorrt_root, trt_build, tmp_path):
    library, _ = trt_build
    result = _plugin_check(tensorrt_root, library, tmp_path, plugin_check_header())
    assert result.returncode == 0 and re.search(r"^0 failed$", result.stdout, re.M), result.stdout + result.stderr
    # Every op with a plugin went through the generated checks.
    for op in _cuda_ops():
        for what in ("output shapes over symbolic input dims (named sizes)", "TensorRT's format search"):
            assert re.search(rf"^ok   {op}: {re.escape(what)}", result.stdout, re.M), (op, what, result.stdout)


def test_the_plugin_check_fails_on_a_wrong_signature(tensorrt_root, trt_build, tmp_path):
    # The check's op texts are generated from the spec, so they agree with the plugins: a text made
    # wrong on purpose must fail exactly the checks of the ops it changes, whatever else passes.
    library, _ = trt_build

    def mutate(nodes):
        by_op = {n["op"]: n for n in nodes}
        by_op["LSHCumulation"]["outputs"][0] = ("T", ["B", "Nk", "D"])  # Nq swapped for Nk
        kind, dims = by_op["SignHash"]["inputs"][0]
        by_op["SignHash"]["inputs"][0] = ("T", dims)  # the int32 mask as a float tensor
        by_op["BucketSum"]["outputs"][1] = ("T", by_op["BucketSum"]["outputs"][1][1][:1])  # a dim dropped

    result = _plugin_check(tensorrt_root, library, tmp_path, plugin_check_header(mutate))
    assert result.returncode == 1, result.stdout + result.stderr
    failed = re.findall(r"^FAIL (.*)$", result.stdout, re.M)
    assert {line.split(":")[0] for line in failed} == {"LSHCumulation", "SignHash", "BucketSum"}, failed
    for style in ("named sizes", "sums (s-1)+1", "products s*one"):
        assert any(f"LSHCumulation: output shapes over symbolic input dims ({style})" in f for f in failed), failed
        assert any(f"BucketSum: output shapes over symbolic input dims ({style})" in f for f in failed), failed
    assert any(f.startswith("SignHash: TensorRT's format search") for f in failed), failed
    assert re.search(rf"^{len(failed)} failed$", result.stdout, re.M), result.stdout


@pytest.fixture(scope="module")
def workspace_check(trt_build) -> Path:
    library, _ = trt_build
    build = library.parents[1]
    result = subprocess.run(
        [_cmake(), "--build", str(build), "--target", "bucketrt_trt_workspace_check"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return build / "trt_plugins" / "bucketrt_trt_workspace_check"


def _sweep(workspace_check: Path, folder: Path, profiles: str) -> subprocess.CompletedProcess:
    (folder / "profiles.txt").write_text(profiles)
    return subprocess.run(
        [str(workspace_check), str(folder / "profiles.txt")], capture_output=True, text=True, timeout=600
    )


def test_declared_workspace_covers_every_shape_of_the_profile(workspace_check, tmp_path):
    """tests/trt_workspace_check.cc: for every op, shapes swept inside optimisation profiles (every
    N of LSHCumulation's sorted way in [4096, 16384], every D, the dense/sorted switch, ...) need at
    most the workspace the plugin declares, and onShapeChange takes them; the declared size is
    serialised and a shape needing more is refused; a profile with no bound fails configurePlugin
    with its cause. CUB's storage query is replaced by its formula (tests/radix_sort_stub.cc)."""
    run = _sweep(workspace_check, tmp_path, workspace_profiles())
    assert run.returncode == 0 and re.search(r"^0 failed$", run.stdout, re.M), run.stdout + run.stderr
    # Every op was swept, each with shapes planned and none over its declared size.
    swept = re.findall(r"^ok   (\w+)[^:\n]*: declared (\d+) bytes; (\d+) shapes planned", run.stdout, re.M)
    assert {op for op, _, _ in swept} == set(_cuda_ops()), run.stdout
    assert all(int(shapes) > 0 for _, _, shapes in swept), run.stdout
    assert "every N in [4096, 16384]: declared" in run.stdout and "12291 shapes planned" in run.stdout, run.stdout


def test_the_workspace_check_fails_on_a_wrong_profile(workspace_check, tmp_path):
    # The profiles' dims are the spec's: a profile that leaves a dim out, or whose shapes the op
    # refuses (a hadamard D that is no power of two), fails its sweep; the other sweeps pass.
    import dataclasses

    def mutate(profiles):
        out = []
        for op, p in profiles:
            if op == "ExpertFFN":
                p = dataclasses.replace(p, ranges={k: v for k, v in p.ranges.items() if k != "E"})
            elif p.what.startswith("SignHash hadamard"):
                p = dataclasses.replace(p, fixed={**p.fixed, "D": 48, "C": 48})
            out.append((op, p))
        return out

    run = _sweep(workspace_check, tmp_path, workspace_profiles(mutate))
    assert run.returncode == 1, run.stdout + run.stderr
    failed = re.findall(r"^FAIL (.*)$", run.stdout, re.M)
    assert len(failed) == 2 and re.search(r"^2 failed$", run.stdout, re.M), run.stdout
    assert failed[0].startswith("SignHash hadamard D=2048 (rows in the workspace): configurePlugin failed: "), failed
    assert "D) must be a power of two" in failed[0], failed
    assert failed[1] == "ExpertFFN: the profile gives no size for E (input 'counts')", failed


def _tensorrt_major(root: Path) -> int:
    text = (root / "include" / "NvInferVersion.h").read_text()
    match = re.search(r"^#define +(?:TRT_MAJOR_ENTERPRISE|NV_TENSORRT_MAJOR) +(\d+)", text, re.M)
    assert match, "no major version in NvInferVersion.h"
    return int(match.group(1))


@pytest.fixture(scope="module")
def loading_check(tensorrt_root, tmp_path_factory) -> tuple[Path, dict[int, Path]]:
    """tests/trt_loading_check.cc and stand-in libnvinfer.so.<major> (tests/nvinfer_standin.cc) for
    the headers' major and the next one, each in a folder of its own."""
    folder = tmp_path_factory.mktemp("loading")
    flags = [
        "-std=c++17",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-isystem",
        str(tensorrt_root / "include"),
        "-isystem",
        str(_cuda_include()),
    ]
    cxx = os.environ.get("CXX", "g++")
    driver = folder / "trt_loading_check"
    result = subprocess.run(
        [cxx, *flags, str(ROOT / "tests/trt_loading_check.cc"), "-ldl", "-o", str(driver)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    major = _tensorrt_major(tensorrt_root)
    standins = {}
    for m in (major, major + 1):
        (folder / str(m)).mkdir()
        standins[m] = folder / str(m) / f"libnvinfer.so.{m}"
        result = subprocess.run(
            [
                cxx,
                *flags,
                "-shared",
                "-fPIC",
                f"-DSTANDIN_MAJOR={m}",
                f"-Wl,-soname,libnvinfer.so.{m}",
                str(ROOT / "tests/nvinfer_standin.cc"),
                "-ldl",
                "-o",
                str(standins[m]),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
    return driver, standins


@pytest.mark.parametrize("scenario", ["loadlibrary", "dlopen-after", "dlopen-before", "logger"])
def test_every_load_order_registers_once(tensorrt_root, trt_build, loading_check, scenario):
    library, _ = trt_build
    driver, standins = loading_check
    major = _tensorrt_major(tensorrt_root)
    run = subprocess.run(
        [str(driver), scenario, str(library), str(standins[major]), str(len(_cuda_ops()))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and re.search(r"^0 failed$", run.stdout, re.M), run.stdout + run.stderr
    assert "bucketrt:" not in run.stdout + run.stderr, run.stdout + run.stderr  # nothing to say


def test_another_tensorrt_major_is_said_in_one_line(tensorrt_root, trt_build, loading_check):
    library, _ = trt_build
    driver, standins = loading_check
    major = _tensorrt_major(tensorrt_root)
    run = subprocess.run(
        [str(driver), "mismatch", str(library), str(standins[major + 1]), str(len(_cuda_ops()))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and re.search(r"^0 failed$", run.stdout, re.M), run.stdout + run.stderr
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "bucketrt:" in line]
    assert lines == [
        f"bucketrt: libbucketrt_trt.so was built for TensorRT {major}, but TensorRT {major + 1} is loaded "
        f"({standins[major + 1]}); its plugins are not registered: build bucketrt against TensorRT {major + 1}'s "
        "headers (TensorRT_ROOT=... make install)"
    ], run.stdout + run.stderr


def test_bucketrt_ops_lists_trt_for_the_ops_with_plugins(monkeypatch, tmp_path):
    pytest.importorskip("bucketrt.cli.main", reason="the CLI is not installed (a source tree has no bucketrt.cli)")
    from click.testing import CliRunner

    from bucketrt.cli.main import main
    from bucketrt.ops.catalogue import OPS

    library = tmp_path / "libbucketrt_trt.so"
    library.write_bytes(b"")  # `bucketrt ops` only looks for the file
    monkeypatch.setattr(bucketrt.library, "trt_library_path", lambda: str(library))
    result = CliRunner().invoke(main, ["ops"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 2
    }
    cuda_ops = set(_cuda_ops())
    for op in OPS:
        assert ("trt" in rows[op.name].split("│")[4].replace(",", " ").split()) == (op.name in cuda_ops), rows[op.name]
    assert f"TensorRT plugin library: {library}" in result.output.replace("\n", "")
