"""An export's backend outputs against its PyTorch reference, as a library (`bucketrt check`).

    from bucketrt.check import check
    report = check("out/yoso", backend="ort", batch_size=2, sequence_length=512)
    assert report.passed, report.to_json()
    report.components[0].outputs[0].max_abs     # per component and output: shape, errors, verdict

Every backend (ONNX Runtime, TensorRT, OpenVINO) goes through the same steps and the same verdict: random
inputs from the model's family, the backend's outputs (and, for models that hash, its hash
codes), the reference run on those codes, Polygraphy's comparator on every output. Only how a
backend runs differs. The package, one concern a module:

    report.py      the report: per output, per component, per export; JSON
    rule.py        the comparison rule (Polygraphy's element-wise one), the quantized criteria
    backends.py    how ONNX Runtime, TensorRT and OpenVINO run a component (each graph parsed once)
    codes.py       the alignment of hash codes and routes between a backend and PyTorch
    generation.py  greedy tokens of the export against the reference's (quantized exports)
    __init__.py    `check()`: the steps, in order

A quantized export (`bucketrt quantize`) fails the element-wise rule by design, so it is judged by
criteria that fit quantization instead (`quantized_metrics`; defaults in its manifest, from
bucketrt.quantization.CHECK_CRITERIA): per output, cosine similarity and relative L2 error; per
logits output, the share of argmax answers that agree; for generation, the share of greedy tokens
that agree; for models that hash, the share of hash codes quantization flipped. The element-wise
statistics are still reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from bucketrt.errors import BackendRunError, BucketrtError
from bucketrt.export_format.manifest import max_sequence_length

from .backends import BACKENDS, BackendRun, OpenVinoBackend, OrtBackend, TrtBackend, _say
from .generation import compare_generation
from .report import (
    CheckReport,
    ComponentReport,
    GenerationResult,
    HashAudit,
    LayerRouting,
    OutputResult,
    RoutingResult,
)
from .rule import TOLERANCES, compare, mismatched_elements, quantized_metrics


def typed_feeds(entry: dict, feeds: dict) -> tuple[dict, dict]:
    """(backend feeds in the graph's input dtypes, the same values for the float32 reference)."""
    import numpy as np

    dtypes = {spec["name"]: spec.get("dtype") for spec in entry["inputs"]}
    backend, reference = {}, {}
    for name, value in feeds.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and dtypes.get(name) in ("float16", "float32"):
            value = value.astype(dtypes[name])
            reference[name] = value.astype(np.float32)
        else:
            reference[name] = value
        backend[name] = value
    return backend, reference


def check(
    export_dir,
    backend: str = "ort",
    batch_size: int = 2,
    sequence_length: int = 128,
    num_choices: int = 2,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    plugins=None,
    rebuild: bool = False,
    verbose: bool = False,
    console=None,
    on_component: Callable[[CheckReport, ComponentReport], None] | None = None,
    criteria: dict | None = None,
) -> CheckReport:
    """Runs every ONNX file of `export_dir` in `backend` ("ort", "trt" or "openvino": standard-op
    exports only) and its PyTorch reference
    on the same random inputs, and compares every output; returns the report (`report.passed`).

    `atol`/`rtol` default by precision (TOLERANCES). A quantized export is judged by the criteria
    its manifest records (bucketrt.quantization.CHECK_CRITERIA), each overridden by `criteria`
    (min_cosine, max_rel_l2, min_agreement, generate_tokens, max_code_flips); atol/rtol then only
    count mismatched elements. `sequence_length` is clamped to the export's
    longest sequence. `plugins` and `rebuild` are for "trt": the plugin library (default: the one
    built with bucketrt), and check engines built from the ONNX files even where `bucketrt build`
    recorded engines. `console` (a rich Console) gets progress lines; `on_component` each
    component's result as it completes.

    Raises BucketrtError for usage problems (exit status 2 in the CLI), BackendRunError when the
    backend cannot run a model and BuildError when TensorRT cannot build one (1).
    """
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_reference

    _check_usage(backend, rebuild, plugins, batch_size, sequence_length, num_choices)
    manifest = read_manifest(export_dir)
    criteria = _criteria(manifest, export_dir, backend, criteria)
    limit = max_sequence_length(manifest)
    length = min(sequence_length, limit) if limit else sequence_length
    if length != sequence_length:
        _say(console, f"[yellow]sequence length {sequence_length} clamped to {limit}, the export's longest sequence[/]")
    if backend == "trt":
        runner = TrtBackend(export_dir, manifest, console, plugins, rebuild, verbose)
    elif backend == "openvino":
        runner = OpenVinoBackend(export_dir, manifest, console)
    else:
        runner = OrtBackend(export_dir, manifest, console)
    precision, reason = runner.precision()
    default_atol, default_rtol, margin = TOLERANCES[precision]
    report = CheckReport(
        export_dir=str(export_dir),
        backend=backend,
        backend_label=runner.label,
        source=manifest["source"],
        task=manifest["task"],
        mode=manifest["mode"],
        seed=seed,
        batch_size=batch_size,
        sequence_length=length,
        requested_sequence_length=sequence_length,
        sequence_limit=limit,
        atol=default_atol if atol is None else atol,
        rtol=default_rtol if rtol is None else rtol,
        precision=precision,
        precision_reason=reason,
        component_names=[e["name"] for e in manifest["components"]],
        criteria=criteria,
    )
    _say_tolerances(console, report, default_atol, default_rtol)
    with _status(console, "Rebuilding the PyTorch reference…"):
        reference = load_reference(export_dir, manifest=manifest)  # the manifest is read once per check
    run = _Check(export_dir, manifest, runner, reference, report, margin, num_choices, verbose, console)
    for entry in manifest["components"]:
        component = _check_component(run, entry)
        report.components.append(component)
        if on_component is not None:
            on_component(report, component)
    report.generation = _generation(run)
    return report


# --------------------------------------------------------------------------------------------
# before any work: usage and criteria
# --------------------------------------------------------------------------------------------


def _check_usage(backend: str, rebuild: bool, plugins, batch_size: int, sequence_length: int, num_choices: int):
    if backend not in BACKENDS:
        raise BucketrtError(f"unknown backend {backend!r}", f"choose one of: {', '.join(BACKENDS)}")
    if backend != "trt" and (rebuild or plugins is not None):
        raise BucketrtError(f"{'--rebuild' if rebuild else '--plugins'} applies to --backend trt only")
    for name, value in (("batch size", batch_size), ("sequence length", sequence_length), ("num choices", num_choices)):
        if value < 1:
            raise BucketrtError(f"the {name} must be at least 1, got {value}")


def _criteria(manifest: dict, export_dir, backend: str, criteria: dict | None) -> dict | None:
    """A quantized export's criteria: CHECK_CRITERIA, overridden by its manifest's, then by
    `criteria`. Any other export: `criteria` as given, which must be empty."""
    quantized = manifest.get("quantization")
    if criteria and not quantized:
        raise BucketrtError(
            f"{', '.join(sorted(criteria))} apply to quantized exports; '{export_dir}' is not one",
            "compare fp32 and fp16 exports with --atol/--rtol",
        )
    if not quantized:
        return criteria
    from bucketrt.quantization import CHECK_CRITERIA

    unknown = sorted(set(criteria or {}) - set(CHECK_CRITERIA))
    if unknown:
        raise BucketrtError(f"unknown criteria {', '.join(unknown)}", f"choose from {', '.join(CHECK_CRITERIA)}")
    if backend == "trt":
        raise BucketrtError(
            "TensorRT does not run ONNX Runtime's dynamic quantization (MatMulInteger, DynamicQuantizeLinear)",
            "check a quantized export with --backend ort",
        )
    return {**CHECK_CRITERIA, **quantized.get("check", {}), **(criteria or {})}


def _say_tolerances(console, report: CheckReport, default_atol: float, default_rtol: float) -> None:
    if report.precision_reason:
        _say(
            console,
            f"[dim]reduced precision ({report.precision_reason}): default tolerances atol {default_atol:g}, "
            f"rtol {default_rtol:g}[/]",
        )
    if report.criteria:
        _say(
            console,
            "[dim]quantized export: each output needs cosine >= {min_cosine:g} and relative L2 error <= "
            "{max_rel_l2:g}, logits argmax agreement >= {min_agreement:g}; at most {max_code_flips:g} of the "
            "hash codes flipped[/]".format(**report.criteria),
        )


def _status(console, text: str):
    return console.status(text) if console is not None else nullcontext()


# --------------------------------------------------------------------------------------------
# one component
# --------------------------------------------------------------------------------------------


@dataclass
class _Check:
    """What every step of one check shares."""

    export_dir: object
    manifest: dict
    runner: OrtBackend | TrtBackend | OpenVinoBackend
    reference: object  # bucketrt.exporter.rebuild.Reference
    report: CheckReport
    margin: float  # the hash codes' rounding margin
    num_choices: int
    verbose: bool
    console: object

    def inputs(self, component: str, padding: bool = True) -> dict:
        from bucketrt.exporter import make_inputs

        r = self.report
        return make_inputs(
            self.manifest, r.batch_size, r.sequence_length, self.num_choices, r.seed, padding, component=component
        )


def _check_component(run: _Check, entry: dict) -> ComponentReport:
    """The backend and the reference on the same random inputs, every output compared."""
    from polygraphy.logger import G_LOGGER

    feeds, reference_feeds = typed_feeds(entry, run.inputs(entry["name"]))
    shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feeds.items())
    on = f" on {entry['name']}" if len(run.manifest["components"]) > 1 else ""
    _say(run.console, f"Comparing {run.runner.label} with PyTorch{on}: {shapes} (seed {run.report.seed})")
    with G_LOGGER.verbosity(G_LOGGER.INFO if run.verbose else G_LOGGER.CRITICAL):
        prepared = run.runner.prepare(entry, feeds)  # may build an engine, with its own progress output
        with _status(run.console, "Running both…"):
            ran = _run_backend(run.runner, prepared, entry, feeds)
            sync, routes = _audits(ran, run.margin)
            started = time.perf_counter()
            with _intercept(sync), _intercept(routes):
                expected = run.reference.run(reference_feeds, entry["name"])
            reference_seconds = time.perf_counter() - started
            outputs = _compare_outputs(run, entry, feeds, ran.outputs, expected)
    criteria = run.report.criteria
    return ComponentReport(
        name=entry["name"],
        model=entry["files"]["model"],
        inputs={n: list(v.shape) for n, v in feeds.items()},
        outputs=outputs,
        hash_codes=_hash_audit(sync, criteria["max_code_flips"] if criteria else None),
        routing=_routing(routes, feeds),
        note=ran.note if sync is None else None,
        backend_seconds=ran.seconds,
        reference_seconds=reference_seconds,
    )


def _run_backend(runner, prepared, entry: dict, feeds: dict) -> BackendRun:
    try:
        return runner.run(prepared, entry, feeds)
    except Exception as e:  # a load or run failure is the model's fault, not the user's
        text = " ".join(str(e).split())
        raise BackendRunError(f"running {entry['files']['model']} in {runner.label} failed: {text[:400]}") from e


def _audits(ran: BackendRun, margin: float):
    """(CodeSync, RouteAudit): the hooks that hand the reference the backend's codes and count
    differing routes; None where the backend captured none."""
    from .codes import CodeSync, RouteAudit

    sync = CodeSync(ran.codes, margin=margin) if ran.codes is not None else None
    routes = RouteAudit(ran.routes) if ran.routes is not None else None
    return sync, routes


def _intercept(hook):
    from bucketrt.ops.dispatch import intercept

    return intercept(hook) if hook is not None else nullcontext()


def _compare_outputs(run: _Check, entry: dict, feeds: dict, actual: dict, expected: dict) -> list[OutputResult]:
    """Every output by the element-wise rule; a quantized export's also by its criteria."""
    report, criteria = run.report, run.report.criteria
    names = [spec["name"] for spec in entry["outputs"]]
    outputs = compare(actual, expected, names, report.atol, report.rtol, run.runner.runner_name)
    if criteria:
        mask = feeds.get("attention_mask")
        for row in outputs:
            if not row.missing and row.shape == row.reference_shape:
                quantized_metrics(row, actual[row.name], expected[row.name], criteria, mask)
    return outputs


def _hash_audit(sync, max_flipped: float | None) -> HashAudit | None:
    if sync is None:
        return None
    return HashAudit(
        code_tensors=len(sync.codes),
        hash_calls=sync.calls,
        total=sync.total,
        differing=sync.differing,
        unexplained=sync.unexplained,
        worst_margin=sync.worst_margin,
        margin=sync.margin,
        complete=sync.complete,
        max_flipped=max_flipped,
    )


def _routing(routes, feeds: dict) -> RoutingResult | None:
    """The audit's counts, its layers' differing tokens as [row, position] of input_ids where a
    layer routes input_ids' tokens (flattened batch-major, as the models do)."""
    if routes is None:
        return None
    ids = feeds.get("input_ids")
    layers = []
    for layer in routes.layers:
        listed = layer.differing_tokens
        if ids is not None and ids.ndim == 2 and ids.size == layer.tokens:
            listed = [list(divmod(int(t), ids.shape[1])) for t in listed]
        layers.append(LayerRouting(layer.layer, layer.op, layer.tokens, layer.differing, listed))
    return RoutingResult(routes.calls, routes.total, routes.differing, routes.complete, layers)


# --------------------------------------------------------------------------------------------
# generation (quantized generation exports)
# --------------------------------------------------------------------------------------------


def _generation(run: _Check) -> GenerationResult | None:
    """A quantized generation export's greedy tokens against the reference's; None otherwise."""
    manifest, report, criteria = run.manifest, run.report, run.report.criteria
    generates = manifest["task"] in ("text-generation", "text2text-generation")
    if not (criteria and criteria["generate_tokens"] > 0 and generates):
        return None
    prompt = run.inputs(manifest["components"][0]["name"], padding=False)
    steps = int(criteria["generate_tokens"])
    limit, length = report.sequence_limit, report.sequence_length
    if limit and manifest["task"] == "text-generation":  # the prompt and its continuation must fit
        prompt = {k: v[:, : max(1, min(length, limit - steps))] for k, v in prompt.items()}
    _say(run.console, f"Generating {steps} greedy tokens with {run.runner.label} and with PyTorch")
    with _status(run.console, "Generating…"):
        # Every component's nodes were checked as it ran: the sessions skip that check.
        return compare_generation(
            manifest, run.export_dir, run.reference, prompt, steps, criteria["min_agreement"], check_attributes=False
        )


__all__ = [
    "BACKENDS",
    "BackendRunError",
    "CheckReport",
    "ComponentReport",
    "GenerationResult",
    "HashAudit",
    "LayerRouting",
    "OutputResult",
    "RoutingResult",
    "TOLERANCES",
    "check",
    "compare",
    "max_sequence_length",
    "mismatched_elements",
    "quantized_metrics",
    "typed_feeds",
]
