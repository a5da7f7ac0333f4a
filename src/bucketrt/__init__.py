"""bucketrt: LSH-attention and mixture-of-experts transformers in ONNX Runtime and TensorRT.

The package is layered; each layer imports only those below it (the contract in pyproject.toml,
checked by `make lint`):

    cli                          bucketrt.cli (the top-level cli/ folder): the commands
    check | benchmarking         what rebuilds an export's PyTorch reference to compare or time it
    exporter                     bucketrt.exporter (the top-level exporter/ folder): models to ONNX
    serving                      Triton model repositories and tritonserver
    runtime | quantization | trt ORTModel classes and generation; int8 copies; TensorRT engines
    library                      the built op libraries, ONNX Runtime sessions with them
    export_format | ops          an export folder's manifest and tasks; the op spec and references
    errors                       the one error hierarchy

This module is their front door: the names below are imported on first use, so that
`import bucketrt` stays light. Nothing inside the package imports it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Each import path is one folder: bucketrt is src/bucketrt (plus, installed, the compiled libraries
# beside it), bucketrt.exporter and bucketrt.cli the top-level exporter/ and cli/ folders. An
# editable install (scikit-build-core's redirecting finder) also puts the checkout's root on this
# __path__, because those two live there: left in, tests/ or docs/ would import as bucketrt.tests.
__path__ = [folder for folder in __path__ if Path(folder).name == "bucketrt"]

try:
    __version__ = version("bucketrt")
except PackageNotFoundError:  # not installed
    __version__ = "0.0.0+source"

_PUBLIC = {
    "bucketrt.errors": ("BucketrtError", "LibraryNotBuiltError", "TrtLibraryNotBuiltError"),
    "bucketrt.library": ("LIBRARY_ENV", "library_path", "ort_session", "session_options", "trt_library_path"),
    # Optimum's names for the transformers-style classes, and transformers' pipeline().
    "bucketrt.runtime": (
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
    ),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = ["__version__", *_HOME]


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
