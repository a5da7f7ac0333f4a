"""`bucketrt check`: a backend (ONNX Runtime or TensorRT) against the PyTorch reference.

Both backends go through the same steps and the same verdict: random inputs from the model's
family, the backend's outputs (and, for models that hash, its hash codes), the reference run on
those codes (bucketrt.code_sync), Polygraphy's comparator on every output, one table per ONNX
file. Only how a backend runs differs (`OrtBackend`, `TrtBackend`).
"""

from __future__ import annotations

import contextlib
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import click
from rich.table import Table

from .app import EXIT_FAILED, console, fail, main

# Default tolerances (atol, rtol) and the hash-code rounding margin, by the precision the backend
# computes in. "reduced": fp16 exports, and TensorRT engines built with TF32 or --fp16 - an fp16
# or TF32 product carries about 1e-3 relative error (10 mantissa bits), which layers accumulate.
TOLERANCES = {"fp32": (1e-4, 1e-3, 1e-4), "reduced": (1e-2, 1e-2, 1e-2)}


@dataclass
class BackendRun:
    outputs: dict  # output name -> array: the model's outputs only
    codes: list | None  # the backend's hash codes in graph order; None when not captured
    note: str | None = None  # why codes were not captured although the model hashes


def _count_mismatches(actual, expected, atol: float, rtol: float) -> int:
    import numpy as np

    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), np.finfo(np.float32).tiny)
    bad = (diff > atol) & (rel > rtol)
    return int(np.count_nonzero(bad | np.isnan(diff)))


def _code_names(model_path: Path) -> list[str]:
    """The hash-code outputs a copy of the model would add (none for models that do not hash)."""
    import onnx

    from bucketrt.code_sync import code_outputs

    return code_outputs(onnx.load(str(model_path), load_external_data=False))


@contextlib.contextmanager
def _model_with_codes(model_path: Path, names: list[str]):
    """The path of a temporary copy of the model that also outputs `names` (its hash codes).

    A model with external data is copied beside itself, so that the data resolves; any other
    goes to the temporary folder, so that a read-only export folder can be checked."""
    import os
    import tempfile

    import onnx

    from bucketrt.code_sync import with_outputs

    proto = onnx.load(str(model_path), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    fd, path = tempfile.mkstemp(suffix=".onnx", prefix=".bucketrt-codes-", dir=model_path.parent if external else None)
    os.close(fd)
    try:
        onnx.save(with_outputs(proto, names), path)
        yield Path(path)
    finally:
        os.unlink(path)


class OrtBackend:
    """ONNX Runtime (CPU) with bucketrt's op library; codes from a second session on a copy of the
    model that also outputs them, so that the checked model is the exported one, unchanged."""

    label, runner_name = "ONNX Runtime", "onnxruntime"

    def __init__(self, out, output_dir: Path, manifest: dict):
        import bucketrt

        bucketrt.library_path()  # a missing op library is a usage error, reported before any work
        self.output_dir = Path(output_dir)
        self.manifest = manifest

    def precision(self) -> tuple[str, str | None]:
        """(the TOLERANCES key, why it is reduced)."""
        return ("reduced", "the export is fp16") if self.manifest.get("dtype") == "fp16" else ("fp32", None)

    def prepare(self, entry: dict, feeds: dict):
        return self.output_dir / entry["files"]["model"]

    def run(self, model_path: Path, entry: dict, feeds: dict) -> BackendRun:
        from polygraphy.backend.onnxrt import OnnxrtRunner

        import bucketrt

        runner = OnnxrtRunner(lambda: bucketrt.ort_session(model_path), name=self.runner_name)
        with runner:
            outputs = dict(runner.infer(feeds))
        return BackendRun(outputs, self._codes(model_path, feeds))

    @staticmethod
    def _codes(model_path: Path, feeds: dict):
        import onnxruntime as ort

        import bucketrt

        names = _code_names(model_path)
        if not names:
            return None
        with _model_with_codes(model_path, names) as path:
            session = ort.InferenceSession(str(path), sess_options=bucketrt.session_options(), providers=["CPUExecutionProvider"])
        return session.run(names, feeds)


class TrtBackend:
    """TensorRT with bucketrt's plugins, through Polygraphy's TrtRunner.

    Runs the engine `bucketrt build` recorded for a component; otherwise (or with --rebuild)
    builds one from the ONNX file, with TF32 off, a profile tuned for the check's shapes, and the
    hash codes as extra outputs."""

    label, runner_name = "TensorRT", "tensorrt"

    def __init__(self, out, output_dir: Path, manifest: dict, plugins: Path | None, rebuild: bool, verbose: bool):
        from .build import prepare_tensorrt

        self.out = out
        self.output_dir = Path(output_dir)
        self.manifest = manifest
        self.rebuild = rebuild
        self.verbose = verbose
        # TensorRT and the plugin library are checked before any work (exit 2, one line).
        self.trt, self.library = prepare_tensorrt(manifest, plugins)
        out.print(f"TensorRT {self.trt.__version__}; plugins: {self.library or 'none (the export uses no bucketrt ops)'}")

    def _recorded(self, entry: dict):
        from .build import recorded_engine

        return None if self.rebuild else recorded_engine(self.output_dir, self.manifest, entry["name"])

    def precision(self) -> tuple[str, str | None]:
        if self.manifest.get("dtype") == "fp16":
            return "reduced", "the export is fp16"
        for entry in self.manifest["components"]:
            recorded = self._recorded(entry)
            if recorded and recorded[1].get("precision", "fp32") != "fp32":
                return "reduced", f"{recorded[0].name} is a {recorded[1]['precision']} engine"
        return "fp32", None

    def prepare(self, entry: dict, feeds: dict):
        """(serialized engine, code output names, note): the recorded engine, or a fresh build."""
        from bucketrt.exporter import BucketrtError
        from bucketrt.profiles import ShapeRange, format_shape, widen_to
        from bucketrt.trt_engine import BuildOptions

        from .build import build_with_progress, component_profiles, describe_profile

        model_path = self.output_dir / entry["files"]["model"]
        recorded = self._recorded(entry)
        if recorded is not None:
            path, record = recorded
            for name, value in feeds.items():
                r = ShapeRange.from_json(record["profile"][name])
                if not r.covers(value.shape):
                    raise BucketrtError(
                        f"the engine {path.name} takes {name} from {format_shape(r.min)} to {format_shape(r.max)}, "
                        f"the check feeds {format_shape(value.shape)}",
                        "check with smaller --batch-size/--sequence-length, build with larger --max-shapes, or pass --rebuild",
                    )
            self.out.print(f"  engine: {path} ({record.get('precision', 'fp32')}, built by `bucketrt build`)")
            note = None
            if _code_names(model_path):
                note = (
                    "the engine does not output its hash codes, so PyTorch hashed on its own: a rounding flip "
                    "shows as a mismatch (--rebuild compares on TensorRT's codes)"
                )
            return path.read_bytes(), [], note

        profile = component_profiles(self.manifest, [entry], {})[entry["name"]]
        profile = widen_to(profile, {name: value.shape for name, value in feeds.items()})
        options = BuildOptions(tf32=False, verbose=self.verbose)
        names = _code_names(model_path)
        self.out.print(f"  building a check engine from {model_path.name}: {describe_profile(profile)}")
        with _model_with_codes(model_path, names) if names else nullcontext(model_path) as path:
            built = build_with_progress(self.out, self.trt, path, profile, options, self.manifest.get("dtype", "fp32"))
        self.out.print(f"  [green]✓[/] engine built in {built.seconds:.1f} s ({built.precision})")
        return built.data, names, None

    def run(self, prepared, entry: dict, feeds: dict) -> BackendRun:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        from bucketrt.trt_engine import runtime

        data, code_names, note = prepared
        runner = TrtRunner(EngineFromBytes(data, runtime=lambda: runtime(self.trt)), name=self.runner_name)
        with runner:
            outputs = {name: _to_numpy(value) for name, value in runner.infer(feeds).items()}
        codes = [outputs.pop(name) for name in code_names] if code_names else None
        return BackendRun(outputs, codes, note)


def _to_numpy(value):
    import numpy as np

    return value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)


@main.command("check")
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option(
    "--backend", type=click.Choice(["ort", "trt"]), default="ort", show_default=True,
    help="ort: ONNX Runtime (CPU) with bucketrt's op library. trt: TensorRT with bucketrt's plugins, on the "
    "engines `bucketrt build` recorded, else on engines built for the check.",
)
@click.option("--batch-size", "-b", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--sequence-length", "-n", default=128, show_default=True, type=click.IntRange(min=1),
    help="Clamped to the model's max_position_embeddings.",
)
@click.option("--num-choices", default=2, show_default=True, type=click.IntRange(min=1), help="For multiple-choice exports.")
@click.option("--atol", default=None, type=click.FloatRange(min=0),
              help="Default 1e-4; 1e-2 for reduced precision (fp16 exports, TF32 or --fp16 engines).")
@click.option("--rtol", default=None, type=click.FloatRange(min=0),
              help="Default 1e-3; 1e-2 for reduced precision.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seeds the random inputs.")
@click.option("--rebuild", is_flag=True, help="trt: build check engines from the ONNX files even where `bucketrt build` recorded engines.")
@click.option("--plugins", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="trt: bucketrt's TensorRT plugin library. Default: the one built with bucketrt.")
@click.option("--verbose", "-v", is_flag=True, help="Show Polygraphy's (and TensorRT's) own log.")
def check_command(output_dir, backend, batch_size, sequence_length, num_choices, atol, rtol, seed, rebuild, plugins, verbose):
    """Run every ONNX file of OUTPUT_DIR in a backend and its PyTorch reference on the same random
    inputs, and compare every output. Exit status 1 when an output is outside the tolerances.

    An element fails when it exceeds both --atol and --rtol (relative to the reference), as in
    Polygraphy. The last batch row's final quarter is padding. An fp16 export is compared with the
    float32 reference, at the reduced-precision tolerances. Models that hash are compared on the
    backend's hash codes, each code that differs from PyTorch's checked to be a rounding flip.
    """
    from bucketrt.exporter import BucketrtError, load_reference, make_inputs, read_manifest

    out = console()
    manifest = read_manifest(output_dir)
    if backend == "ort" and (rebuild or plugins is not None):
        raise BucketrtError(f"{'--rebuild' if rebuild else '--plugins'} applies to --backend trt only")
    max_positions = manifest.get("config", {}).get("max_position_embeddings")
    if max_positions and sequence_length > max_positions:
        out.print(f"[yellow]sequence length {sequence_length} clamped to max_position_embeddings {max_positions}[/]")
        sequence_length = max_positions
    if backend == "trt":
        runner = TrtBackend(out, output_dir, manifest, plugins, rebuild, verbose)
    else:
        runner = OrtBackend(out, output_dir, manifest)
    precision, reason = runner.precision()
    default_atol, default_rtol, margin = TOLERANCES[precision]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    if reason:
        out.print(f"[dim]reduced precision ({reason}): default tolerances atol {default_atol:g}, rtol {default_rtol:g}[/]")

    with out.status("Rebuilding the PyTorch reference…"):
        reference = load_reference(output_dir)
    passed, worst = True, 0.0
    for entry in manifest["components"]:
        feeds = make_inputs(manifest, batch_size, sequence_length, num_choices, seed, component=entry["name"])
        ok, error = _check_component(out, runner, manifest, entry, reference, feeds, atol, rtol, margin, seed, verbose)
        passed = passed and ok
        if not (error <= worst):  # NaN propagates
            worst = error
    tolerance = f"max abs error {worst:.3g}; atol {atol:g}, rtol {rtol:g}"
    if passed:
        out.print(f"[bold green]PASSED[/]: {runner.label} matches PyTorch on every output ({tolerance})")
    else:
        out.print(f"[bold red]FAILED[/]: {runner.label} differs from PyTorch ({tolerance})")
        raise SystemExit(EXIT_FAILED)


def _typed_feeds(entry: dict, feeds: dict) -> tuple[dict, dict]:
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


def _check_component(out, runner, manifest, entry, reference, feeds, atol, rtol, margin, seed, verbose) -> tuple[bool, float]:
    """Compares one ONNX file with its reference; prints its table. Returns (passed, max abs error)."""
    from polygraphy.comparator import Comparator, IterationResult, RunResults
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    from bucketrt.code_sync import CodeSync
    from bucketrt.ops import intercept

    feeds, reference_feeds = _typed_feeds(entry, feeds)
    shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feeds.items())
    several = len(manifest["components"]) > 1
    out.print(f"Comparing {runner.label} with PyTorch{' on ' + entry['name'] if several else ''}: {shapes} (seed {seed})")

    severity = G_LOGGER.INFO if verbose else G_LOGGER.CRITICAL
    with G_LOGGER.verbosity(severity):
        prepared = runner.prepare(entry, feeds)  # may build an engine, with its own progress output
        with out.status("Running both…"):
            started = time.time()
            try:
                run = runner.run(prepared, entry, feeds)
            except Exception as e:  # a load or run failure is the model's fault, not the user's
                text = " ".join(str(e).split())
                fail(f"running {entry['files']['model']} in {runner.label} failed: {text[:400]}", EXIT_FAILED)
            backend_seconds = time.time() - started
            sync = CodeSync(run.codes, margin=margin) if run.codes is not None else None
            started = time.time()
            with intercept(sync) if sync is not None else nullcontext():
                expected = reference.run(reference_feeds, entry["name"])
            results = RunResults()
            results.append((runner.runner_name, [IterationResult(run.outputs, backend_seconds, runner.runner_name)]))
            results.append(("pytorch", [IterationResult(expected, time.time() - started, "pytorch")]))
            accuracy = Comparator.compare_accuracy(
                results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True)
            )

    actual = run.outputs
    compared = next(iter(accuracy[0].values()))[0]  # one compare func, one runner pair, one iteration
    title = f"{manifest['source']} · {manifest['task']} · {manifest['mode']}" + (f" · {entry['name']}" if several else "")
    table = Table(title=title, title_justify="left")
    for column in ("output", "shape", "max abs", "mean abs", "max rel", "mean rel", "mismatched", "result"):
        table.add_column(column, justify="left" if column in ("output", "shape", "result") else "right", no_wrap=True)
    passed = bool(accuracy)
    worst = 0.0
    for spec in entry["outputs"]:
        name = spec["name"]
        result = compared.get(name)
        if result is None or name not in actual or name not in expected:
            table.add_row(name, "-", "-", "-", "-", "-", "-", "[red]missing[/]")
            passed = False
            continue
        ok = bool(result)
        shape_ok = actual[name].shape == expected[name].shape
        mismatched = _count_mismatches(actual[name], expected[name], atol, rtol) if shape_ok else actual[name].size
        table.add_row(
            name,
            "x".join(map(str, actual[name].shape)) + ("" if shape_ok else f" vs {'x'.join(map(str, expected[name].shape))}"),
            f"{result.max_absdiff:.3g}" if result.max_absdiff is not None else "-",
            f"{result.mean_absdiff:.3g}" if result.mean_absdiff is not None else "-",
            f"{result.max_reldiff:.3g}" if result.max_reldiff is not None else "-",
            f"{result.mean_reldiff:.3g}" if result.mean_reldiff is not None else "-",
            f"{mismatched}/{actual[name].size}",
            "[green]ok[/]" if ok else "[red]mismatch[/]",
        )
        passed = passed and ok
        if result.max_absdiff is not None and not (result.max_absdiff <= worst):  # NaN propagates
            worst = result.max_absdiff
    out.print(table)
    if sync is not None:
        passed = _report_codes(out, sync, runner.label) and passed
    elif run.note:
        out.print(f"[yellow]hash codes[/]: {run.note}")
    return passed, worst


def _report_codes(out, sync, label: str) -> bool:
    """One line on the hash codes; False when they differ by more than rounding."""
    if not sync.complete:
        out.print(f"[red]hash codes[/]: {label} produced {len(sync.codes)} code tensors, PyTorch hashed {sync.calls} times")
        return False
    share = f"{sync.differing} of {sync.total} hash codes differ between {label} and PyTorch"
    if sync.unexplained:
        out.print(
            f"[red]hash codes[/]: {share}; {sync.unexplained} of them at projections farther than "
            f"{sync.margin:g} (relative) from zero - not rounding"
        )
        return False
    detail = f", all from projections within {sync.worst_margin:.1g} of zero (rounding)" if sync.differing else ""
    out.print(f"[green]hash codes[/]: {share}{detail}; outputs compared with PyTorch on {label}'s codes")
    return True
