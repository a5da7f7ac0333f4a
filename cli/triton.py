"""`bucketrt triton`: a Triton Inference Server model repository for exports (bucketrt.serving)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import console, main


def _library_has_cuda() -> bool:
    from bucketrt.library import library_path

    from .ops import library_backends

    try:
        return any("ort-cuda" in found for found in library_backends(library_path()).values())
    except (OSError, AttributeError):
        return False


@main.command("triton")
@click.argument("export_dirs", nargs=-1, required=True, metavar="EXPORT_DIR...", type=click.Path(path_type=Path))
@click.option(
    "--repository",
    "-r",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The model repository to write or add to (created when missing).",
)
@click.option("--name", default=None, help="Model name (one export only). Default: the export folder's name.")
@click.option(
    "--backend",
    type=click.Choice(["python", "onnxruntime", "tensorrt"]),
    default="python",
    show_default=True,
    help="python: numpy + onnxruntime in the server's Python (any Triton); onnxruntime: Triton's ORT "
    "backend; tensorrt: the engines `bucketrt build` recorded.",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Triton's max_batch_size (0: no batch axis, no batching).",
)
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Model instances.")
@click.option(
    "--kind",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Instance kind (gpu: ORT's CUDA execution provider, or the TensorRT engine's device).",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Dynamic batching: how long a request may wait for others of its shape.",
)
@click.option(
    "--threads",
    "intra_op_threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="ORT intra-op threads per instance (0: ORT's default).",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Generation models: the default when a request does not send max_new_tokens.",
)
@click.option("--stream", is_flag=True, help="Generation models: stream tokens (Triton's decoupled mode).")
@click.option("--forward", is_flag=True, help="A causal-LM export: serve its logits instead of generating.")
@click.option(
    "--component",
    default=None,
    metavar="NAME",
    help="Serve this component's forward pass alone (e.g. encoder_model of a seq2seq export).",
)
@click.option(
    "--server-repository",
    default=None,
    metavar="PATH",
    help="The repository's path as the server sees it (e.g. /models in a container), for the library "
    "paths of the onnxruntime and tensorrt backends. Default: --repository's absolute path.",
)
@click.option("--force", is_flag=True, help="Replace models of the same name already in the repository.")
def triton_command(
    export_dirs,
    repository,
    name,
    backend,
    max_batch_size,
    instances,
    kind,
    max_queue_delay_us,
    intra_op_threads,
    max_new_tokens,
    stream,
    forward,
    component,
    server_repository,
    force,
):
    """Write (or add to) a Triton model repository serving EXPORT_DIR... (folders written by
    `bucketrt export`), one model each, with bucketrt's op library copied in.

    Batching never changes an answer: requests are never padded, and same-shape requests share one
    ORT call only for families whose answers are bit-identical batched (YOSO, Reformer); the others,
    and generation, run each request alone.
    """
    from bucketrt.serving import write_repository

    out = console()
    entries = write_repository(
        export_dirs,
        repository,
        name=name,
        backend=backend,
        max_batch_size=max_batch_size,
        instances=instances,
        kind=kind,
        max_queue_delay_us=max_queue_delay_us,
        overwrite=force,
        intra_op_threads=intra_op_threads,
        max_new_tokens=max_new_tokens,
        stream=stream,
        forward=forward,
        component=component,
        server_repository=server_repository,
    )
    for entry in entries:
        signature = ", ".join(f"{t.name} {t.dtype}{t.dims}" for t in entry.inputs)
        outputs = ", ".join(f"{t.name} {t.dtype}{t.dims}" for t in entry.outputs)
        out.print(
            f"[bold green]Wrote[/] {entry.path} ({entry.backend} backend, {entry.mode}, batching {entry.batching}): "
            f"{signature} → {outputs}"
        )
    if kind == "gpu" and backend != "tensorrt" and not _library_has_cuda():
        out.print(
            "[yellow]Note:[/] the op library copied in has no CUDA kernels (bucketrt was built without nvcc): "
            "ORT runs bucketrt's ops on the CPU. Rebuild bucketrt with CUDA (docs/cuda.md) and write the models again."
        )
    out.print(f"  launch notes: {Path(repository) / 'README.md'}")
    out.print(f"  serve it with: bucketrt serve {repository}")
