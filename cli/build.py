"""`bucketrt build`: TensorRT engines for the ONNX files of an export, with bucketrt's plugins.

Also the pieces `bucketrt check --backend trt` shares: TensorRT and plugin discovery, and the
optimisation profiles an export's components get.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from .app import EXIT_FAILED, console, fail_lines, main

# --------------------------------------------------------------------------------------------
# shared with `check --backend trt`
# --------------------------------------------------------------------------------------------


def prepare_tensorrt(manifest: dict, plugins: Path | None):
    """TensorRT and bucketrt's plugin library, loaded: (trt, library path or None).

    Raises BucketrtError (exit 2, one line) when TensorRT is missing, and TrtLibraryNotBuiltError
    when the export uses bucketrt ops and no plugin library was built or given. An export without
    bucketrt ops builds without the library.
    """
    import bucketrt
    from bucketrt.trt_engine import import_tensorrt, load_plugins

    trt = import_tensorrt()
    if plugins is None:
        if not manifest.get("ops"):
            return trt, None
        plugins = Path(bucketrt.trt_library_path())
    load_plugins(trt, str(plugins))
    return trt, str(plugins)


def parse_shape_option(ctx, param, value):
    """Click callback: a trtexec shape list, or None."""
    from bucketrt.profiles import ProfileError, parse_shapes

    if value is None:
        return None
    try:
        return parse_shapes(value, "--" + param.name.replace("_", "-"))
    except ProfileError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None


def component_profiles(manifest: dict, entries: list[dict], given: dict) -> dict:
    """{component name: {input: ShapeRange}} for `entries`; BucketrtError for shapes that do not fit.

    `given` maps "min"/"opt"/"max" to parsed shape options (None or {} when not given). Each shape
    applies to every component with an input of that name; a name no component has is an error.
    """
    from bucketrt.exporter import BucketrtError
    from bucketrt.exporter.family import family_named
    from bucketrt.profiles import ProfileError, resolve_profile

    given = {selector: dict(shapes or {}) for selector, shapes in given.items()}
    known = {spec["name"] for entry in entries for spec in entry["inputs"]}
    for selector, shapes in given.items():
        unknown = [name for name in shapes if name not in known]
        if unknown:
            raise BucketrtError(
                f"--{selector}-shapes names no input of the export: {', '.join(unknown)}",
                f"its inputs are {', '.join(sorted(known))}",
            )
    defaults = family_named(manifest["family"]).dim_ranges(manifest)
    try:
        return {entry["name"]: resolve_profile(entry["inputs"], given, defaults, entry["name"]) for entry in entries}
    except ProfileError as e:
        raise BucketrtError(str(e)) from None


def describe_profile(profile: dict) -> str:
    from bucketrt.profiles import format_shape

    return ", ".join(
        f"{name} {format_shape(r.min)}…{format_shape(r.max)} (opt {format_shape(r.opt)})" if r.min != r.max
        else f"{name} {format_shape(r.opt)}"
        for name, r in profile.items()
    )


class RichBuildProgress:
    """TensorRT's build phases: live bars on a terminal; one line per top-level phase otherwise
    (and on a terminal once the phase ends)."""

    def __init__(self, out):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.out = out
        self.bars = None
        if out.is_terminal:
            self.bars = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=out, transient=True,
            )
        self.tasks: dict[str, int] = {}
        self.depth: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def __enter__(self):
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc):
        if self.bars is not None:
            self.bars.stop()

    def phase_start(self, name, parent, steps):
        depth = self.depth.get(parent, -1) + 1 if parent else 0
        self.depth[name], self.started[name] = depth, time.perf_counter()
        if self.bars is not None:
            self.tasks[name] = self.bars.add_task("  " * depth + str(name), total=steps or None)

    def step_complete(self, name, step):
        if self.bars is not None and name in self.tasks:
            self.bars.update(self.tasks[name], completed=step + 1)

    def phase_finish(self, name):
        if self.bars is not None and name in self.tasks:
            self.bars.remove_task(self.tasks.pop(name))
        if self.depth.get(name) == 0:
            seconds = time.perf_counter() - self.started.get(name, time.perf_counter())
            self.out.print(f"  [green]✓[/] {name} [dim]({seconds:.1f} s)[/]")


def tensorrt_echo(out):
    """Where TensorRT's log lines go: stdout, dimmed (stderr is for bucketrt's own error lines)."""

    def echo(level: str, message: str) -> None:
        style = {"error": "red", "warning": "yellow"}.get(level, "dim")
        out.print(f"  [{style}]TensorRT {level}:[/] {' '.join(message.split())}", markup=True, highlight=False)

    return echo


def build_with_progress(out, trt, model_path: Path, profile: dict, options, export_dtype: str):
    """build_engine with progress output; BuildError ends the command with one line per problem."""
    from bucketrt.trt_engine import BuildError, build_engine

    try:
        with RichBuildProgress(out) as progress:
            return build_engine(trt, model_path, profile, options, export_dtype, progress=progress, echo=tensorrt_echo(out))
    except BuildError as e:
        fail_lines(e.lines, EXIT_FAILED)


def recorded_engine(output_dir: Path, manifest: dict, component: str) -> tuple[Path, dict] | None:
    """The engine `bucketrt build` recorded for a component, when its file still exists."""
    record = (manifest.get("engines") or {}).get(component)
    if not record:
        return None
    path = Path(record["file"])
    path = path if path.is_absolute() else Path(output_dir) / path
    return (path, record) if path.is_file() else None


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def _shape_option(name: str, which: str, example: str):
    return click.option(
        name, metavar="SHAPES", default=None, callback=parse_shape_option,
        help=f"{which} input shapes, in trtexec's syntax: input_ids:{example},attention_mask:{example}.",
    )


@main.command("build")
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--component", "components", multiple=True, metavar="NAME",
              help="Build only this component (repeatable). Default: every ONNX file of the export.")
@click.option("--engine", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Engine file to write, for one component. Default: OUTPUT_DIR/<component>.engine.")
@_shape_option("--min-shapes", "Smallest", "1x1")
@_shape_option("--opt-shapes", "Tuned-for", "1x512")
@_shape_option("--max-shapes", "Largest", "8x4096")
@click.option("--timing-cache", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="TensorRT timing cache: read when it exists, written after each build (trtexec's --timingCacheFile).")
@click.option("--workspace", type=click.IntRange(min=1), default=None, metavar="MiB",
              help="Workspace memory pool limit in MiB. Default: TensorRT's (the device's memory).")
@click.option("--fp16", is_flag=True,
              help="TensorRT 10: let TensorRT's own layers run in fp16 in an fp32 export (BuilderFlag.FP16). "
              "TensorRT 11 is strongly typed: export with --dtype fp16 instead.")
@click.option("--tf32/--no-tf32", default=True, show_default=True,
              help="Allow TF32 in fp32 matmuls (TensorRT's default; trtexec's --noTF32 turns it off).")
@click.option("--plugins", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="bucketrt's TensorRT plugin library. Default: the one built with bucketrt (bucketrt ops --trt-library).")
@click.option("--verbose", "-v", is_flag=True, help="Show TensorRT's info messages.")
def build_command(output_dir, components, engine, min_shapes, opt_shapes, max_shapes, timing_cache, workspace, fp16,
                  tf32, plugins, verbose):
    """Build a TensorRT engine for every ONNX file of OUTPUT_DIR (written by `bucketrt export`),
    with bucketrt's plugins, and record the engines in its bucketrt.json.

    Inputs left out of the shape options take the ranges of inputs that share their dims
    (batch_size, sequence_length, ...), else defaults: batch 1 to 8 (opt 1), sequences 1 to the
    model's max length (opt 128). As in trtexec, an input given in only some of the shape options
    takes opt for the missing min and max, and max (or min) for a missing opt.

    Exit status 1 when TensorRT cannot parse or build a model (one line per problem), 2 for usage
    problems, a missing TensorRT or a missing plugin library included.
    """
    from bucketrt.exporter import BucketrtError, read_manifest
    from bucketrt.exporter import manifest as mf
    from bucketrt.profiles import format_shape
    from bucketrt.trt_engine import BuildOptions, check_options, write_engine

    out = console()
    manifest = read_manifest(output_dir)
    names = [e["name"] for e in manifest["components"]]
    unknown = [c for c in components if c not in names]
    if unknown:
        raise BucketrtError(f"the export has no component {', '.join(map(repr, unknown))}", f"it has: {', '.join(names)}")
    entries = [e for e in manifest["components"] if not components or e["name"] in components]
    if engine is not None and len(entries) > 1:
        raise BucketrtError(
            f"--engine names one file, and the export has {len(entries)} components ({', '.join(names)})",
            "choose one with --component, or leave --engine out for OUTPUT_DIR/<component>.engine",
        )
    profiles = component_profiles(manifest, entries, {"min": min_shapes, "opt": opt_shapes, "max": max_shapes})
    export_dtype = manifest.get("dtype", "fp32")
    options = BuildOptions(workspace_mib=workspace, timing_cache=timing_cache, fp16=fp16, tf32=tf32, verbose=verbose)

    trt, library = prepare_tensorrt(manifest, plugins)
    check_options(trt, options, export_dtype)
    out.print(
        f"TensorRT {trt.__version__}; plugins: {library or 'none (the export uses no bucketrt ops)'}; "
        f"{export_dtype} export"
    )
    for entry in entries:
        model_path = Path(output_dir) / entry["files"]["model"]
        engine_path = Path(engine) if engine is not None else Path(output_dir) / f"{entry['name']}.engine"
        profile = profiles[entry["name"]]
        out.print(f"Building {model_path.name} → {engine_path}: {describe_profile(profile)}")
        built = build_with_progress(out, trt, model_path, profile, options, export_dtype)
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
    out.print(f"  check it with: bucketrt check {output_dir} --backend trt")
