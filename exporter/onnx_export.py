"""`export`: a YOSO model -> OUTPUT_DIR/model.onnx + bucketrt.json."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from bucketrt.ops import DOMAIN

from . import manifest as mf
from .errors import BucketrtError
from .overrides import parse_overrides
from .progress import Progress, quiet_torch_export
from .sources import build_model, load_config, resolve_source
from .tasks import BATCH, CHOICES, SEQUENCE, Task, get_task, infer_task
from .yoso import fingerprint, patch_model

# Opset 20 has Gelu, which ONNX Runtime fuses with the preceding bias (at 18 the exporter spells
# GELU out in Erf arithmetic that stays unfused: ~2% of yoso-4096's time). Opsets 18 to 22 all keep
# IR version 10, the newest that every ONNX Runtime we support loads.
DEFAULT_OPSET = 20
SUPPORTED_OPSETS = range(18, 23)
MAX_IR_VERSION = 10
# A protobuf cannot exceed 2 GiB; leave room for the graph itself.
_EXTERNAL_DATA_BYTES = 1_900_000_000

# Example sizes for tracing: distinct and above 1, so that the exporter keeps every axis symbolic.
_EXAMPLE_BATCH, _EXAMPLE_CHOICES, _EXAMPLE_SEQUENCE = 2, 3, 13


def normalize_overrides(config_overrides) -> dict:
    if config_overrides is None:
        return {}
    if isinstance(config_overrides, Mapping):
        return dict(config_overrides)
    if isinstance(config_overrides, str):
        return parse_overrides([config_overrides])
    if isinstance(config_overrides, Iterable):
        return parse_overrides(list(config_overrides))
    raise BucketrtError(f"config_overrides must be a dict or KEY=VALUE strings, got {type(config_overrides).__name__}")


def _check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BucketrtError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def example_inputs(task: Task, input_names, config) -> dict[str, torch.Tensor]:
    """Tracing inputs: int64 like Optimum, random ids in the vocabulary, masks of ones."""
    sequence = max(2, min(_EXAMPLE_SEQUENCE, config.max_position_embeddings))
    shape = (_EXAMPLE_BATCH, _EXAMPLE_CHOICES, sequence) if task.multiple_choice else (_EXAMPLE_BATCH, sequence)
    generator = torch.Generator().manual_seed(0)
    out = {"input_ids": torch.randint(0, config.vocab_size, shape, generator=generator, dtype=torch.int64)}
    out["attention_mask"] = torch.ones(shape, dtype=torch.int64)
    if "token_type_ids" in input_names:
        out["token_type_ids"] = torch.zeros(shape, dtype=torch.int64)
    return out


def dynamic_shapes(task: Task, input_names, config) -> dict:
    from torch.export import Dim

    dims = {
        BATCH: Dim(BATCH),
        CHOICES: Dim(CHOICES),
        SEQUENCE: Dim(SEQUENCE, max=config.max_position_embeddings),
    }
    return {name: {axis: dims[sym] for axis, sym in enumerate(task.input_dims)} for name in input_names}


class _TaskOutputs(torch.nn.Module):
    """Calls the HF model with keyword inputs and returns the task's outputs as a tuple."""

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        result = self.model(**kwargs, return_dict=True)
        return tuple(result[name] for name in self.outputs)


def _param_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def _finalize(ir_model, ir_limit: int) -> None:
    """IR version capped for ONNX Runtime; node metadata (torch stack traces, local paths) dropped."""
    if ir_model.ir_version > ir_limit:
        ir_model.ir_version = ir_limit
    for graph in ir_model.graphs():
        for node in graph:
            node.metadata_props.clear()
        for value in [*graph.inputs, *graph.outputs, *graph.initializers.values()]:
            value.metadata_props.clear()
    for function in ir_model.functions.values():
        for node in function:
            node.metadata_props.clear()


def _check_onnx(path: Path) -> None:
    import onnx

    try:
        # A path lets the checker follow external data and models above 2 GiB. Ops of the bucketrt
        # domain have no ONNX schema: the checker accepts them because the model imports the domain,
        # and full_check's shape inference leaves their outputs as the exporter typed them.
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise RuntimeError(f"the exported model fails onnx.checker: {e}") from e


def export(
    model: str,
    output_dir,
    task: str | None = None,
    seed: int = 0,
    opset: int | None = None,
    config_overrides=None,
    mask_padding: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Exports `model` (a preset, a save_pretrained folder or a hub id) to ONNX; returns the manifest.

    Writes OUTPUT_DIR/model.onnx (with model.onnx.data beside it above 2 GB) and
    OUTPUT_DIR/bucketrt.json. Raises BucketrtError for anything the caller can fix.
    """
    progress = progress or Progress()
    started = time.perf_counter()
    seed = _check_int("seed", seed)
    opset = DEFAULT_OPSET if opset is None else _check_int("opset", opset)
    if opset not in SUPPORTED_OPSETS:
        raise BucketrtError(
            f"opset {opset} is not supported",
            f"choose {SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})",
        )
    overrides = normalize_overrides(config_overrides)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise BucketrtError(f"output '{output_dir}' exists and is not a folder")

    with progress.stage(f"Loading {model}"):
        source = resolve_source(model)
        config, source = load_config(source, overrides)
        task_name = task or infer_task(config)
        task_spec = get_task(task_name)
        hf_model = build_model(source, config, task_spec, seed)
        weights_sha256 = fingerprint(sorted(hf_model.state_dict().items()))

    with progress.stage("Patching YOSO attention"):
        info = patch_model(hf_model, seed, mask_padding)
        input_names = task_spec.input_names(hf_model.config)
        module = _TaskOutputs(hf_model, task_spec.outputs).eval()
        inputs = example_inputs(task_spec, input_names, hf_model.config)

    with progress.stage(f"Tracing with torch.onnx (opset {opset})"):
        try:
            with torch.no_grad(), quiet_torch_export():
                program = torch.onnx.export(
                    module,
                    (),
                    kwargs=inputs,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes(task_spec, input_names, hf_model.config),
                    input_names=list(input_names),
                    output_names=list(task_spec.outputs),
                    opset_version=opset,
                    external_data=False,
                    optimize=True,
                    verbose=False,
                )
        except Exception as e:
            raise RuntimeError(f"torch.onnx.export failed for {source.describe()}: {e}") from e
        _finalize(program.model, MAX_IR_VERSION)

    with progress.stage(f"Saving {output_dir / mf.MODEL_NAME}"):
        import onnx
        import onnx_ir

        output_dir.mkdir(parents=True, exist_ok=True)
        model_path = output_dir / mf.MODEL_NAME
        data_name = mf.MODEL_NAME + ".data"
        # A manifest beside a half-written model would describe the previous export.
        (output_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)
        (output_dir / data_name).unlink(missing_ok=True)
        program.model.metadata_props.update(
            {
                "bucketrt.version": mf.versions()["bucketrt"] or "unknown",
                "bucketrt.task": task_spec.name,
                "bucketrt.mode": info.mode,
                "bucketrt.source": source.ref,
            }
        )
        external = _param_bytes(hf_model) > _EXTERNAL_DATA_BYTES
        onnx_ir.save(program.model, model_path, external_data=data_name if external else None)
        _check_onnx(model_path)
        proto = onnx.load(str(model_path), load_external_data=False)
        graph_inputs, graph_outputs = mf.graph_signature(proto)
        ops_used = mf.custom_ops(proto, DOMAIN)

    manifest = {
        "format": mf.FORMAT_VERSION,
        "model_type": hf_model.config.model_type,
        "task": task_spec.name,
        "model_class": task_spec.model_class,
        "source": source.ref,
        "source_kind": source.kind,
        "revision": source.revision,
        "seed": seed,
        "opset": opset,
        "ir_version": proto.ir_version,
        "config_overrides": overrides,
        "mode": info.mode,
        "mask_padding": bool(mask_padding),
        "ops": ops_used,
        "projections": None
        if info.mode != "lsh"
        else {
            "transform": info.transform,
            "shape_per_layer": list(info.projection_shape),
            "layers": info.layers,
            "hash_dim": info.hash_dim,
            "sampling": "torch.Generator('cpu').manual_seed(seed); layer by layer; hadamard: "
            "randint(0, 2) * 2 - 1, gaussian: randn",
            "sha256": info.projections_sha256,
        },
        "weights_sha256": weights_sha256,
        "inputs": graph_inputs,
        "outputs": graph_outputs,
        "files": {"model": mf.MODEL_NAME, "external_data": data_name if external else None},
        "config": {
            key: value
            for key, value in hf_model.config.to_dict().items()
            if key not in ("_name_or_path", "transformers_version", "id2label", "label2id")
        }
        | {"num_labels": hf_model.config.num_labels},
        "versions": mf.versions(),
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    mf.write_manifest(output_dir, manifest)
    return manifest
