"""`bucketrt check`: ONNX Runtime against the PyTorch reference, through Polygraphy's comparator."""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import click
from rich.table import Table

from .app import EXIT_FAILED, console, fail, main


def _torch_runner_class():
    """A Polygraphy runner for the reference model (Polygraphy's PytRunner moves inputs to CUDA)."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class ReferenceRunner(BaseRunner):
        def __init__(self, reference, entry: dict, name="pytorch-reference", interceptor=None):
            super().__init__(name=name, prefix="pytorch-runner")
            self._reference = reference
            self._entry = entry
            self._interceptor = interceptor

        def activate_impl(self):
            pass

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for spec in self._entry["inputs"]:
                meta.add(spec["name"], dtype=__import__("numpy").dtype(spec["dtype"]), shape=spec["shape"])
            return meta

        def infer_impl(self, feed_dict):
            from contextlib import nullcontext

            from bucketrt.ops import intercept

            start = time.time()
            with intercept(self._interceptor) if self._interceptor else nullcontext():
                outputs = self._reference.run(feed_dict, self._entry["name"])
            self.inference_time = time.time() - start
            return OrderedDict(outputs)

        def deactivate_impl(self):
            pass

    return ReferenceRunner


def _count_mismatches(actual, expected, atol: float, rtol: float) -> int:
    import numpy as np

    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), np.finfo(np.float32).tiny)
    bad = (diff > atol) & (rel > rtol)
    return int(np.count_nonzero(bad | np.isnan(diff)))


@main.command("check")
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--batch-size", "-b", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--sequence-length", "-n", default=128, show_default=True, type=click.IntRange(min=1),
    help="Clamped to the model's max_position_embeddings.",
)
@click.option("--num-choices", default=2, show_default=True, type=click.IntRange(min=1), help="For multiple-choice exports.")
@click.option("--atol", default=1e-4, show_default=True, type=click.FloatRange(min=0))
@click.option("--rtol", default=1e-3, show_default=True, type=click.FloatRange(min=0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seeds the random inputs.")
@click.option("--verbose", "-v", is_flag=True, help="Show Polygraphy's own log.")
def check_command(output_dir, batch_size, sequence_length, num_choices, atol, rtol, seed, verbose):
    """Run every ONNX file of OUTPUT_DIR in ONNX Runtime and its PyTorch reference on the same
    random inputs, and compare every output. Exit status 1 when an output is outside the tolerances.

    An element fails when it exceeds both --atol and --rtol (relative to the reference), as in
    Polygraphy. The last batch row's final quarter is padding.
    """
    import bucketrt
    from bucketrt.exporter import load_reference, make_inputs, read_manifest

    out = console()
    manifest = read_manifest(output_dir)
    max_positions = manifest.get("config", {}).get("max_position_embeddings")
    if max_positions and sequence_length > max_positions:
        out.print(f"[yellow]sequence length {sequence_length} clamped to max_position_embeddings {max_positions}[/]")
        sequence_length = max_positions
    bucketrt.library_path()  # a missing op library is a usage error, reported before any work

    with out.status("Rebuilding the PyTorch reference…"):
        reference = load_reference(output_dir)
    passed, worst = True, 0.0
    for entry in manifest["components"]:
        feeds = make_inputs(manifest, batch_size, sequence_length, num_choices, seed, component=entry["name"])
        ok, error = _check_component(out, output_dir, manifest, entry, reference, feeds, atol, rtol, seed, verbose)
        passed = passed and ok
        if not (error <= worst):  # NaN propagates
            worst = error
    tolerance = f"max abs error {worst:.3g}; atol {atol:g}, rtol {rtol:g}"
    if passed:
        out.print(f"[bold green]PASSED[/]: ONNX Runtime matches PyTorch on every output ({tolerance})")
    else:
        out.print(f"[bold red]FAILED[/]: ONNX Runtime differs from PyTorch ({tolerance})")
        raise SystemExit(EXIT_FAILED)


def _check_component(out, output_dir, manifest, entry, reference, feeds, atol, rtol, seed, verbose) -> tuple[bool, float]:
    """Compares one ONNX file with its reference; prints its table. Returns (passed, max abs error)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    import bucketrt

    model_path = Path(output_dir) / entry["files"]["model"]
    shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feeds.items())
    several = len(manifest["components"]) > 1
    out.print(f"Comparing ONNX Runtime with PyTorch{' on ' + entry['name'] if several else ''}: {shapes} (seed {seed})")

    severity = G_LOGGER.INFO if verbose else G_LOGGER.CRITICAL
    with G_LOGGER.verbosity(severity), out.status("Running both…"):
        try:
            sync = _capture_codes(model_path, feeds)
            runners = [
                OnnxrtRunner(lambda: bucketrt.ort_session(model_path), name="onnxruntime"),
                _torch_runner_class()(reference, entry, name="pytorch", interceptor=sync),
            ]
            results = Comparator.run(runners, data_loader=[feeds])
        except Exception as e:  # an ORT load or run failure is the model's fault, not the user's
            text = " ".join(str(e).split())
            fail(f"running {entry['files']['model']} failed: {text[:400]}", EXIT_FAILED)
        accuracy = Comparator.compare_accuracy(
            results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True)
        )

    (ort_name, ort_iters), (pt_name, pt_iters) = results
    ort_out, pt_out = ort_iters[0], pt_iters[0]
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
        if result is None or name not in ort_out or name not in pt_out:
            table.add_row(name, "-", "-", "-", "-", "-", "-", "[red]missing[/]")
            passed = False
            continue
        ok = bool(result)
        shape_ok = ort_out[name].shape == pt_out[name].shape
        mismatched = _count_mismatches(ort_out[name], pt_out[name], atol, rtol) if shape_ok else ort_out[name].size
        table.add_row(
            name,
            "x".join(map(str, ort_out[name].shape)) + ("" if shape_ok else f" vs {'x'.join(map(str, pt_out[name].shape))}"),
            f"{result.max_absdiff:.3g}" if result.max_absdiff is not None else "-",
            f"{result.mean_absdiff:.3g}" if result.mean_absdiff is not None else "-",
            f"{result.max_reldiff:.3g}" if result.max_reldiff is not None else "-",
            f"{result.mean_reldiff:.3g}" if result.mean_reldiff is not None else "-",
            f"{mismatched}/{ort_out[name].size}",
            "[green]ok[/]" if ok else "[red]mismatch[/]",
        )
        passed = passed and ok
        if result.max_absdiff is not None and not (result.max_absdiff <= worst):  # NaN propagates
            worst = result.max_absdiff
    out.print(table)
    if sync is not None:
        passed = _report_codes(out, sync) and passed
    return passed, worst


def _capture_codes(model_path: Path, feeds: dict):
    """ONNX Runtime's hash codes for these inputs, as a CodeSync hook; None for models without
    hashing. See bucketrt.code_sync for why a model that hashes is compared this way."""
    import os
    import tempfile

    import onnx
    import onnxruntime as ort

    import bucketrt
    from bucketrt.code_sync import CodeSync, code_outputs, with_outputs

    proto = onnx.load(str(model_path), load_external_data=False)
    names = code_outputs(proto)
    if not names:
        return None
    proto = with_outputs(proto, names)
    options = bucketrt.session_options()
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        # External data resolves relative to the model file: write the copy beside it.
        fd, path = tempfile.mkstemp(suffix=".onnx", dir=model_path.parent)
        os.close(fd)
        try:
            onnx.save(proto, path)
            session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        finally:
            os.unlink(path)
    else:
        session = ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    return CodeSync(session.run(names, feeds))


def _report_codes(out, sync) -> bool:
    """One line on the hash codes; False when they differ by more than rounding."""
    if not sync.complete:
        out.print(f"[red]hash codes[/]: ONNX Runtime produced {len(sync.codes)} code tensors, PyTorch hashed {sync.calls} times")
        return False
    share = f"{sync.differing} of {sync.total} hash codes differ between ONNX Runtime and PyTorch"
    if sync.unexplained:
        out.print(
            f"[red]hash codes[/]: {share}; {sync.unexplained} of them at projections farther than "
            f"{sync.margin:g} (relative) from zero - not rounding"
        )
        return False
    detail = f", all from projections within {sync.worst_margin:.1g} of zero (rounding)" if sync.differing else ""
    out.print(f"[green]hash codes[/]: {share}{detail}; outputs compared with PyTorch on ONNX Runtime's codes")
    return True
