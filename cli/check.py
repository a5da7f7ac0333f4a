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
        def __init__(self, model, manifest, name="pytorch-reference"):
            super().__init__(name=name, prefix="pytorch-runner")
            self._model = model
            self._manifest = manifest

        def activate_impl(self):
            self.model = self._model

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for spec in self._manifest["inputs"]:
                meta.add(spec["name"], dtype=__import__("numpy").dtype(spec["dtype"]), shape=spec["shape"])
            return meta

        def infer_impl(self, feed_dict):
            from bucketrt.exporter import run_reference

            start = time.time()
            outputs = run_reference(self.model, self._manifest, feed_dict)
            self.inference_time = time.time() - start
            return OrderedDict(outputs)

        def deactivate_impl(self):
            del self.model

    return ReferenceRunner


def _count_mismatches(actual, expected, atol: float, rtol: float) -> int:
    import numpy as np

    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), np.finfo(np.float32).tiny)
    bad = (diff > atol) & (rel > rtol)
    return int(np.count_nonzero(bad | np.isnan(diff)))


def lsh_code_report(model_path: Path, manifest: dict, feeds: dict, reference) -> list[tuple[int, str, int, int]]:
    """Where ONNX Runtime's and PyTorch's SignHash codes differ: [(layer, "queries"|"keys", differing, total)].

    Runs a copy of the graph that also outputs every SignHash result, and the reference with its
    code log on. Codes are sign bits: rounding differences in q/k flip the bits of near-zero
    projections, which moves vectors between buckets - and later layers amplify that.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    import bucketrt
    from bucketrt.exporter import run_reference
    from bucketrt.exporter.yoso import BucketrtYosoSelfAttention

    proto = onnx.load(str(model_path))
    nodes = [n for n in proto.graph.node if n.domain == "bucketrt" and n.op_type == "SignHash"]
    for node in nodes:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.INT32, None))
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=bucketrt.session_options(), providers=["CPUExecutionProvider"])
    ort_codes = session.run([n.output[0] for n in nodes], feeds)

    layers = [m for m in reference.modules() if isinstance(m, BucketrtYosoSelfAttention)]
    for layer in layers:
        layer.code_log = []
    try:
        run_reference(reference, manifest, feeds)
        torch_codes = [code.numpy() for layer in layers for pair in layer.code_log for code in pair]
    finally:
        for layer in layers:
            layer.code_log = None
    if len(torch_codes) != len(ort_codes):
        return []
    report = []
    for index, (a, b) in enumerate(zip(ort_codes, torch_codes)):
        if a.shape != b.shape:
            return []
        report.append((index // 2, "queries" if index % 2 == 0 else "keys", int(np.count_nonzero(a != b)), a.size))
    return report


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
    """Run OUTPUT_DIR's model.onnx in ONNX Runtime and its PyTorch reference on the same random
    inputs, and compare every output. Exit status 1 when an output is outside the tolerances.

    An element fails when it exceeds both --atol and --rtol (relative to the reference), as in
    Polygraphy. The last batch row's final quarter is padding.
    """
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.logger import G_LOGGER

    import bucketrt
    from bucketrt.exporter import load_reference, make_inputs, read_manifest

    out = console()
    manifest = read_manifest(output_dir)
    max_positions = manifest.get("config", {}).get("max_position_embeddings")
    if max_positions and sequence_length > max_positions:
        out.print(f"[yellow]sequence length {sequence_length} clamped to max_position_embeddings {max_positions}[/]")
        sequence_length = max_positions
    model_path = Path(output_dir) / manifest["files"]["model"]
    bucketrt.library_path()  # a missing op library is a usage error, reported before any work

    with out.status("Rebuilding the PyTorch reference…"):
        reference = load_reference(output_dir)
    feeds = make_inputs(manifest, batch_size, sequence_length, num_choices, seed)
    shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feeds.items())
    out.print(f"Comparing ONNX Runtime with PyTorch on {shapes} (seed {seed})")

    runners = [
        OnnxrtRunner(lambda: bucketrt.ort_session(model_path), name="onnxruntime"),
        _torch_runner_class()(reference, manifest, name="pytorch"),
    ]
    severity = G_LOGGER.INFO if verbose else G_LOGGER.CRITICAL
    with G_LOGGER.verbosity(severity), out.status("Running both…"):
        try:
            results = Comparator.run(runners, data_loader=[feeds])
        except Exception as e:  # an ORT load or run failure is the model's fault, not the user's
            text = " ".join(str(e).split())
            fail(f"running the export failed: {text[:400]}", EXIT_FAILED)
        accuracy = Comparator.compare_accuracy(
            results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True)
        )

    (ort_name, ort_iters), (pt_name, pt_iters) = results
    ort_out, pt_out = ort_iters[0], pt_iters[0]
    compared = next(iter(accuracy[0].values()))[0]  # one compare func, one runner pair, one iteration
    table = Table(title=f"{manifest['source']} · {manifest['task']} · {manifest['mode']}", title_justify="left")
    for column in ("output", "shape", "max abs", "mean abs", "max rel", "mean rel", "mismatched", "result"):
        table.add_column(column, justify="left" if column in ("output", "shape", "result") else "right", no_wrap=True)
    passed = bool(accuracy)
    worst = 0.0
    for spec in manifest["outputs"]:
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
    tolerance = f"max abs error {worst:.3g}; atol {atol:g}, rtol {rtol:g}"
    if passed:
        out.print(f"[bold green]PASSED[/]: ONNX Runtime matches PyTorch on every output ({tolerance})")
    else:
        out.print(f"[bold red]FAILED[/]: ONNX Runtime differs from PyTorch ({tolerance})")
        if manifest["mode"] == "lsh" and not manifest["files"].get("external_data"):
            _explain_lsh(out, lsh_code_report(model_path, manifest, feeds, reference))
        raise SystemExit(EXIT_FAILED)


def _explain_lsh(out, report) -> None:
    """After a failed LSH check: were the hash codes already different, and from which layer?"""
    if not report:
        return
    differing = [(layer, kind, n, total) for layer, kind, n, total in report if n]
    if not differing:
        out.print("SignHash codes: identical in ONNX Runtime and PyTorch in every layer, so the mismatch is not hashing")
        return
    total = sum(n for *_, n, _ in report)
    size = sum(t for *_, t in report)
    layer, kind, n, count = differing[0]
    out.print(
        f"SignHash codes: {total} of {size} differ between ONNX Runtime and PyTorch, the first {n} of {count} "
        f"in layer {layer} ({kind}); per layer: " + ", ".join(f"{l}{k[0]}={d}" for l, k, d, _ in report)
    )
    out.print(
        "[dim]Codes are signs of random projections: float rounding in q/k flips the bits of near-zero "
        "projections, moving vectors between buckets, and later layers amplify this. A few differing "
        "codes in the first differing layer point to rounding; many point to a real difference.[/]"
    )
