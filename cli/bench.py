"""`bucketrt bench`: ONNX Runtime with bucketrt's ops against PyTorch eager, over sequence lengths."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .app import console, main


def _lengths(ctx, param, value: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    if not lengths or min(lengths) < 1:
        raise click.BadParameter("sequence lengths must be positive")
    return lengths


@main.command("bench")
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option(
    "--sequence-lengths",
    "lengths",
    default="512,1024,2048,4096",
    show_default=True,
    callback=_lengths,
    help="Comma-separated sequence lengths, timed one after the other.",
)
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="Threads for both ORT (intra_op_num_threads) and PyTorch. Default: all cores.",
)
@click.option(
    "--repeat",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed runs per length (median reported), after one warm-up run.",
)
@click.option(
    "--budget",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds of timed runs per length and backend before stopping early.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.png",
    help="Also draw time against sequence length per backend and precision (log-log, with linear and quadratic "
    "slopes) to FILE.png.",
)
@click.option(
    "--new-tokens",
    default=128,
    show_default=True,
    type=click.IntRange(min=2),
    help="Text-generation exports with a cache: tokens generated per run (the prefill, then decode steps).",
)
def bench_command(output_dir, lengths, batch_size, threads, repeat, budget, plot_path, new_tokens):
    """Time an export in ONNX Runtime against PyTorch eager, in the same run.

    Prints per sequence length the median latency of both, their ratio, and how each grows
    relative to the first length (linear attention grows like the length, softmax attention like
    its square). A text-generation export with a key/value cache (the mixture-of-experts causal
    LMs) is timed as it generates instead, in ONNX Runtime through bucketrt's generation loop: the
    prefill of a prompt of each length, and decode tokens per second over --new-tokens.
    """
    from bucketrt.benchmarking import bench_export, cpu_isa, describe_isa, plot_scaling
    from bucketrt.errors import BucketrtError
    from bucketrt.export_format.manifest import max_sequence_length, read_manifest

    out = console()
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise BucketrtError(f"--plot {plot_path} is not a .png file name", "name the figure FILE.png")
    manifest = read_manifest(output_dir)
    limit = max_sequence_length(manifest)
    if limit is not None and max(lengths) > limit:
        raise BucketrtError(
            f"--sequence-lengths {max(lengths)} exceeds the export's longest sequence, {limit}",
            f"time lengths up to {limit}",
        )
    if _is_cached_generation(manifest):
        if limit is not None and max(lengths) + new_tokens > limit:
            raise BucketrtError(
                f"--sequence-lengths {max(lengths)} plus --new-tokens {new_tokens} exceeds the export's longest "
                f"sequence, {limit}",
                f"time prompts up to {limit - new_tokens} tokens, or fewer new tokens",
            )
        _bench_generation(
            out, output_dir, manifest, lengths, batch_size, threads, repeat, budget, new_tokens, plot_path
        )
        return
    table = Table(title=f"{manifest['model_type']} {manifest['task']} ({manifest['mode']}), batch {batch_size}")
    for column in ("sequence", "PyTorch ms", "ORT ms", "ORT speed-up", "PyTorch growth", "ORT growth"):
        table.add_column(column, justify="right")
    rows = []

    def show(row):
        rows.append(row)
        first = rows[0]
        out.print(f"  N={row.sequence_length}: PyTorch {row.torch.ms:.1f} ms, ORT {row.ort.ms:.1f} ms")
        table.add_row(
            str(row.sequence_length),
            f"{row.torch.ms:.1f}",
            f"{row.ort.ms:.1f}",
            f"{row.speedup:.2f}x",
            f"{row.torch.median_s / first.torch.median_s:.2f}x",
            f"{row.ort.median_s / first.ort.median_s:.2f}x",
        )

    out.print(describe_isa(cpu_isa()))
    with out.status("timing"):
        bench_export(output_dir, lengths, batch_size, threads, repeat, budget, on_row=show)
    out.print(table)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        out.print(
            f"From N={first.sequence_length} to N={last.sequence_length} (x{last.sequence_length / first.sequence_length:g}): "
            f"ORT time x{last.ort.median_s / first.ort.median_s:.2f}, PyTorch time x{last.torch.median_s / first.torch.median_s:.2f}"
        )
    if plot_path is not None:
        precision = _precision(manifest)
        series = {
            "PyTorch eager fp32": [(r.sequence_length, r.torch.ms) for r in rows],
            f"ONNX Runtime {precision}": [(r.sequence_length, r.ort.ms) for r in rows],
        }
        title = f"{manifest['source']} {manifest['task']} ({manifest['mode']}), batch {batch_size}"
        plot_scaling(series, plot_path, title)
        out.print(f"Plot: {plot_path}")


def _precision(manifest: dict) -> str:
    """What the export computes in, as the tables and plots name it: int8 for a `bucketrt quantize`
    copy, else its dtype."""
    return "int8" if "quantization" in manifest else manifest.get("dtype", "fp32")


def _is_cached_generation(manifest: dict) -> bool:
    inputs = [i["name"] for c in manifest["components"][:1] for i in c.get("inputs", [])]
    return manifest["task"] == "text-generation" and any(name.startswith("past_key_values.") for name in inputs)


def _bench_generation(out, output_dir, manifest, lengths, batch_size, threads, repeat, budget, new_tokens, plot_path):
    from bucketrt.benchmarking import bench_generation, cpu_isa, describe_isa, plot_generation

    precision = _precision(manifest)
    table = Table(
        title=f"{manifest['model_type']} {manifest['task']} in ONNX Runtime ({precision}), batch {batch_size}, "
        f"{new_tokens} new tokens"
    )
    for column in ("prompt", "prefill ms", "prefill tokens/s", "decode ms/step", "decode tokens/s"):
        table.add_column(column, justify="right")

    def show(row):
        out.print(f"  prompt {row.prompt_length}: prefill {row.prefill.ms:.1f} ms, decode {row.step.ms:.2f} ms/step")
        table.add_row(
            str(row.prompt_length),
            f"{row.prefill.ms:.1f}",
            f"{row.batch_size * row.prompt_length / row.prefill.median_s:.0f}",
            f"{row.step.ms:.2f}",
            f"{row.tokens_per_s:.1f}",
        )

    out.print(describe_isa(cpu_isa()))
    with out.status("timing"):
        rows = bench_generation(output_dir, lengths, (batch_size,), new_tokens, threads, repeat, budget, on_row=show)
    out.print(table)
    if plot_path is not None:
        plot_generation(
            {f"ONNX Runtime {precision}": rows}, plot_path, f"{manifest['source']}, {new_tokens} new tokens"
        )
        out.print(f"Plot: {plot_path}")
