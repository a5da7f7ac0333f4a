"""`bucketrt build`: TensorRT engines for the ONNX files of an export, with bucketrt's plugins
(bucketrt.trt.engine), recorded in its bucketrt.json for `bucketrt check --backend trt`; or, with
--rtx, TensorRT for RTX engines of a standard-op export (no plugins, no GPU needed to build)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import EXIT_FAILED, console, fail_lines, main
from .options import plugins_option, verbose_option


def parse_shape_option(ctx, param, value):
    """Click callback: a trtexec shape list, or None."""
    from bucketrt.errors import ProfileError
    from bucketrt.trt.profiles import parse_shapes

    if value is None:
        return None
    try:
        return parse_shapes(value, "--" + param.name.replace("_", "-"))
    except ProfileError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def _shape_option(name: str, which: str, example: str):
    return click.option(
        name,
        metavar="SHAPES",
        default=None,
        callback=parse_shape_option,
        help=f"{which} input shapes, in trtexec's syntax: input_ids:{example},attention_mask:{example}.",
    )


@main.command("build")
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option(
    "--component",
    "components",
    multiple=True,
    metavar="NAME",
    help="Build only this component (repeatable). Default: every ONNX file of the export.",
)
@click.option(
    "--engine",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Engine file to write, for one component. Default: OUTPUT_DIR/<component>.engine.",
)
@_shape_option("--min-shapes", "Smallest", "1x1")
@_shape_option("--opt-shapes", "Tuned-for", "1x512")
@_shape_option("--max-shapes", "Largest", "8x4096")
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TensorRT timing cache: read when it exists, written after each build (trtexec's --timingCacheFile).",
)
@click.option(
    "--workspace",
    type=click.IntRange(min=1),
    default=None,
    metavar="MiB",
    help="Workspace memory pool limit in MiB. Default: TensorRT's (the device's memory).",
)
@click.option(
    "--fp16",
    is_flag=True,
    help="TensorRT 10: let TensorRT's own layers run in fp16 in an fp32 export (BuilderFlag.FP16). "
    "TensorRT 11 is strongly typed: export with --dtype fp16 instead.",
)
@click.option(
    "--tf32/--no-tf32",
    default=True,
    show_default=True,
    help="Allow TF32 in fp32 matmuls (TensorRT's default; trtexec's --noTF32 turns it off).",
)
@click.option(
    "--rtx",
    is_flag=True,
    help="Build with TensorRT for RTX (tensorrt_rtx; `make trt-rtx-env`) instead of TensorRT: no GPU needed to "
    "build; its engines run on Ampere, Ada and Blackwell GPUs, not Hopper. It has no plugin layers: exports made "
    "with --ops standard only.",
)
@plugins_option
@verbose_option
def build_command(
    output_dir,
    components,
    engine,
    min_shapes,
    opt_shapes,
    max_shapes,
    timing_cache,
    workspace,
    fp16,
    tf32,
    rtx,
    plugins,
    verbose,
):
    """Build a TensorRT engine for every ONNX file of OUTPUT_DIR (written by `bucketrt export`),
    with bucketrt's plugins, and record the engines in its bucketrt.json.

    Inputs left out of the shape options take the ranges of inputs that share their dims
    (batch_size, sequence_length, ...), else defaults: batch 1 to 8 (opt 1), sequences 1 to the
    model's max length (opt 128). As in trtexec, an input given in only some of the shape options
    takes opt for the missing min and max, and max (or min) for a missing opt.

    With --rtx, TensorRT for RTX builds the engines, on any machine (no GPU needed), for exports
    without bucketrt ops (`bucketrt export --ops standard`); an export with them is refused in one
    line before its parser runs.

    Exit status 1 when TensorRT cannot parse or build a model (one line per problem), 2 for usage
    problems, a missing TensorRT or a missing plugin library included.
    """
    from bucketrt.errors import BucketrtError, BuildError
    from bucketrt.export_format import manifest as mf
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.trt.engine import (
        TENSORRT,
        TENSORRT_RTX,
        BuildOptions,
        build_engine,
        build_progress,
        check_options,
        load_tensorrt,
        refuse_bucketrt_nodes,
        write_engine,
    )
    from bucketrt.trt.profiles import component_profiles, describe_profile, device_memory, format_shape

    out = console()
    manifest = read_manifest(output_dir)
    product = TENSORRT_RTX if rtx else TENSORRT
    names = [e["name"] for e in manifest["components"]]
    unknown = [c for c in components if c not in names]
    if unknown:
        raise BucketrtError(
            f"the export has no component {', '.join(map(repr, unknown))}", f"it has: {', '.join(names)}"
        )
    entries = [e for e in manifest["components"] if not components or e["name"] in components]
    if engine is not None and len(entries) > 1:
        raise BucketrtError(
            f"--engine names one file, and the export has {len(entries)} components ({', '.join(names)})",
            "choose one with --component, or leave --engine out for OUTPUT_DIR/<component>.engine",
        )
    # Sized before building from an activation estimate: TensorRT itself would fail much later,
    # creating the execution context.
    if workspace:
        budget, source = workspace << 20, f"--workspace {workspace}"
    else:
        budget, source = device_memory(), "the device's memory"
    profiles = component_profiles(
        manifest,
        entries,
        {"min": min_shapes, "opt": opt_shapes, "max": max_shapes},
        memory_budget=budget,
        budget_source=source,
    )
    export_dtype = manifest.get("dtype", "fp32")
    options = BuildOptions(workspace_mib=workspace, timing_cache=timing_cache, fp16=fp16, tf32=tf32, verbose=verbose)

    trt, library = load_tensorrt(manifest, plugins, product)
    check_options(trt, options, export_dtype)
    if not product.plugins:  # every graph, before anything is built (the manifest may be older than them)
        for entry in entries:
            refuse_bucketrt_nodes(Path(output_dir) / entry["files"]["model"], product)
    out.print(
        f"{product.name} {trt.__version__}; plugins: {library or 'none (the export uses no bucketrt ops)'}; "
        f"{export_dtype} export"
    )
    for entry in entries:
        model_path = Path(output_dir) / entry["files"]["model"]
        engine_path = Path(engine) if engine is not None else Path(output_dir) / f"{entry['name']}.engine"
        profile = profiles[entry["name"]]
        out.print(f"Building {model_path.name} → {engine_path}: {describe_profile(profile)}")
        try:
            with build_progress(out) as (progress, echo):
                built = build_engine(trt, model_path, profile, options, export_dtype, progress=progress, echo=echo)
        except BuildError as e:
            fail_lines(e.lines, EXIT_FAILED)
        write_engine(engine_path, built.data)
        try:
            recorded = engine_path.resolve().relative_to(Path(output_dir).resolve())
        except ValueError:
            recorded = engine_path.resolve()
        manifest.setdefault("engines", {})[entry["name"]] = {
            "file": str(recorded),
            "profile": {name: r.to_json() for name, r in profile.items()},
            "precision": built.precision,
            "strongly_typed": built.strongly_typed,
            "workspace_mib": workspace,
            "product": built.product,
            "tensorrt": built.tensorrt_version,
            "plugins": library,
            "build_seconds": round(built.seconds, 2),
        }
        mf.write_manifest(output_dir, manifest)  # after each engine: a later failure keeps the earlier ones
        size = len(built.data) / 1e6
        out.print(
            f"[bold green]Built[/] {engine_path} ({size:.1f} MB, {built.precision}) in {built.seconds:.1f} s; "
            f"opt shapes {', '.join(f'{n}:{format_shape(r.opt)}' for n, r in profile.items())}"
        )
    if timing_cache is not None:
        out.print(f"  timing cache: {timing_cache}")
    if product.plugins:
        out.print(f"  check it with: bucketrt check {output_dir} --backend trt")
    else:
        out.print(f"  {product.name} engines run on Ampere, Ada and Blackwell GPUs (not Hopper) with {product.name}")
