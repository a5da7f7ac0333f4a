"""`bucketrt check`: prints bucketrt.check's report; exit status 1 when it did not pass."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .app import EXIT_FAILED, console, fail, fail_lines, main
from .options import plugins_option, verbose_option


@main.command("check")
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(["ort", "trt", "openvino"]),
    default="ort",
    show_default=True,
    help="ort: ONNX Runtime (CPU), with bucketrt's op library where the export holds bucketrt ops. trt: TensorRT "
    "with bucketrt's plugins, on the engines `bucketrt build` recorded, else on engines built for the check. "
    "openvino: OpenVINO's CPU runtime in float32, for exports made with --ops standard.",
)
@click.option("--batch-size", "-b", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--sequence-length",
    "-n",
    default=128,
    show_default=True,
    type=click.IntRange(min=1),
    help="Clamped to the export's longest sequence.",
)
@click.option(
    "--num-choices", default=2, show_default=True, type=click.IntRange(min=1), help="For multiple-choice exports."
)
@click.option(
    "--atol",
    default=None,
    type=click.FloatRange(min=0),
    help="Default 1e-4; 1e-2 for reduced precision (fp16 exports, TF32 or --fp16 engines).",
)
@click.option("--rtol", default=None, type=click.FloatRange(min=0), help="Default 1e-3; 1e-2 for reduced precision.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seeds the random inputs.")
@click.option(
    "--rebuild",
    is_flag=True,
    help="trt: build check engines from the ONNX files even where `bucketrt build` recorded engines.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    metavar="PATH",
    help="Also write the report as JSON to PATH ('-': to stdout, instead of the tables).",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(-1, 1),
    default=None,
    help="Quantized exports: each float output's least cosine similarity with the reference. Default 0.99 "
    "(from the export's manifest).",
)
@click.option(
    "--max-rel-l2",
    type=click.FloatRange(min=0),
    default=None,
    help="Quantized exports: each float output's largest ||out - ref|| / ||ref||. Default 0.1.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=None,
    help="Quantized exports: the least share of answers that agree (argmax of each logits output: class, token "
    "label, top-1 word, QA start/end; greedy tokens for generation). Default 0.9.",
)
@click.option(
    "--max-code-flips",
    type=click.FloatRange(0, 1),
    default=None,
    help="Quantized LSH exports: the largest share of hash codes quantization may flip. Default 0.25.",
)
@click.option(
    "--generate-tokens",
    type=click.IntRange(min=0),
    default=None,
    help="Quantized generation exports: greedy tokens compared (0: none). Default 8.",
)
@plugins_option
@verbose_option
def check_command(
    output_dir,
    backend,
    batch_size,
    sequence_length,
    num_choices,
    atol,
    rtol,
    seed,
    rebuild,
    json_path,
    min_cosine,
    max_rel_l2,
    min_agreement,
    max_code_flips,
    generate_tokens,
    plugins,
    verbose,
):
    """Run every ONNX file of OUTPUT_DIR in a backend and its PyTorch reference on the same random
    inputs, and compare every output. Exit status 1 when an output is outside the tolerances.

    An element fails when it exceeds both --atol and --rtol (relative to the reference), as in
    Polygraphy. The last batch row's final quarter is padding. An fp16 export is compared with the
    float32 reference, at the reduced-precision tolerances. Models that hash are compared on the
    backend's hash codes, each code that differs from PyTorch's checked to be a rounding flip.

    A quantized export (`bucketrt quantize`) is judged instead by cosine similarity and relative L2
    error per output, the agreement of the answers (argmax of logits, greedy tokens) and the share of
    hash codes quantization flipped: defaults from its manifest, or the options below.
    """
    from bucketrt.check import BackendRunError, check
    from bucketrt.errors import BuildError

    to_stdout = json_path is not None and str(json_path) == "-"
    given = dict(
        min_cosine=min_cosine,
        max_rel_l2=max_rel_l2,
        min_agreement=min_agreement,
        max_code_flips=max_code_flips,
        generate_tokens=generate_tokens,
    )
    criteria = {name: value for name, value in given.items() if value is not None}
    out = console()
    if to_stdout:
        out.quiet = True  # stdout carries the JSON alone
    try:
        report = check(
            output_dir,
            backend=backend,
            batch_size=batch_size,
            sequence_length=sequence_length,
            num_choices=num_choices,
            atol=atol,
            rtol=rtol,
            seed=seed,
            plugins=plugins,
            rebuild=rebuild,
            verbose=verbose,
            console=out,
            on_component=lambda report, component: print_component(out, report, component),
            criteria=criteria or None,
        )
    except BackendRunError as e:
        fail(str(e), EXIT_FAILED)
    except BuildError as e:
        fail_lines(e.lines, EXIT_FAILED)
    if to_stdout:
        click.echo(report.to_json(indent=2))
    elif json_path is not None:
        json_path.write_text(report.to_json(indent=2) + "\n")
    tolerance = f"max abs error {report.max_abs_error:.3g}; atol {report.atol:g}, rtol {report.rtol:g}"
    if report.criteria:
        c = report.criteria
        tolerance = (
            f"quantized: cosine >= {c['min_cosine']:g}, rel L2 <= {c['max_rel_l2']:g}, "
            f"agreement >= {c['min_agreement']:g}, code flips <= {c['max_code_flips']:g}"
        )
        generation = report.generation
        if generation is not None:
            color = "green" if generation.passed else "red"
            out.print(
                f"[{color}]greedy tokens[/]: {generation.agreeing} of {generation.tokens} agree with PyTorch "
                f"({generation.agreement:.1%}, {generation.steps} steps)"
            )
    if report.passed:
        out.print(f"[bold green]PASSED[/]: {report.backend_label} matches PyTorch on every output ({tolerance})")
    else:
        out.print(f"[bold red]FAILED[/]: {report.backend_label} differs from PyTorch ({tolerance})")
        raise SystemExit(EXIT_FAILED)


def _number(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def print_component(out, report, component) -> None:
    """One component's table, then one line on its hash codes."""
    several = len(report.component_names) > 1
    title = f"{report.source} · {report.task} · {report.mode}" + (f" · {component.name}" if several else "")
    table = Table(title=title, title_justify="left")
    columns = ["output", "shape", "max abs", "mean abs", "max rel", "mean rel", "mismatched", "result"]
    if report.criteria:
        columns[-1:] = ["cosine", "rel L2", "agreement", "result"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("output", "shape", "result") else "right", no_wrap=True)
    for row in component.outputs:
        if row.missing:
            table.add_row(row.name, "-", "-", "-", "-", "-", "-", "[red]missing[/]")
            continue
        shape = "x".join(map(str, row.shape))
        if row.shape != row.reference_shape:
            shape += f" vs {'x'.join(map(str, row.reference_shape))}"
        cells = [
            row.name,
            shape,
            _number(row.max_abs),
            _number(row.mean_abs),
            _number(row.max_rel),
            _number(row.mean_rel),
            f"{row.mismatched}/{row.size}",
        ]
        if report.criteria:
            cells += [
                "-" if row.cosine is None else f"{row.cosine:.5f}",
                _number(row.rel_l2),
                "-" if row.agreement is None else f"{row.agreement:.1%}",
            ]
        table.add_row(*cells, "[green]ok[/]" if row.passed else "[red]mismatch[/]")
    out.print(table)
    label, codes = report.backend_label, component.hash_codes
    routing = component.routing
    if routing is not None and routing.total:
        color = "green" if routing.differing == 0 else "yellow"
        out.print(
            f"[{color}]routing[/]: {routing.differing} of {routing.total} token routes ({routing.share:.2%}) "
            f"differ between {label} and PyTorch over {routing.calls} sparse layers"
            + ("" if routing.complete else " [red](the captured routes did not match the layers one to one)[/]")
        )
        if len(routing.layers) > 1:
            out.print(
                "  per layer (differing/tokens): "
                + ", ".join(f"{r.layer}: {r.differing}/{r.tokens}" for r in routing.layers)
            )
        for layer in routing.layers:
            if layer.differing:
                # row:position of input_ids (or the flat token index)
                where = ", ".join(
                    ":".join(map(str, t)) if isinstance(t, list) else str(t) for t in layer.differing_tokens[:8]
                )
                more = ", ..." if layer.differing > 8 else ""
                out.print(
                    f"  layer {layer.layer} ({layer.op}): {layer.differing} of {layer.tokens} tokens chose other "
                    f"experts, at {where}{more}"
                )
    if codes is None:
        if component.note:
            out.print(f"[yellow]hash codes[/]: {component.note}")
        return
    if not codes.complete:
        out.print(
            f"[red]hash codes[/]: {label} produced {codes.code_tensors} code tensors, PyTorch hashed {codes.hash_calls} times"
        )
        return
    share = f"{codes.differing} of {codes.total} hash codes differ between {label} and PyTorch"
    if codes.max_flipped is not None:  # a quantized export: the flips are quantization's
        color = "green" if codes.passed else "red"
        out.print(
            f"[{color}]hash codes[/]: quantization flipped {codes.differing} of {codes.total} codes "
            f"({codes.flipped_share:.2%}, at most {codes.max_flipped:g} allowed; {codes.differing - codes.unexplained} "
            f"within rounding); outputs compared with PyTorch on {label}'s codes"
        )
        return
    if codes.unexplained:
        out.print(
            f"[red]hash codes[/]: {share}; {codes.unexplained} of them at projections farther than "
            f"{codes.margin:g} (relative) from zero - not rounding"
        )
        return
    detail = f", all from projections within {codes.worst_margin:.1g} of zero (rounding)" if codes.differing else ""
    out.print(f"[green]hash codes[/]: {share}{detail}; outputs compared with PyTorch on {label}'s codes")
