"""`export`: a model of any family (a preset, a save_pretrained folder or a hub id) ->
OUTPUT_DIR/NAME.onnx, one per component of its family, + bucketrt.json and the files a deployment
reads beside them (config, generation config, tokenizer)."""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

import torch

from bucketrt.errors import BucketrtError
from bucketrt.export_format import manifest as mf
from bucketrt.export_format.tasks import GENERATION_TASKS
from bucketrt.ops.catalogue import BY_NAME
from bucketrt.ops.schema import DOMAIN

from .family import Component
from .logits_to_keep import add_logits_to_keep
from .overrides import parse_key_values
from .preparation import prepare
from .progress import Progress, quiet_torch_export
from .rms_norm import divide_by_root
from .sources import TOKENIZER_FILES, resolve_source

CONFIG_NAME, GENERATION_CONFIG_NAME = "config.json", "generation_config.json"

# Opset 20 has Gelu, which ONNX Runtime fuses with the preceding bias (at 18 the exporter spells
# GELU out in Erf arithmetic that stays unfused: ~2% of yoso-4096's time). Opsets 18 to 22 all keep
# IR version 10, the newest that every ONNX Runtime we support loads.
DEFAULT_OPSET = 20
SUPPORTED_OPSETS = range(18, 23)
MAX_IR_VERSION = 10
# A protobuf cannot exceed 2 GiB; leave room for the graph itself.
_EXTERNAL_DATA_BYTES = 1_900_000_000
# Element type of the exported graph's floats (weights, activations, float inputs and outputs).
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# How the graph computes bucketrt's ops: "bucketrt", as bucketrt::<Op> nodes (run by bucketrt's op
# library or TensorRT plugins); "standard", as each op's standard-op lowering (bucketrt.ops.lowering):
# standard ONNX ops only, which any ONNX runtime runs without bucketrt's library.
OP_SETS = ("bucketrt", "standard")


def _option_example() -> str:
    """An --option example for error messages: the first option a family gives a flag."""
    from .family import option_flags

    return next((f"{option}=true" for option in option_flags()), "KEY=VALUE")


def _check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BucketrtError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


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


def _fp16_ready(spec) -> bool:
    """Whether an op takes float16 (its spec's `float_types`: the ops whose kernels, CPU and CUDA,
    take float16 inputs). Ops still float32-only make an fp16 export of a model using them refuse."""
    return "float16" in spec.float_types


def _ops_called(components: list[Component]) -> list[str]:
    """The bucketrt ops the components call, from one eager run on their (small) example inputs."""
    from bucketrt.ops.dispatch import intercept

    seen: dict[str, None] = {}

    def record(spec, inputs, attrs, result):
        seen.setdefault(spec.name)
        return result

    with torch.no_grad(), intercept(record):
        for component in components:
            component.module(**component.example_inputs)  # the module's own keyword arguments
    return list(seen)


def _check_lowerings(components: list[Component]) -> None:
    """Refuses a standard-op export, before any tracing, when an op the model calls has no lowering."""
    from bucketrt.ops.lowering import LOWERINGS

    waiting = [name for name in _ops_called(components) if name not in LOWERINGS]
    if waiting:
        raise BucketrtError(
            f"--ops standard: no standard-op lowering of {', '.join(waiting)} in this bucketrt",
            "export with --ops bucketrt (the default)",
        )


def _half(value):
    """Float tensors to float16, through tuples and lists (e.g. past key/values); the rest as is."""
    if isinstance(value, torch.Tensor):
        return value.half() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_half(v) for v in value)
    return value


def _cast_to_half(components: list[Component]) -> None:
    """Weights and float example inputs to float16, in place (the int ids and masks stay)."""
    for component in components:
        component.module.half()
        component.example_inputs = {name: _half(value) for name, value in component.example_inputs.items()}


def _trace(component: Component, opset: int, source, op_set: str = "bucketrt"):
    """The component traced by torch.onnx (dynamo), as an onnx_ir model; under op_set "standard"
    each bucketrt op is traced as its standard-op lowering instead of a bucketrt node."""
    from bucketrt.ops.dispatch import standard_ops

    lowered = standard_ops() if op_set == "standard" else contextlib.nullcontext()
    try:
        with torch.no_grad(), quiet_torch_export(), lowered:
            program = torch.onnx.export(
                component.module,
                (),
                kwargs=component.example_inputs,
                dynamo=True,
                dynamic_shapes=component.dynamic_shapes,
                input_names=list(component.input_names),
                output_names=list(component.output_names),
                opset_version=opset,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except BucketrtError:
        raise
    except Exception as e:
        # A family's refusal raised while tracing (torch.onnx wraps it): the refusal, as it was raised.
        cause, seen = e, set()
        while cause is not None and not isinstance(cause, BucketrtError) and id(cause) not in seen:
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        cause = cause if isinstance(cause, BucketrtError) else None
        if cause is not None:
            raise cause from None
        raise RuntimeError(f"torch.onnx.export failed for {source.describe()} ({component.name}): {e}") from e
    narrowed = narrowed_dims(program.exported_program, component)
    if narrowed:
        raise BucketrtError(
            f"torch.onnx.export narrowed the dynamic shapes of {source.describe()} ({component.name}): "
            + "; ".join(narrowed),
            "the model branches on a size in Python; the graph would fail outside that range, so it is not written",
        )
    _finalize(program.model, MAX_IR_VERSION)
    divide_by_root(program.model)
    _name_output_dims(program.model, component.output_dims)
    _name_output_nodes(program.model, component.output_nodes)
    if component.logits_to_keep:
        add_logits_to_keep(program.model)
    return program.model


def _name_output_dims(model, names: dict) -> None:
    """Renames the symbolic dims of graph outputs: {output: {axis: name}}."""
    import onnx_ir as ir

    for value in model.graph.outputs:
        axes = names.get(value.name)
        if axes and value.shape is not None:
            value.shape = ir.Shape([axes.get(axis, dim) for axis, dim in enumerate(value.shape)])


def _name_output_nodes(model, names: dict) -> None:
    """Renames the nodes that make graph outputs: {output: node name}."""
    for value in model.graph.outputs:
        if value.name in names:
            value.producer().name = names[value.name]


def narrowed_dims(exported_program, component: Component) -> list[str]:
    """The dynamic dims of `component` that the traced program no longer takes over their whole
    declared range ("INPUT dim AXIS (NAME): ..."): specialised to the example's size, or given a
    narrower range. torch.onnx.export does this silently where torch.export reports a constraint
    violation (it retries with the shapes the violation suggests), and the graph then fails at
    run time outside the example's range (a first decoding step with an empty past, say)."""
    import torch.utils._pytree as pytree
    from torch.export.graph_signature import InputKind

    if exported_program is None:
        return []
    values = {node.name: node.meta.get("val") for node in exported_program.graph.nodes if node.op == "placeholder"}
    user = [
        values[spec.arg.name]
        for spec in exported_program.graph_signature.input_specs
        if spec.kind == InputKind.USER_INPUT
    ]
    _, kwargs = pytree.tree_unflatten(user, exported_program.call_spec.in_spec)
    ranges = exported_program.range_constraints
    found = []
    for name, spec in component.dynamic_shapes.items():
        given = kwargs.get(name)
        if isinstance(spec, dict):  # one tensor's {axis: Dim}
            pairs = [(name, given, spec)]
        else:  # a tuple of tensors (past key/values), one {axis: Dim} each
            pairs = [(f"{name}[{i}]", t, s) for i, (t, s) in enumerate(zip(given or (), spec))]
        for label, tensor, axes in pairs:
            if tensor is None or not axes:
                continue
            for axis, dim in axes.items():
                size = tensor.shape[axis]
                what = f"{label} dim {axis} ({getattr(dim, '__name__', dim)})"
                if isinstance(size, int):
                    found.append(f"{what} fixed to {size}")
                    continue
                bounds = ranges.get(size.node.expr)
                if bounds is None:
                    found.append(f"{what} became {size.node.expr}")
                elif bounds.lower > dim.min or bounds.upper < dim.max:
                    found.append(f"{what} takes [{bounds.lower}, {bounds.upper}], declared [{dim.min}, {dim.max}]")
    return found


def export(
    model: str,
    output_dir,
    task: str | None = None,
    seed: int = 0,
    opset: int | None = None,
    config_overrides=None,
    options=None,
    progress: Progress | None = None,
    dtype: str = "fp32",
    ops: str = "bucketrt",
) -> dict:
    """Exports `model` (a preset, a save_pretrained folder or a hub id) to ONNX; returns the manifest.

    Writes one NAME.onnx per component of the model's family (model.onnx for encoder-only models;
    NAME.onnx.data beside it above 2 GB) and OUTPUT_DIR/bucketrt.json. `config_overrides` change the
    model's config before it is built; `options` are the family's export options (e.g. YOSO's
    mask_padding); each a dict or KEY=VALUE strings (JSON values). `dtype` "fp16" exports weights, activations and float
    inputs/outputs in float16 (the precision TensorRT 11 takes from the graph); the PyTorch
    reference stays float32. `ops` "standard" writes each bucketrt op as its standard-op lowering
    (bucketrt.ops.lowering): graphs of standard ONNX ops only, which need no bucketrt op library
    (the manifest's "op_set"). Raises BucketrtError for anything the caller can fix.
    """
    progress = progress or Progress()
    started = time.perf_counter()
    options = parse_key_values(options, "options", "--option", _option_example())
    if dtype not in DTYPES:
        raise BucketrtError(f"dtype '{dtype}' is not supported", f"choose one of: {', '.join(DTYPES)}")
    if ops not in OP_SETS:
        raise BucketrtError(f"ops '{ops}' is not supported", f"choose one of: {', '.join(OP_SETS)}")
    seed = _check_int("seed", seed)
    opset = DEFAULT_OPSET if opset is None else _check_int("opset", opset)
    if opset not in SUPPORTED_OPSETS:
        raise BucketrtError(
            f"opset {opset} is not supported",
            f"choose {SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})",
        )
    overrides = parse_key_values(config_overrides, "config_overrides", "config override", "num_hash=8")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise BucketrtError(f"output '{output_dir}' exists and is not a folder")

    with progress.stage(f"Loading {model}"):
        prepared = prepare(resolve_source(model), task=task, seed=seed, overrides=overrides, options=options)
        source, family, task_spec, hf_model = prepared.source, prepared.family, prepared.task, prepared.model
        weights_sha256 = prepared.weights_sha256
        # config.json as exported: the overrides applied, the architecture the exported head.
        exported_config = copy.deepcopy(hf_model.config)
        exported_config.architectures = [task_spec.model_class]
        generation_config = hf_model.generation_config if task_spec.name in GENERATION_TASKS else None

    with progress.stage(f"Patching {family.name} for bucketrt ops"):
        patch = prepared.patch()
        components = patch.components
        max_sequence_length = family.max_length(hf_model.config.to_dict())
        if ops == "standard":
            _check_lowerings(components)

    if dtype == "fp16":
        with progress.stage("Casting to fp16"):
            # Refused before any tracing: the ops would be typed float32 inside a float16 graph.
            waiting = [name for name in _ops_called(components) if not _fp16_ready(BY_NAME[name])]
            if waiting:
                raise BucketrtError(
                    f"fp16 needs the ops' fp16 kernels; float32 only in this bucketrt: {', '.join(waiting)}",
                    "export with --dtype fp32 (TensorRT 10 can still run its own layers in fp16: bucketrt build --fp16)",
                )
            _cast_to_half(components)

    traced = []
    for component in components:
        label = "" if len(components) == 1 else f" {component.name}"
        with progress.stage(f"Tracing{label} with torch.onnx (opset {opset})"):
            traced.append((component, _trace(component, opset, source, ops)))

    import onnx
    import onnx_ir

    output_dir.mkdir(parents=True, exist_ok=True)
    # A manifest beside half-written models would describe the previous export.
    (output_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)
    external = _param_bytes(hf_model) > _EXTERNAL_DATA_BYTES
    entries, ops_used = [], {}
    for component, ir_model in traced:
        model_path = output_dir / component.file_name
        data_name = component.file_name + ".data"
        with progress.stage(f"Saving {model_path}"):
            (output_dir / data_name).unlink(missing_ok=True)
            ir_model.metadata_props.update(
                {
                    "bucketrt.version": mf.versions()["bucketrt"] or "unknown",
                    "bucketrt.task": task_spec.name,
                    "bucketrt.component": component.name,
                    "bucketrt.mode": patch.mode,
                    "bucketrt.source": source.ref,
                    "bucketrt.dtype": dtype,
                    "bucketrt.op_set": ops,
                }
            )
            onnx_ir.save(ir_model, model_path, external_data=data_name if external else None)
            _check_onnx(model_path)
            proto = onnx.load(str(model_path), load_external_data=False)
            graph_inputs, graph_outputs = mf.graph_signature(proto)
            optional_inputs = mf.optional_inputs(proto)
            ir_version = proto.ir_version
            for op in mf.custom_ops(proto, DOMAIN):
                known = ops_used.setdefault(op["name"], {**op, "nodes": 0})
                known["nodes"] += op["nodes"]
        if ops == "standard" and ops_used:
            raise RuntimeError(f"the standard-op export of {component.name} has bucketrt nodes: {sorted(ops_used)}")
        entries.append(
            {
                "name": component.name,
                "files": {"model": component.file_name, "external_data": data_name if external else None},
                "inputs": graph_inputs,
                "outputs": graph_outputs,
                **({"optional_inputs": optional_inputs} if optional_inputs else {}),
            }
        )

    manifest = {
        "format": mf.FORMAT_VERSION,
        "family": family.name,
        "model_type": hf_model.config.model_type,
        "task": task_spec.name,
        "model_class": task_spec.model_class,
        "source": source.ref,
        "source_kind": source.kind,
        "revision": source.revision,
        "seed": seed,
        "opset": opset,
        "ir_version": ir_version,
        "dtype": dtype,
        # "standard": the ops as standard ONNX ops (their lowerings); `ops` below is then empty, and
        # the export needs no bucketrt op library (manifest.needs_op_library).
        "op_set": ops,
        "max_sequence_length": max_sequence_length,
        "config_overrides": overrides,
        "options": prepared.options,
        # Whether serving may run same-shape requests in one call (the family's answer).
        "batch_rows_independent": family.batch_rows_independent,
        "mode": patch.mode,
        **patch.manifest,
        "patch_sha256": patch.sha256,
        "ops": [ops_used[name] for name in sorted(ops_used)],
        "weights_sha256": weights_sha256,
        "components": entries,
        "config": {
            key: value
            for key, value in hf_model.config.to_dict().items()
            if key not in ("_name_or_path", "transformers_version", "id2label", "label2id")
        }
        | {"num_labels": hf_model.config.num_labels},
        "versions": mf.versions(),
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    # What a deployment reads beside the graphs (bucketrt.runtime, transformers' pipelines): the
    # config, the generation defaults and the tokenizer; stale ones from an earlier export go first.
    for name in (CONFIG_NAME, GENERATION_CONFIG_NAME, *TOKENIZER_FILES):
        (output_dir / name).unlink(missing_ok=True)
    exported_config.save_pretrained(output_dir)
    if generation_config is not None:
        generation_config.save_pretrained(output_dir)
    tokenizer_files, no_tokenizer = source.save_tokenizer(output_dir)
    manifest["files"] = {
        "config": CONFIG_NAME,
        "generation_config": GENERATION_CONFIG_NAME if generation_config is not None else None,
        "tokenizer": tokenizer_files,
    }
    manifest["no_tokenizer"] = no_tokenizer
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    mf.write_manifest(output_dir, manifest)
    return manifest
