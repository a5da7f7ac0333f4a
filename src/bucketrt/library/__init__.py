"""bucketrt's built op libraries, and ONNX Runtime sessions with them.

    library_path()        the ONNX Runtime custom-op library (libbucketrt_ort.so)
    trt_library_path()    the TensorRT plugin library (libbucketrt_trt.so), where built
    ort_session(path)     an InferenceSession of an export (or .onnx file), with the ops registered
                          where its graph has bucketrt nodes (a standard-op export runs without them)
    run_op(spec, ...)     one op through ONNX Runtime, on numpy inputs (kernel tests, benchmarks)

The libraries are installed inside the `bucketrt` package by CMake. They are found through
importlib.resources, so that an editable install (`pip install -e .`, whose Python files stay in
the source tree and whose compiled files go to site-packages) finds them too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from bucketrt.errors import LibraryNotBuiltError, TrtLibraryNotBuiltError

LIBRARY_NAME = "libbucketrt_ort.so"
# TensorRT plugins (trt_plugins/), installed beside the ORT library when bucketrt is built with
# TensorRT_ROOT. It exports getCreators and setLoggerFinder (trtexec --dynamicPlugins).
TRT_LIBRARY_NAME = "libbucketrt_trt.so"
# Overrides the op library's location (make sanitize points it at the sanitizer build).
LIBRARY_ENV = "BUCKETRT_LIBRARY"


def installed_file(name: str) -> Path:
    """Where a file CMake installs into the bucketrt package is (it may not exist)."""
    return Path(str(resources.files("bucketrt") / name))


def library_path() -> str:
    """Absolute path of the ONNX Runtime custom-op library: $BUCKETRT_LIBRARY when set, else the
    one installed inside this package."""
    override = os.environ.get(LIBRARY_ENV)
    path = Path(override).resolve() if override else installed_file(LIBRARY_NAME)
    if not path.is_file():
        if override:
            raise LibraryNotBuiltError(f"bucketrt's op library is missing: {LIBRARY_ENV}={override} is not a file")
        raise LibraryNotBuiltError(
            f"bucketrt's op library is missing ({path}); install the package with `pip install .` "
            "(or `make install`) so that it is compiled"
        )
    return str(path)


def trt_library_path() -> str:
    """Absolute path of the TensorRT plugin library installed inside this package (built only where
    bucketrt was compiled against TensorRT)."""
    path = installed_file(TRT_LIBRARY_NAME)
    if not path.is_file():
        raise TrtLibraryNotBuiltError(
            f"bucketrt's TensorRT plugin library is missing ({path}); rebuild bucketrt against your TensorRT: "
            "TensorRT_ROOT=/path/to/TensorRT make install (or pip install . with TensorRT_ROOT set), "
            "or pass the library's path with --plugins"
        )
    return str(path)


def uses_bucketrt_ops(model) -> bool:
    """Whether an ONNX graph (a ModelProto, or a file: its graph alone is read) has a bucketrt
    node, subgraphs included: whether it needs bucketrt's op library to run."""
    import onnx

    from bucketrt.export_format.manifest import custom_ops
    from bucketrt.ops.schema import DOMAIN

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return bool(custom_ops(model, DOMAIN))


def session_options(intra_op_num_threads: int | None = None, op_library: bool = True):
    """ORT SessionOptions, with the bucketrt op library registered (unless `op_library` is False)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if op_library:
        options.register_custom_ops_library(library_path())
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    return options


def ort_session(
    path,
    providers=None,
    intra_op_num_threads: int | None = None,
    options=None,
    component: str = "model",
    check_attributes: bool = True,
    library_registered: bool = False,
    op_library: bool | None = None,
):
    """An onnxruntime.InferenceSession for `path` with bucketrt's ops: a file, a ModelProto (a
    model already parsed: it is not read again), or an export folder and the name of one of its
    components (model.onnx by default).

    `op_library`: whether bucketrt's op library is registered. None (the default) decides from the
    graph: a graph with no bucketrt node (`bucketrt export --ops standard`, LSG) gets a plain
    session, so that it runs where bucketrt's library is not built or cannot be loaded. Callers
    that know (from the manifest's `ops`, or a graph they parsed) pass it and spare the parse.

    `options`, when given, is a plain onnxruntime.SessionOptions (for profiling, graph
    optimisation levels...): the op library is registered on it here, so it must not be
    registered on it already (the library refuses a second registration on one SessionOptions,
    with an error that says so).

    Every bucketrt node is checked against the op catalogue first (`bucketrt.ops.node_check`):
    an attribute the reference rejects raises ValueError naming the node, op and attribute. The
    check parses a file's graph once more (about 2 s for a 500 MB model with its weights inline);
    `check_attributes=False` skips it for a model already checked (the kernels' own checks stay).
    `library_registered=True`: `options` already has the op library (an earlier ort_session
    registered it), so that one SessionOptions serves several sessions.
    """
    import onnx
    import onnxruntime as ort

    from bucketrt.ops.node_check import check_nodes

    if isinstance(path, onnx.ModelProto):
        model = path
    else:
        model = Path(path)
        if model.is_dir():
            model = model / f"{component}.onnx"
    graph = None
    if check_attributes or op_library is None:
        # The graph alone, parsed once for both: external weights stay on disk.
        graph = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    # The kernels cannot see an attribute name they do not declare (ops/node_check.py): the
    # spec's check of every bucketrt node comes first.
    if check_attributes:
        check_nodes(graph)
    if op_library is None:
        op_library = uses_bucketrt_ops(graph)
    if options is None:
        options = session_options(intra_op_num_threads, op_library=op_library)
    elif op_library and not library_registered:
        options.register_custom_ops_library(library_path())
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers or ["CPUExecutionProvider"])


def op_session(
    spec,
    attrs: Mapping[str, object],
    inputs: Mapping | None = None,
    providers: Sequence[str] | None = None,
    intra_op_num_threads: int | None = None,
):
    """An InferenceSession over `bucketrt.ops.graph.single_op_model(spec, attrs, inputs)`. The
    node is not checked against the catalogue, so that bad attributes reach the kernel."""
    from bucketrt.ops.graph import single_op_model

    return ort_session(
        single_op_model(spec, attrs, inputs),
        providers=providers,
        intra_op_num_threads=intra_op_num_threads,
        check_attributes=False,
    )


def run_op(
    spec,
    inputs: Mapping,
    attrs: Mapping[str, object],
    providers: Sequence[str] | None = None,
    intra_op_num_threads: int | None = None,
) -> list:
    """Runs `spec` once on numpy `inputs` (by input name) through ONNX Runtime; returns its outputs.

    The graph declares each input with the array's own dtype and shape, so that whatever is wrong
    with them reaches the kernel's checks rather than ORT's input feeding.
    """
    import numpy as np

    missing = [t.name for t in spec.inputs if t.name not in inputs]
    if missing:
        raise ValueError(f"{spec.name}: missing input(s) {missing}")
    arrays = {name: np.asarray(a) for name, a in inputs.items()}
    meta = {name: (str(a.dtype), list(a.shape)) for name, a in arrays.items()}
    session = op_session(spec, attrs, meta, providers, intra_op_num_threads)
    return session.run(None, arrays)


__all__ = [
    "LIBRARY_ENV",
    "LIBRARY_NAME",
    "TRT_LIBRARY_NAME",
    "installed_file",
    "library_path",
    "op_session",
    "ort_session",
    "run_op",
    "session_options",
    "trt_library_path",
    "uses_bucketrt_ops",
]
