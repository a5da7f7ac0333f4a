"""`bucketrt ops`: the op catalogue and the backends the installed library was built with."""

from __future__ import annotations

import ctypes

import click
from rich.markup import escape
from rich.table import Table

from .app import console, main


def library_backends(path: str) -> dict[str, list[str]]:
    """Parses the library's `BucketrtBackends()` ("Op=backend;Op=backend,...") into op -> backends."""
    lib = ctypes.CDLL(path)
    function = lib.BucketrtBackends
    function.restype = ctypes.c_char_p
    function.argtypes = []
    text = (function() or b"").decode()
    out: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, _, backends = entry.partition("=")
        for backend in filter(None, (b.strip() for b in backends.split(","))):
            out.setdefault(name.strip(), [])
            if backend not in out[name.strip()]:
                out[name.strip()].append(backend)
    return out


@main.command("ops")
@click.option("--library", "library_only", is_flag=True, help="Print only the path of the ONNX Runtime op library.")
@click.option(
    "--trt-library",
    "trt_library_only",
    is_flag=True,
    help="Print only the path of the TensorRT plugin library (for trtexec --dynamicPlugins, polygraphy --plugins).",
)
def ops_command(library_only, trt_library_only):
    """List bucketrt's custom ops and the backends the installed library provides."""
    from bucketrt.benchmarking import cpu_kernel_variants
    from bucketrt.errors import LibraryNotBuiltError, TrtLibraryNotBuiltError
    from bucketrt.library import library_path, trt_library_path
    from bucketrt.ops.catalogue import OPS

    if library_only and trt_library_only:
        raise click.UsageError("--library and --trt-library are exclusive")
    if library_only:
        click.echo(library_path())  # a missing library exits 2 with one line
        return
    if trt_library_only:
        click.echo(trt_library_path())  # likewise
        return
    out = console()
    note = None
    try:
        path = library_path()
        backends = library_backends(path)
    except LibraryNotBuiltError as e:
        backends, note = {}, f"[yellow]No op library: {e}[/]"
    except (OSError, AttributeError) as e:
        backends, note = {}, f"[yellow]Cannot query the op library ({e})[/]"
    else:
        note = f"[dim]library: {path}[/]"
    try:
        trt_library = trt_library_path()
    except TrtLibraryNotBuiltError:
        trt_library = None
    else:
        # The plugin library is built from the same CUDA op table as the ORT library's CUDA
        # kernels: one TensorRT plugin per op with a CUDA kernel.
        for found in backends.values():
            if "ort-cuda" in found:
                found.append("trt")
    table = Table(title="bucketrt ops", title_justify="left")
    for column in ("op", "domain", "version", "backends", "summary"):
        table.add_column(column, overflow="fold")
    for op in OPS:
        found = backends.get(op.name)
        table.add_row(
            op.name, op.domain, str(op.version), ", ".join(found) if found else "[red]none[/]", escape(op.summary)
        )
    out.print(table)
    if note:
        out.print(note)
    variants = cpu_kernel_variants()  # empty without a loadable library
    if variants:
        shown = ", ".join(f"{family} {variant}" for family, variant in variants.items())
        out.print(f"[dim]CPU kernels on this CPU (BUCKETRT_SIMD=generic|avx2 caps them): {escape(shown)}[/]")
    if trt_library:
        out.print(f"[dim]TensorRT plugin library: {trt_library}[/]")
    else:
        out.print("[dim]TensorRT plugin library: not built (bucketrt was built without TensorRT_ROOT)[/]")
