"""bucketrt's exporter: Hugging Face models to ONNX with bucketrt's custom ops.

    from bucketrt.exporter import export, load_reference
    manifest = export("yoso-tiny", "out/yoso-tiny")
    reference = load_reference("out/yoso-tiny")  # the same model in PyTorch, for comparison
    reference.run(make_inputs(manifest))

The model families are the modules of `bucketrt.exporter.families` (family.families() lists
them). Names are imported on first use, so that the CLI's light commands do not pay for importing
torch and transformers.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DEFAULT_OPSET": ".onnx_export",
    "SUPPORTED_OPSETS": ".onnx_export",
    "export": ".onnx_export",
    "PRESETS": ".presets",
    "load_reference": ".rebuild",
    "load_transformers_model": ".rebuild",
    "make_inputs": ".rebuild",
    "Reference": ".rebuild",
    "family_named": ".family",
    "register": ".family",
    # What an export folder holds (bucketrt.export_format) and the errors, for the exporter's users.
    "BucketrtError": "bucketrt.errors",
    "MANIFEST_NAME": "bucketrt.export_format.manifest",
    "component": "bucketrt.export_format.manifest",
    "read_manifest": "bucketrt.export_format.manifest",
    "max_sequence_length": "bucketrt.export_format.manifest",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
