"""bucketrt.json: what an export folder holds, and where the exporter recorded how it made it."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from bucketrt.errors import BucketrtError

MANIFEST_NAME = "bucketrt.json"
FORMAT_VERSION = 2
# The components of a seq2seq export, named as Optimum names them (T5 family).
ENCODER, DECODER, DECODER_WITH_PAST = "encoder_model", "decoder_model", "decoder_with_past_model"


def versions() -> dict:
    out = {}
    for dist in ("bucketrt", "torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def onnx_dtype_name(elem_type: int) -> str:
    """numpy's name of an ONNX element type ("float32", "int64", "bfloat16", ...)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    return tensor_dtype_to_np_dtype(elem_type).name


def graph_signature(model_proto) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of an ONNX graph: name, dtype, and shape with symbolic dims as names."""

    def describe(value_info) -> dict:
        tensor_type = value_info.type.tensor_type
        shape = [
            d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
            for d in tensor_type.shape.dim
        ]
        return {"name": value_info.name, "dtype": onnx_dtype_name(tensor_type.elem_type), "shape": shape}

    initializers = {init.name for init in model_proto.graph.initializer}
    inputs = [describe(v) for v in model_proto.graph.input if v.name not in initializers]
    outputs = [describe(v) for v in model_proto.graph.output]
    return inputs, outputs


def optional_inputs(model_proto) -> list[dict]:
    """The graph's inputs that have a default (an initializer of the same name, which a caller may
    feed instead): name, dtype, shape and the default as a list (a number for a scalar)."""
    from onnx import numpy_helper

    defaults = {init.name: init for init in model_proto.graph.initializer}
    out = []
    for value in model_proto.graph.input:
        if value.name in defaults:
            tensor = defaults[value.name]
            out.append(
                {
                    "name": value.name,
                    "dtype": onnx_dtype_name(tensor.data_type),
                    "shape": list(tensor.dims),
                    "default": numpy_helper.to_array(tensor).tolist(),
                }
            )
    return out


def custom_ops(model_proto, domain: str) -> list[dict]:
    """The ops of `domain` used by the graph (subgraphs included), with their node counts."""
    counts: dict[str, int] = {}

    def visit(graph):
        for node in graph.node:
            if node.domain == domain:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.g.node:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model_proto.graph)
    version = next((o.version for o in model_proto.opset_import if o.domain == domain), None)
    return [{"domain": domain, "name": name, "version": version, "nodes": counts[name]} for name in sorted(counts)]


def bucketrt_ops(manifest: dict) -> list[str]:
    """The bucketrt ops an export's graphs hold, as "SignHash x2" (its manifest's `ops`); empty for
    an export that runs without bucketrt's op library (`--ops standard`, LSG)."""
    return [f"{op['name']} x{op['nodes']}" for op in manifest.get("ops") or []]


def refuse_bucketrt_ops(
    manifest: dict,
    runtime: str,
    ops: list[str] | None = None,
    reason: str = "cannot run bucketrt's ops",
    holder: str = "this export",
) -> None:
    """BucketrtError, one line naming `--ops standard`, when the export holds bucketrt ops that
    `runtime` (which cannot load bucketrt's op library or plugins) could not run. `ops`: the ones
    found in a graph (`holder`, its file name), where the caller looked there."""
    ops = bucketrt_ops(manifest) if ops is None else ops
    if ops:
        raise BucketrtError(
            f"{runtime} {reason}, and {holder} holds {', '.join(ops)}",
            "export the model with `bucketrt export --ops standard` (standard ONNX ops only) for it",
        )


def write_manifest(output_dir: Path, manifest: dict) -> Path:
    path = Path(output_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(output_dir) -> dict:
    """The manifest of an export folder; BucketrtError when the folder or its files are missing."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise BucketrtError(f"export folder '{output_dir}' does not exist", "run `bucketrt export` first")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise BucketrtError(f"'{output_dir}' has no {MANIFEST_NAME}", "pass a folder written by `bucketrt export`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise BucketrtError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise BucketrtError(
            f"{path} has format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
            f"this bucketrt reads format {FORMAT_VERSION}",
            "export the model again",
        )
    for key in ("family", "model_type", "task", "source", "seed", "mode", "components"):
        if key not in manifest:
            raise BucketrtError(f"{path} lacks '{key}'", "export the model again")
    for entry in manifest["components"]:
        if not (folder / entry["files"]["model"]).is_file():
            raise BucketrtError(f"'{output_dir}' has no {entry['files']['model']}", "export the model again")
    return manifest


def max_sequence_length(manifest: dict) -> int | None:
    """The longest sequence an export accepts (None: no limit), as its family computed it at export
    (Reformer: also the axial position product; LSG RoBERTa: max_position_embeddings - pad - 1).
    Exports made before bucketrt recorded it: the config's max_position_embeddings."""
    if "max_sequence_length" in manifest:
        limit = manifest["max_sequence_length"]
        return None if limit is None else int(limit)
    limit = manifest.get("config", {}).get("max_position_embeddings")
    return int(limit) if limit else None


def op_set(manifest: dict) -> str:
    """How the export computes bucketrt's ops: "bucketrt" (bucketrt::<Op> nodes) or "standard"
    (their standard-op lowerings, `bucketrt export --ops standard`). Exports made before bucketrt
    recorded it: "bucketrt"."""
    return manifest.get("op_set", "bucketrt")


def needs_op_library(manifest: dict) -> bool:
    """Whether running the export needs bucketrt's op library (ONNX Runtime) or plugins (TensorRT):
    it has bucketrt nodes. A standard-op export has none; nor has a bucketrt export of a model that
    calls no op (YOSO in expectation mode)."""
    return bool(manifest.get("ops"))


def component(manifest: dict, name: str | None = None) -> dict:
    """A component's manifest entry: the named one, or the first (the only one of most exports)."""
    entries = manifest["components"]
    if name is None:
        return entries[0]
    for entry in entries:
        if entry["name"] == name:
            return entry
    raise BucketrtError(f"the export has no component '{name}'", f"it has: {', '.join(e['name'] for e in entries)}")
