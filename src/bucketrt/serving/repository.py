"""Triton model repositories for bucketrt exports (`bucketrt triton`).

One model folder per export:

    REPO/NAME/config.pbtxt        Triton's ModelConfig, built as the protobuf message itself
                                  (tritonclient's model_config_pb2) and written with text_format
    REPO/NAME/1/...               python: model.py, decoding.py, the ONNX files, libbucketrt_ort.so
                                  onnxruntime: model.onnx (+ external data)
                                  tensorrt: model.plan
    REPO/NAME/libbucketrt_*.so    onnxruntime / tensorrt: the op or plugin library, for exports
                                  that hold bucketrt ops (a standard-op export needs neither)
    REPO/README.md                how to launch tritonserver on this repository

Batching never changes an answer. YOSO and Reformer never mask padding, so requests are never
padded to a common length: only requests of identical shapes share an ORT call (model.py groups
them; Triton's own backends batch only equal shapes, as no input allows ragged batches), and only
for exports whose manifest says their batch rows never interact ("batch_rows_independent", the
family's answer recorded at export; tested bit for bit against each request alone).
Generation runs each request alone: a batch decodes until its last row is done, so a shorter
answer would grow padding.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bucketrt.errors import BucketrtError, TrtLibraryNotBuiltError
from bucketrt.export_format.manifest import (
    DECODER,
    DECODER_WITH_PAST,
    ENCODER,
    max_sequence_length,
    needs_op_library,
    read_manifest,
)
from bucketrt.export_format.manifest import component as manifest_component
from bucketrt.library import library_path, trt_library_path
from bucketrt.runtime import decoding
from bucketrt.trt.engine import TENSORRT

BACKENDS = ("python", "onnxruntime", "tensorrt")
KINDS = ("cpu", "gpu")
VERSION = "1"
TEMPLATES = Path(__file__).with_name("python_backend")
OP_LIBRARY = "libbucketrt_ort.so"
TRT_PLUGINS = "libbucketrt_trt.so"
DEFAULT_MAX_QUEUE_DELAY_US = 100
DEFAULT_MAX_NEW_TOKENS = 20
SEQUENCE_AXIS = "sequence_length"  # the dim name every family gives its token axis

# numpy dtype name -> Triton data type (model_config.proto's DataType).
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
}


@dataclass
class TensorSpec:
    """One input or output as the server sees it: dims exclude the batch axis when max_batch_size > 0."""

    name: str
    dtype: str  # numpy name
    dims: list[int]
    optional: bool = False

    def to_json(self) -> dict:
        out = {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}
        if self.optional:
            out["optional"] = True
        return out


@dataclass
class ModelEntry:
    """What write_repository wrote for one export."""

    name: str
    path: Path  # REPO/NAME
    backend: str
    mode: str  # "forward" (one ORT call per batch), "seq2seq" or "causal" (generation)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batching: str  # "same_shape" (requests of one shape share a call) or "per_request"
    export_dir: Path = field(default=None)
    files: list[str] = field(default_factory=list)  # written, relative to path

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "backend": self.backend,
            "mode": self.mode,
            "batching": self.batching,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:  # a dependency of bucketrt: only a broken install lacks it
        raise BucketrtError(f"tritonclient is not importable ({e})", "pip install 'tritonclient[http,grpc]'") from None
    return model_config_pb2


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.strip() != name:
        raise BucketrtError(f"'{name}' is not a valid model name", "use letters, digits, '-', '_' or '.'")
    return name


def _default_name(export_dir: Path) -> str:
    name = export_dir.resolve().name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"


def _generation_mode(manifest: dict) -> str | None:
    names = [c["name"] for c in manifest["components"]]
    if manifest.get("task") == "text2text-generation" and names[:3] == [ENCODER, DECODER, DECODER_WITH_PAST]:
        return "seq2seq"
    if manifest.get("task") == "text-generation" and len(names) == 1:
        return "causal"
    return None


def _triton_type(dtype: str, where: str) -> str:
    if dtype not in TRITON_TYPES:
        raise BucketrtError(f"{where} has dtype {dtype}, which Triton has no type for")
    return TRITON_TYPES[dtype]


def _signature(entry: dict, batched: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The component's inputs/outputs as Triton dims (-1 for symbolic axes)."""

    def spec(value: dict) -> TensorSpec:
        shape = value["shape"]
        if batched:
            if not shape or isinstance(shape[0], int):
                raise BucketrtError(
                    f"'{value['name']}' has no dynamic batch axis (shape {shape})",
                    "pass --max-batch-size 0 to serve it without batching",
                )
            shape = shape[1:]
        return TensorSpec(value["name"], value["dtype"], [d if isinstance(d, int) else -1 for d in shape])

    return [spec(v) for v in entry["inputs"]], [spec(v) for v in entry["outputs"]]


def _generation_takes_mask(mode: str, components: list[dict]) -> bool:
    """Whether generation reads an attention_mask (padded prompts): seq2seq exports, and causal
    exports with a key/value cache (the MoE causal LMs). A causal export without a cache (Reformer)
    regenerates over unpadded ids, so it has no mask to take: a request sending one is refused by
    Triton rather than having its mask silently ignored."""
    if mode == "seq2seq":
        return True
    return any(i["name"].startswith(decoding.PAST_PREFIX) for c in components for i in c["inputs"])


def _generation_signature(mode: str, batched: bool, masked: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    lead = [] if batched else [-1]
    inputs = [TensorSpec("input_ids", "int64", lead + [-1])]
    if masked:
        inputs.append(TensorSpec("attention_mask", "int64", lead + [-1], optional=True))
    inputs.append(TensorSpec("max_new_tokens", "int64", lead + [1], optional=True))
    return inputs, [TensorSpec("output_ids", "int64", lead + [-1])]


def _sequence_axes(entry: dict) -> dict[str, list[int]]:
    """Per input, the axes (of the full ORT shape) that count tokens: checked against the limit."""
    out = {}
    for value in entry["inputs"]:
        axes = [i for i, d in enumerate(value["shape"]) if d == SEQUENCE_AXIS]
        if axes:
            out[value["name"]] = axes
    return out


def _generation_parameters(manifest: dict, mode: str, max_new_tokens: int) -> dict[str, str]:
    config = manifest.get("config", {})
    eos = config.get("eos_token_id")
    eos = [] if eos is None else (list(eos) if isinstance(eos, list) else [eos])
    params = {"eos_token_id": json.dumps([int(t) for t in eos]), "max_new_tokens": str(max_new_tokens)}
    if mode == "seq2seq":
        start = config.get("decoder_start_token_id")
        params["decoder_start_token_id"] = str(int(config.get("pad_token_id", 0) if start is None else start))
        params["pad_token_id"] = str(int(config.get("pad_token_id", 0) or 0))
    else:
        pad = config.get("pad_token_id")
        params["pad_token_id"] = "" if pad is None else str(int(pad))
    return params


def _copy(src: Path, dst: Path, written: list[str], root: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    written.append(str(dst.relative_to(root)))


def _copy_onnx(export_dir: Path, entry: dict, dest_dir: Path, written: list[str], root: Path, rename: str | None):
    """The component's ONNX file (as `rename` when given) and its external data under its own name,
    which the ONNX file refers to."""
    files = entry["files"]
    _copy(export_dir / files["model"], dest_dir / (rename or files["model"]), written, root)
    if files.get("external_data"):
        _copy(export_dir / files["external_data"], dest_dir / files["external_data"], written, root)


def _instance_group(config, pb2, instances: int, kind: str) -> None:
    group = config.instance_group.add()
    group.count = instances
    group.kind = pb2.ModelInstanceGroup.KIND_GPU if kind == "gpu" else pb2.ModelInstanceGroup.KIND_CPU


def _add_tensors(config, pb2, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    for t in inputs:
        value = config.input.add()
        value.name, value.dims[:] = t.name, t.dims
        value.data_type = pb2.DataType.Value(_triton_type(t.dtype, f"input '{t.name}'"))
        value.optional = t.optional
    for t in outputs:
        value = config.output.add()
        value.name, value.dims[:] = t.name, t.dims
        value.data_type = pb2.DataType.Value(_triton_type(t.dtype, f"output '{t.name}'"))


def _parameter(config, key: str, value) -> None:
    config.parameters[key].string_value = str(value)


def build_config(
    name: str,
    backend: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    max_batch_size: int,
    instances: int,
    kind: str,
    max_queue_delay_us: int,
    dynamic_batching: bool,
    parameters: dict[str, str] | None = None,
    op_library: str | None = None,
    decoupled: bool = False,
):
    """The ModelConfig message for one model (the one definition config.pbtxt is written from)."""
    pb2 = _model_config_pb2()
    config = pb2.ModelConfig()
    config.name = name
    if backend == "tensorrt":
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
    else:
        config.backend = backend
        if backend == "onnxruntime":
            config.default_model_filename = "model.onnx"
    config.max_batch_size = max_batch_size
    _add_tensors(config, pb2, inputs, outputs)
    _instance_group(config, pb2, instances, kind)
    if dynamic_batching and max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    if op_library:
        config.model_operations.op_library_filename.append(op_library)
    if decoupled:
        config.model_transaction_policy.decoupled = True
    for key, value in (parameters or {}).items():
        _parameter(config, key, value)
    if backend == "onnxruntime" and kind == "gpu":
        # bucketrt's kernels register with ORT's CUDA execution provider; TensorRT's EP does not know them.
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accelerator.name = "cuda"
    return config


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def _engine(manifest: dict, export_dir: Path, component_name: str) -> tuple[Path, dict]:
    engines = manifest.get("engines") or {}
    if component_name not in engines:
        raise BucketrtError(
            f"'{export_dir}' has no TensorRT engine for '{component_name}'",
            f"run `bucketrt build {export_dir}` first (the tensorrt backend serves the engines it records)",
        )
    record = engines[component_name]
    path = Path(record["file"])
    path = path if path.is_absolute() else export_dir / path
    if not path.is_file():
        raise BucketrtError(
            f"the engine {path} recorded in {export_dir}/bucketrt.json is missing", "run `bucketrt build` again"
        )
    return path, record


def _trt_plugins(record: dict) -> Path:

    try:
        return Path(trt_library_path())
    except TrtLibraryNotBuiltError:
        recorded = record.get("plugins")
        if recorded and Path(recorded).is_file():
            return Path(recorded)
        raise


def _engine_batch_limit(record: dict) -> int | None:
    """The largest batch every input of the engine's profile admits."""
    limits = [r["max"][0] for r in (record.get("profile") or {}).values() if r.get("max")]
    return min(limits) if limits else None


def _readme(repository: Path, server_repository: str, entries: list[ModelEntry], plugin_paths: list[str]) -> str:
    lines = [
        "# Triton model repository written by `bucketrt triton`",
        "",
        "Models:",
        "",
    ]
    for e in entries:
        lines.append(f"- `{e.name}`: {e.backend} backend, {e.mode}, batching {e.batching}")
    lines += [
        "",
        "Launch (the Python backend needs numpy and onnxruntime, or onnxruntime-gpu, in the server's Python):",
        "",
        "```sh",
        f"bucketrt serve {repository}",
        f"tritonserver --model-repository={server_repository}"
        + (f" --backend-config=tensorrt,plugins={';'.join(plugin_paths)}" if plugin_paths else ""),
    ]
    if plugin_paths:
        lines.append(f"LD_PRELOAD={':'.join(plugin_paths)} tritonserver --model-repository={server_repository}")
    lines += ["```", ""]
    if plugin_paths:
        lines += [
            "The TensorRT models need bucketrt's plugin library loaded by the server (either line above);",
            "it must be built against the server's TensorRT version.",
            "",
        ]
    return "\n".join(lines)


def write_repository(
    export_dirs,
    repository,
    *,
    name: str | None = None,
    backend: str = "python",
    max_batch_size: int = 8,
    instances: int = 1,
    kind: str = "cpu",
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    overwrite: bool = False,
    intra_op_threads: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    stream: bool = False,
    forward: bool = False,
    component: str | None = None,
    server_repository: str | None = None,
) -> list[ModelEntry]:
    """Writes (or adds to) the Triton model repository `repository`, one model per export folder.

    name: the model's name (one export only; default: the export folder's name). backend: "python"
    (default: numpy + onnxruntime in the server's Python), "onnxruntime" (Triton's ORT backend) or
    "tensorrt" (the engines `bucketrt build` recorded). kind: "cpu" or "gpu" instances (the ORT CUDA
    execution provider for python/onnxruntime). intra_op_threads: ORT's intra-op threads per instance
    (0: ORT's default). max_new_tokens: the generation models' default when a request leaves it out.
    stream: generation models answer in Triton's decoupled mode, one response per step. forward:
    serve a causal-LM export's forward pass (logits) instead of generating. component: serve that one
    component's forward pass (e.g. encoder_model of a seq2seq export). server_repository: the
    repository's path as the server will see it (e.g. /models in a container), for the absolute
    library paths Triton's ORT and TensorRT backends need; default: the repository's own path.

    Refuses (BucketrtError) to replace an existing model folder unless overwrite=True; nothing is
    written for any export unless every export is valid.
    """
    export_dirs = [Path(d) for d in ([export_dirs] if isinstance(export_dirs, (str, Path)) else export_dirs)]
    if not export_dirs:
        raise BucketrtError("no export folder given")
    if backend not in BACKENDS:
        raise BucketrtError(f"backend '{backend}' is not one of {', '.join(BACKENDS)}")
    if kind not in KINDS:
        raise BucketrtError(f"kind '{kind}' is not one of {', '.join(KINDS)}")
    for label, value, low in (
        ("max_batch_size", max_batch_size, 0),
        ("instances", instances, 1),
        ("max_queue_delay_us", max_queue_delay_us, 0),
        ("intra_op_threads", intra_op_threads, 0),
        ("max_new_tokens", max_new_tokens, 0),
    ):
        if not isinstance(value, int) or value < low:
            raise BucketrtError(f"{label} must be an integer >= {low}, got {value!r}")
    if name is not None and len(export_dirs) > 1:
        raise BucketrtError(
            f"--name names one model, and {len(export_dirs)} exports were given", "add them one at a time"
        )
    repository = Path(repository)
    if repository.exists() and not repository.is_dir():
        raise BucketrtError(f"repository '{repository}' exists and is not a folder")
    server_root = server_repository or str(repository.resolve())

    plans = []
    names = set()
    for export_dir in export_dirs:
        manifest = read_manifest(export_dir)
        model_name = _check_name(name if name is not None else _default_name(export_dir))
        if model_name in names:
            raise BucketrtError(f"two exports would both be model '{model_name}'", "add them one at a time with --name")
        names.add(model_name)
        target = repository / model_name
        if target.exists() and not overwrite:
            raise BucketrtError(
                f"the repository already has a model '{model_name}' ({target})", "pass --force to replace it"
            )
        plans.append((export_dir, manifest, model_name, target))
    # Validate every export before writing any.
    prepared = [
        _prepare(
            *plan, backend=backend, max_batch_size=max_batch_size, stream=stream, forward=forward, component=component
        )
        for plan in plans
    ]

    entries, plugin_paths = [], []
    repository.mkdir(parents=True, exist_ok=True)
    for prep in prepared:
        entry = _write_model(
            prep,
            repository=repository,
            server_root=server_root,
            max_batch_size=max_batch_size,
            instances=instances,
            kind=kind,
            max_queue_delay_us=max_queue_delay_us,
            intra_op_threads=intra_op_threads,
            max_new_tokens=max_new_tokens,
            stream=stream,
        )
        entries.append(entry)
        if backend == "tensorrt" and TRT_PLUGINS in entry.files:
            plugin_paths.append(f"{server_root}/{entry.name}/{TRT_PLUGINS}")
    (repository / "README.md").write_text(
        _readme(repository, server_root, _all_entries(repository, entries), plugin_paths)
    )
    return entries


def _all_entries(repository: Path, new: list[ModelEntry]) -> list[ModelEntry]:
    """The models just written plus those already in the repository (from their bucketrt_model.json)."""
    out = {e.name: e for e in new}
    for info in sorted(repository.glob(f"*/{MODEL_INFO}")):
        if info.parent.name in out:
            continue
        try:
            data = json.loads(info.read_text())
            out[data["name"]] = ModelEntry(
                data["name"], info.parent, data["backend"], data["mode"], [], [], data["batching"]
            )
        except (ValueError, KeyError):
            continue
    return [out[k] for k in sorted(out)]


MODEL_INFO = "bucketrt_model.json"  # what bucketrt wrote, beside config.pbtxt (Triton ignores it)


@dataclass
class _Prepared:
    export_dir: Path
    manifest: dict
    name: str
    target: Path
    backend: str
    mode: str
    batching: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    components: list[dict]
    engine: tuple[Path, dict] | None = None


def _prepare(export_dir, manifest, name, target, *, backend, max_batch_size, stream, forward, component) -> _Prepared:
    components = manifest["components"]
    if component is not None:
        components = [manifest_component(manifest, component)]
    mode = None if (forward or component is not None) else _generation_mode(manifest)
    if mode is None and len(components) != 1:
        raise BucketrtError(
            f"'{export_dir}' has {len(components)} components ({', '.join(c['name'] for c in components)}) "
            f"and task '{manifest.get('task')}', which bucketrt triton cannot serve as one model",
            "serve one of them with --component, or export a single-component task (e.g. "
            "feature-extraction-encoder) or text2text-generation",
        )
    if mode is not None and backend != "python":
        raise BucketrtError(
            f"'{export_dir}' is a generation export ({manifest.get('task')}); the {backend} backend runs one "
            "forward pass and cannot run the decoding loop",
            "use --backend python (the default)" + ("" if mode == "seq2seq" else ", or --forward to serve its logits"),
        )
    if stream and mode is None:
        raise BucketrtError("--stream streams generated tokens, and this export is not a generation export")
    batched = max_batch_size > 0
    # Whether a request's answer is bit-identical inside a same-shape batch and alone, so that
    # same-shape requests may share one ORT call: the family's answer, recorded at export
    # (Family.batch_rows_independent). A manifest without the field (an export made before bucketrt
    # recorded it) runs each request alone, whatever its family: batching never changes an answer.
    row_independent = manifest.get("batch_rows_independent") is True
    batching = "same_shape" if (mode is None and row_independent and batched) else "per_request"
    if mode is None:
        inputs, outputs = _signature(components[0], batched)
    else:
        inputs, outputs = _generation_signature(mode, batched, _generation_takes_mask(mode, components))
    engine = None
    if backend == "tensorrt":
        engine = _engine(manifest, Path(export_dir), components[0]["name"])
        limit = _engine_batch_limit(engine[1])
        if limit is not None and max_batch_size > limit:
            raise BucketrtError(
                f"the engine of '{export_dir}' takes batches up to {limit}, and --max-batch-size is {max_batch_size}",
                f"pass --max-batch-size {limit}, or rebuild with larger --max-shapes",
            )
        record = engine[1]
        if record.get("product", TENSORRT.name) != TENSORRT.name:
            raise BucketrtError(
                f"the engine of '{export_dir}' was built with {record['product']}, and Triton's tensorrt backend "
                "runs TensorRT engines",
                "serve the ONNX file with --backend onnxruntime, or build the engine with TensorRT",
            )
        if record.get("plugins") or needs_op_library(manifest):
            _trt_plugins(record)  # a missing plugin library fails before anything is written
    if backend in ("python", "onnxruntime") and needs_op_library(manifest):
        library_path()
    return _Prepared(
        Path(export_dir),
        manifest,
        name,
        Path(target),
        backend,
        mode or "forward",
        batching,
        inputs,
        outputs,
        components,
        engine,
    )


def _write_model(
    prep: _Prepared,
    *,
    repository: Path,
    server_root: str,
    max_batch_size: int,
    instances: int,
    kind: str,
    max_queue_delay_us: int,
    intra_op_threads: int,
    max_new_tokens: int,
    stream: bool,
) -> ModelEntry:
    if prep.target.exists():
        shutil.rmtree(prep.target)
    version_dir = prep.target / VERSION
    version_dir.mkdir(parents=True)
    written: list[str] = []
    parameters: dict[str, str] = {}
    op_library = None
    needs_library = needs_op_library(prep.manifest)
    if prep.backend == "python":
        for component in prep.components:
            _copy_onnx(prep.export_dir, component, version_dir, written, prep.target, None)
        if needs_library:
            _copy(Path(library_path()), version_dir / OP_LIBRARY, written, prep.target)
        _copy(TEMPLATES / "model.py", version_dir / "model.py", written, prep.target)
        # The one decoding loop (numpy-only), imported by model.py from beside itself.
        _copy(Path(decoding.__file__), version_dir / "decoding.py", written, prep.target)
        limit = max_sequence_length(prep.manifest)
        parameters.update(
            {
                "mode": prep.mode,
                "batching": prep.batching,
                "models": json.dumps({c["name"]: c["files"]["model"] for c in prep.components}),
                "op_library": OP_LIBRARY if needs_library else "",
                "execution_provider": "cuda" if kind == "gpu" else "cpu",
                "intra_op_threads": str(intra_op_threads),
                "max_sequence_length": "" if limit is None else str(limit),
                "sequence_axes": json.dumps(_sequence_axes(prep.components[0]) if prep.mode == "forward" else {}),
                "numpy_path": "auto",
            }
        )
        if prep.mode != "forward":
            parameters.update(_generation_parameters(prep.manifest, prep.mode, max_new_tokens))
    elif prep.backend == "onnxruntime":
        _copy_onnx(prep.export_dir, prep.components[0], version_dir, written, prep.target, "model.onnx")
        if needs_library:  # else the config names no op library: the server needs none
            _copy(Path(library_path()), prep.target / OP_LIBRARY, written, prep.target)
            op_library = f"{server_root}/{prep.name}/{OP_LIBRARY}"
        if intra_op_threads:
            parameters["intra_op_thread_count"] = str(intra_op_threads)
    else:
        engine_path, record = prep.engine
        _copy(engine_path, version_dir / "model.plan", written, prep.target)
        if record.get("plugins") or needs_library:  # an engine of a standard-op export has no plugin layer
            _copy(_trt_plugins(record), prep.target / TRT_PLUGINS, written, prep.target)
    config = build_config(
        prep.name,
        prep.backend,
        prep.inputs,
        prep.outputs,
        max_batch_size=max_batch_size,
        instances=instances,
        kind=kind,
        max_queue_delay_us=max_queue_delay_us,
        dynamic_batching=prep.batching == "same_shape",
        parameters=parameters,
        op_library=op_library,
        decoupled=stream,
    )
    (prep.target / "config.pbtxt").write_text(config_text(config))
    written.append("config.pbtxt")
    entry = ModelEntry(
        prep.name,
        prep.target,
        prep.backend,
        prep.mode,
        prep.inputs,
        prep.outputs,
        prep.batching,
        prep.export_dir,
        written,
    )
    info = dict(entry.to_json(), export_dir=str(prep.export_dir.resolve()), path=prep.name)
    (prep.target / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return entry
