"""`bucketrt quantize`: an fp32 export folder to an int8 one (bucketrt.quantization)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import console, main


@main.command("quantize")
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option(
    "--per-channel/--per-tensor",
    default=True,
    show_default=True,
    help="One weight scale per output channel, or one per weight tensor.",
)
@click.option("--weight-type", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True)
@click.option(
    "--reduce-range/--full-range",
    default=True,
    show_default=True,
    help="Linear layers' weights in 7 bits, or the full 8. ONNX Runtime's int8 kernel saturates with 8-bit weights "
    "on CPUs without VNNI (AVX2); --full-range is more precise where the model runs only on CPUs with VNNI. "
    "(LinearInt8 layers take 8 bits either way: their sums are exact on every CPU.)",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="NODE_PATTERN",
    help="Keep the MatMul/Gemm nodes whose names match float: a glob, or re:REGEX. Repeatable; each must match.",
)
@click.option(
    "--experts/--no-experts",
    default=None,
    help="MoE models: also quantize the experts' weights (ExpertFFN into ExpertFFNInt8, TopKExperts into "
    "TopKExpertsInt8). Default: where this bucketrt has the int8 expert ops.",
)
def quantize_command(export_dir, output_dir, per_channel, weight_type, reduce_range, exclude, experts):
    """Quantize every component of the fp32 export EXPORT_DIR into OUTPUT_DIR with ONNX Runtime's
    dynamic quantization (int8 weights of the MatMul/Gemm linear layers, activations quantized per
    run); a decoder's linear layers (a component with a key/value cache that calls bucketrt's ops)
    go to bucketrt's LinearInt8 instead, with --weight-type int8. bucketrt's own ops and routers stay
    float. `bucketrt check OUTPUT_DIR` compares the result with the fp32 PyTorch reference by the
    criteria its manifest records."""
    from bucketrt.benchmarking import cpu_isa
    from bucketrt.quantization import quantize

    out = console()
    if not reduce_range and not cpu_isa()["vnni"]:
        out.print(
            "[yellow]Warning:[/] --full-range on a CPU without VNNI: ONNX Runtime's int8 kernel here sums pairs of "
            "products into saturating int16, so `bucketrt check` on this machine may fail where a VNNI CPU passes"
        )
    manifest = quantize(
        export_dir,
        output_dir,
        per_channel=per_channel,
        weight_type=weight_type,
        reduce_range=reduce_range,
        exclude=exclude,
        experts=experts,
        console=out,
    )
    record = manifest["quantization"]
    layers = sum(c["quantized_nodes"] for c in record["components"].values())
    kept = sum(len(c["excluded_nodes"]) + len(c["router_nodes"]) for c in record["components"].values())
    experts_line = ""
    if record["experts"] is not None:
        experts_line = (
            "; experts int8" if record["experts"]["quantized"] else f"; experts float ({record['experts']['reason']})"
        )
    out.print(
        f"[bold green]Quantized[/] {export_dir} to {output_dir}: {layers} linear layers "
        f"{weight_type} ({'per channel' if per_channel else 'per tensor'}, "
        f"{'7-bit' if reduce_range else 'full'} range), {kept} kept float{experts_line}"
    )
