"""`bucketrt export`: a model to OUTPUT_DIR (its ONNX files and bucketrt.json)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from .app import console, main

_FLAG = "option_flag_"  # the parameter name of a family option's flag: _FLAG + OPTION


def _size(path: Path) -> str:
    size = path.stat().st_size if path.is_file() else 0
    return f"{size / 1e6:.1f} MB" if size < 1e9 else f"{size / 1e9:.2f} GB"


class _ExportCommand(click.Command):
    """Completes the command from the family registry when it runs or shows its help: the presets in
    --model's help, and a flag for each option a family declares one for (YOSO's --mask-padding),
    after --option. The registry imports the families (torch, transformers: about 2 s), which the
    CLI's other commands do not need."""

    _completed = False

    def get_params(self, ctx):
        if not self._completed:
            self._completed = True
            [model] = [param for param in self.params if param.name == "model"]
            from bucketrt.exporter.family import option_flags
            from bucketrt.exporter.presets import PRESETS

            model.help = f"A save_pretrained folder, a hub id, or a preset: {', '.join(PRESETS)}."
            self.params += [
                click.Option([f"--{option.replace('_', '-')}", _FLAG + option], is_flag=True, help=text)
                for option, text in option_flags().items()
            ]
        return super().get_params(ctx)


@main.command("export", cls=_ExportCommand)
@click.option(
    "--model",
    "-m",
    "model",
    required=True,
    metavar="MODEL",
    help="A save_pretrained folder, a hub id, or a preset.",  # the presets: _ExportCommand
)
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option(
    "--task",
    default=None,
    metavar="TASK",
    help="An Optimum task name (feature-extraction, fill-mask, text-classification, ...; a wrong one lists the "
    "model's). Default: from the config's architectures.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seeds preset weights, new heads and the LSH projections.",
)
@click.option("--opset", default=None, type=int, help="ONNX opset, 18 to 22. Default: 20.")
@click.option(
    "--config-override",
    "config_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change a config field before the model is built (JSON values), e.g. use_expectation=false. Repeatable.",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "fp16"]),
    default="fp32",
    show_default=True,
    help="Float type of the graph (weights, activations, float inputs and outputs). TensorRT 11 takes its "
    "precision from it. fp16 needs the ops' fp16 kernels for models that use bucketrt ops.",
)
@click.option(
    "--ops",
    "op_set",
    type=click.Choice(["bucketrt", "standard"]),
    default="bucketrt",
    show_default=True,
    help="How the graph computes bucketrt's ops: bucketrt, as bucketrt nodes (bucketrt's op library or TensorRT "
    "plugins run them); standard, as their standard-op lowerings, which any ONNX runtime runs without "
    "bucketrt's library (ONNX Runtime without it, OpenVINO, TensorRT for RTX).",
)
@click.option(
    "--option",
    "family_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A family's export option (JSON values), e.g. mask_padding=true for YOSO; an unknown one lists the "
    "family's. Repeatable.",
)
def export_command(model, output_dir, task, seed, opset, config_overrides, dtype, op_set, family_options, **flags):
    """Export MODEL to OUTPUT_DIR (its ONNX files and bucketrt.json)."""
    from bucketrt.exporter import export
    from bucketrt.exporter.progress import RichProgress

    out = console()
    # KEY=VALUE strings, parsed by export(); a family option's flag is its KEY=true, after the
    # --option ones. Options are passed only when given, so that an option of one family errs on another.
    options = [*family_options, *(f"{name.removeprefix(_FLAG)}=true" for name, given in flags.items() if given)]
    manifest = export(
        model,
        output_dir,
        task=task,
        seed=seed,
        opset=opset,
        config_overrides=list(config_overrides),
        options=options,
        progress=RichProgress(out),
        dtype=dtype,
        ops=op_set,
    )
    ops = ", ".join(f"{op['name']} x{op['nodes']}" for op in manifest["ops"]) or "standard ONNX only"
    if manifest["op_set"] == "standard":
        ops += " (--ops standard: no op library needed)"
    files = [output_dir / name for entry in manifest["components"] for name in entry["files"].values() if name]
    options = ", ".join(k.replace("_", " ") for k, v in manifest["options"].items() if v)
    out.print(
        f"[bold green]Exported[/] {manifest['source']} ({manifest['task']}, {manifest['mode']}"
        f"{', ' + options if options else ''}) to {output_dir} in {manifest['export_seconds']:.1f} s"
    )
    out.print(
        f"  {', '.join(f'{f.name} {_size(f)}' for f in files)}; opset {manifest['opset']}; {manifest['dtype']}; "
        f"bucketrt ops: {ops}"
    )
    written = [manifest["files"]["config"], manifest["files"]["generation_config"], *manifest["files"]["tokenizer"]]
    out.print(f"  beside them: {', '.join(name for name in written if name)}")
    if manifest["no_tokenizer"]:
        out.print(
            f"  [yellow]no tokenizer[/]: {escape(manifest['no_tokenizer'])}; pass one to bucketrt.pipeline(..., tokenizer=...)"
        )
    out.print(f"  check it with: bucketrt check {output_dir}")
