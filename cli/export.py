"""`bucketrt export`: a YOSO model to OUTPUT_DIR/model.onnx + bucketrt.json."""

from __future__ import annotations

from pathlib import Path

import click

from .app import console, main

_TASKS = "feature-extraction, fill-mask, text-classification, token-classification, question-answering, multiple-choice"


def _size(path: Path) -> str:
    size = path.stat().st_size if path.is_file() else 0
    return f"{size / 1e6:.1f} MB" if size < 1e9 else f"{size / 1e9:.2f} GB"


@main.command("export")
@click.option(
    "--model",
    "-m",
    "model",
    required=True,
    metavar="MODEL",
    help="A save_pretrained folder, a hub id, or a preset: yoso-4096 (YosoConfig defaults), yoso-tiny.",
)
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--task", default=None, metavar="TASK", help=f"One of {_TASKS}. Default: from the config's architectures.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seeds preset weights, new heads and the LSH projections.")
@click.option("--opset", default=None, type=int, help="ONNX opset, 18 to 22. Default: 18.")
@click.option(
    "--config-override",
    "config_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change a config field before the model is built (JSON values), e.g. use_expectation=false. Repeatable.",
)
@click.option(
    "--mask-padding",
    is_flag=True,
    help="Mask padded positions inside attention. Default: like Hugging Face, whose YOSO never masks them.",
)
def export_command(model, output_dir, task, seed, opset, config_overrides, mask_padding):
    """Export MODEL to OUTPUT_DIR (model.onnx and bucketrt.json)."""
    from bucketrt.exporter import export
    from bucketrt.exporter.progress import RichProgress

    out = console()
    manifest = export(
        model,
        output_dir,
        task=task,
        seed=seed,
        opset=opset,
        config_overrides=list(config_overrides),
        mask_padding=mask_padding,
        progress=RichProgress(out),
    )
    ops = ", ".join(f"{op['name']} x{op['nodes']}" for op in manifest["ops"]) or "standard ONNX only"
    files = [output_dir / manifest["files"]["model"]]
    if manifest["files"]["external_data"]:
        files.append(output_dir / manifest["files"]["external_data"])
    out.print(
        f"[bold green]Exported[/] {manifest['source']} ({manifest['task']}, {manifest['mode']} attention"
        f"{', padding masked' if manifest['mask_padding'] else ''}) to {output_dir} in {manifest['export_seconds']:.1f} s"
    )
    out.print(f"  {', '.join(f'{f.name} {_size(f)}' for f in files)}; opset {manifest['opset']}; bucketrt ops: {ops}")
    out.print(f"  check it with: bucketrt check {output_dir}")
