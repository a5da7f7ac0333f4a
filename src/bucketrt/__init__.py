"""bucketrt: LSH-attention and mixture-of-experts transformers in ONNX Runtime and TensorRT."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("bucketrt")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

_LIBRARY_NAME = "libbucketrt_ort.so"
# TensorRT plugins (trt_plugins/), installed beside the ORT library when bucketrt is built with
# TensorRT_ROOT. It exports getCreators and setLoggerFinder (trtexec --dynamicPlugins).
_TRT_LIBRARY_NAME = "libbucketrt_trt.so"


class LibraryNotBuiltError(RuntimeError):
    pass


class TrtLibraryNotBuiltError(LibraryNotBuiltError):
    pass


# Overrides the library's location (e.g. a prebuilt copy used with PYTHONPATH=src, no install).
LIBRARY_ENV = "BUCKETRT_LIBRARY"


def library_path() -> str:
    """Absolute path of the ONNX Runtime custom-op library: $BUCKETRT_LIBRARY when set, else the
    one shipped inside this package."""
    override = os.environ.get(LIBRARY_ENV)
    path = Path(override).resolve() if override else Path(__file__).with_name(_LIBRARY_NAME)
    if not path.is_file():
        if override:
            raise LibraryNotBuiltError(f"bucketrt's op library is missing: {LIBRARY_ENV}={override} is not a file")
        raise LibraryNotBuiltError(
            f"bucketrt's op library is missing ({path}); install the package with `pip install .` "
            "(or `make install`) so that it is compiled"
        )
    return str(path)


def trt_library_path() -> str:
    """Absolute path of the TensorRT plugin library shipped inside this package (built only where
    bucketrt was compiled against TensorRT)."""
    path = Path(__file__).with_name(_TRT_LIBRARY_NAME)
    if not path.is_file():
        raise TrtLibraryNotBuiltError(
            f"bucketrt's TensorRT plugin library is missing ({path}); rebuild bucketrt against your TensorRT: "
            "TensorRT_ROOT=/path/to/TensorRT make install (or pip install . with TensorRT_ROOT set), "
            "or pass the library's path with --plugins"
        )
    return str(path)


def session_options(intra_op_num_threads: int | None = None):
    """ORT SessionOptions with the bucketrt op library registered."""
    import onnxruntime as ort

    options = ort.SessionOptions()
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
):
    """An onnxruntime.InferenceSession for `path` (a file, or an export folder and the name of one
    of its components: model.onnx by default) with bucketrt's ops.

    `options`, when given, is a plain onnxruntime.SessionOptions (for profiling, graph
    optimisation levels...): the op library is registered on it here, so it must not be
    registered on it already (the library refuses a second registration on one SessionOptions,
    with an error that says so).

    Every bucketrt node is checked against the op catalogue first (`bucketrt.ops.model_check`):
    an attribute the reference rejects raises ValueError naming the node, op and attribute. The
    check parses the graph once more (about 2 s for a 500 MB model with its weights inline);
    `check_attributes=False` skips it for a model already checked (the kernels' own checks stay).
    `library_registered=True`: `options` already has the op library (an earlier ort_session
    registered it), so that one SessionOptions serves several sessions.
    """
    import onnxruntime as ort

    from .ops.model_check import check_model

    path = Path(path)
    if path.is_dir():
        path = path / f"{component}.onnx"
    # The kernels cannot see an attribute name they do not declare (ops/model_check.py): the
    # spec's check of every bucketrt node comes first.
    if check_attributes:
        check_model(path)
    if options is None:
        options = session_options(intra_op_num_threads)
    elif not library_registered:
        options.register_custom_ops_library(library_path())
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])


# The runtime's transformers-style classes and pipelines, at the top level (bucketrt.runtime);
# imported on first use so that `import bucketrt` stays light.
_RUNTIME = (
    "ORTModel",
    "ORTModelForFeatureExtraction",
    "ORTModelForMaskedLM",
    "ORTModelForSequenceClassification",
    "ORTModelForTokenClassification",
    "ORTModelForQuestionAnswering",
    "ORTModelForMultipleChoice",
    "ORTModelForCausalLM",
    "ORTModelForSeq2SeqLM",
    "pipeline",
)


def __getattr__(name: str):
    if name in _RUNTIME:
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
