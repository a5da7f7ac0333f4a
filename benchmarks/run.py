"""bucketrt's benchmarks (not timed tests): every figure is a ratio measured in this one run.

1. Ops alone: LSHCumulation and SignHash in ONNX Runtime (C++ kernels) against their PyTorch
   references at YOSO-4096's attention size (B*H=12, N=4096, D=64, m=32, L=9).
2. Whole models, ONNX Runtime against PyTorch eager on the same export: yoso-4096 in expectation
   mode (YOSO-E) and in LSH mode, N = 512 ... 4096.
3. What users run today: yoso-4096 in LSH mode against the same-size BERT (softmax attention),
   both in ONNX Runtime, N = 1024 ... 4096, batch 1, and how each grows with N.
4. Reformer (the reformer-crime-and-punishment preset, LM head): ONNX Runtime against Hugging
   Face's own model in PyTorch eager and against the export's PyTorch reference, N = 1024, 4096,
   16384, with growth against N log N; and its two ops alone against their PyTorch references
   (the decomposed formulation: sort, gathers, batched matmuls, scatter).
5. SwitchTransformers (benchmarks/switch.py): the MoE layer against a dense FFN of the same d_ff,
   and the switch-base-8 encoder in ORT against PyTorch eager, batch 8 x 128.
6. LSG: the lsg-bert-4096 preset (feature extraction) in ONNX Runtime against PyTorch eager and
   against the same BERT with full attention in ONNX Runtime, N = 4096, batch 1; plus an ONNX
   Runtime profile of the LSG model split into dense layers and attention.
7. int8 (`bucketrt quantize`): every family's quantized export against its fp32 export in ONNX
   Runtime and against PyTorch eager in fp32 and in bf16 autocast; for YOSO and LSG also the
   same-size BERT in ONNX Runtime fp32 and int8 and in PyTorch fp32 and bf16 - one run, with the
   CPU's ISA flags printed. With --plot-dir, one figure per model (time against N, log-log).
8. Mixture-of-experts causal LMs (benchmarks/moe.py): Mixtral-, Qwen3-MoE- and PhiMoE-like random
   models, prefill and decode tokens per second and peak memory, bucketrt fp32 and int8 against
   transformers eager (experts loop and grouped_mm, fp32 and bf16), the dense export in ONNX Runtime
   (torch.onnx and optimum-onnx) and onnxruntime-genai fp32 and int8, each in its own process, with
   issue 23's goal ratios as PASS/MISS; the peers' environments come from `make moe-peers`.
9. Serving (benchmarks/serving.py): yoso-4096 (LSH) behind Triton's Python backend (dynamic batching
   on and off) against in-process ORT, 1, 4 and 16 clients; needs `make triton-env`.
10. Standard ops (`bucketrt export --ops standard`): per family and length, the standard-op export
   against the custom-op export in ONNX Runtime on the CPU (bucketrt's kernels against their
   lowerings), and OpenVINO (float32, and its default precision: bfloat16 on CPUs with AVX512-BF16
   or AMX) against ONNX Runtime on the standard-op export - one run, with the CPU's ISA printed.

    make bench                           # everything, about 30 minutes on 2 cores
    python benchmarks/run.py --only ops  # one part: ops | models | bert | reformer | switch | lsg | int8 | moe | serving | standard
    python benchmarks/run.py --only moe --plot-dir docs   # --moe-size small --moe-lengths 64,256 --moe-new 16: minutes
    python benchmarks/run.py --only standard --standard-models yoso-4096,lsg-bert-4096 --standard-lengths 1024,4096
    python benchmarks/run.py --only int8 --int8-models yoso-4096 --int8-lengths 1024,4096 --plot-dir docs
    python benchmarks/run.py --lengths 512,1024 --markdown out/bench/results.md

Exports are cached under out/bench/ (delete it to re-export).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from bucketrt.benchmarking import bench_export, measure
from bucketrt.library import op_session
from bucketrt.ops import reference
from bucketrt.ops.catalogue import LSH_CUMULATION, SIGN_HASH, hadamard_parts

OUT = Path("out/bench")
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def bench_ops(threads: int, repeat: int) -> None:
    batch, length, dim, num_hash, bits = 12, 4096, 64, 32, 9
    say(f"## Ops alone (B*H={batch}, N={length}, D={dim}, m={num_hash}, L={bits}, {threads} threads)")
    say("")
    say("| op | PyTorch reference ms | ORT kernel ms | speed-up |")
    say("|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    mask = np.ones((batch, length), np.int32)
    vector = rng.standard_normal((batch, length, dim), dtype=np.float32)
    projection = (rng.integers(0, 2, (batch, 3 * hadamard_parts(dim, num_hash, bits), dim)) * 2 - 1).astype(np.float32)
    hash_attrs = {"num_hash": num_hash, "hash_code_len": bits, "transform": "hadamard"}
    codes = reference.sign_hash(
        torch.from_numpy(mask), torch.from_numpy(vector), torch.from_numpy(projection), **hash_attrs
    ).numpy()
    cases = [
        (SIGN_HASH, hash_attrs, {"mask": mask, "vector": vector, "projection": projection}),
        (
            LSH_CUMULATION,
            {"hashtable_capacity": 2**bits},
            {
                "query_mask": mask,
                "query_hash": codes,
                "key_mask": mask,
                "key_hash": codes,
                "value": rng.standard_normal((batch, length, dim), dtype=np.float32),
            },
        ),
    ]
    for spec, attrs, feeds in cases:
        session = op_session(spec, attrs, intra_op_num_threads=threads)
        tensors = [torch.from_numpy(feeds[t.name]) for t in spec.inputs]
        ref_fn = reference.REFERENCES[spec.name]
        with torch.inference_mode():
            torch_t = measure(lambda: ref_fn(*tensors, **attrs), repeat=repeat)
        ort_t = measure(lambda: session.run(None, feeds), repeat=repeat)
        say(f"| {spec.name} | {torch_t.ms:.1f} | {ort_t.ms:.1f} | {torch_t.median_s / ort_t.median_s:.1f}x |")
    say("")


# Exports and quantized copies are cached under OUT, each with the build that made it: the hash of
# the installed bucketrt's code (its Python files, the exporter's and the op library). A cache made
# by other code is made again, so that a run never times an export of an older exporter.
BUILD_MARK = "bench-build.txt"


@functools.cache
def build_fingerprint() -> str:
    import hashlib

    import bucketrt
    import bucketrt.exporter
    from bucketrt.errors import BucketrtError
    from bucketrt.library import library_path

    roots = {Path(bucketrt.__file__).parent, Path(bucketrt.exporter.__file__).parent}
    files = sorted({path for root in roots for path in root.rglob("*.py")})
    try:
        files.append(Path(library_path()))
    except BucketrtError:  # no op library: exports of the standard ops only
        pass
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached(out: Path) -> bool:
    """Whether `out` holds a complete export (or quantized copy) made by this build."""
    from bucketrt.errors import BucketrtError
    from bucketrt.export_format.manifest import read_manifest

    try:
        read_manifest(out)
    except BucketrtError:
        return False
    mark = out / BUILD_MARK
    return mark.exists() and mark.read_text() == build_fingerprint()


def make_cached(out: Path, make) -> Path:
    """`make()` writes `out` unless it is cached; a new `out` drops its quantized copy (OUT-int8)."""
    if not cached(out):
        (out / BUILD_MARK).unlink(missing_ok=True)
        make()
        (out / BUILD_MARK).write_text(build_fingerprint())
        shutil.rmtree(out.with_name(out.name + "-int8"), ignore_errors=True)
    return out


def export_once(name: str, model: str, overrides: dict, task: str | None = None, ops: str = "bucketrt") -> Path:
    from bucketrt.exporter import export

    def make():
        print(f"exporting {name} ...", flush=True)
        export(model, OUT / name, task=task, config_overrides=overrides, ops=ops)

    return make_cached(OUT / name, make)


def bench_models(threads: int, repeat: int, lengths: tuple[int, ...]) -> None:
    for name, overrides in (("yoso-4096-e", {}), ("yoso-4096-lsh", {"use_expectation": False})):
        folder = export_once(name, "yoso-4096", overrides)
        say(f"## {name}: ONNX Runtime vs PyTorch eager (batch 1, {threads} threads)")
        say("")
        say("| N | PyTorch ms | ORT ms | ORT speed-up | ORT growth vs first N |")
        say("|---:|---:|---:|---:|---:|")
        rows = bench_export(folder, lengths, batch_size=1, threads=threads, repeat=repeat)
        for row in rows:
            say(
                f"| {row.sequence_length} | {row.torch.ms:.0f} | {row.ort.ms:.0f} | {row.speedup:.2f}x | "
                f"{row.ort.median_s / rows[0].ort.median_s:.2f}x |"
            )
        say("")


def export_bert(max_len: int) -> Path:
    """The same-size BERT (yoso-4096's dims, softmax attention) through the stock ONNX exporter."""

    out = OUT / "bert-4096" / "model.onnx"
    if out.exists():
        return out
    print("exporting bert-4096 ...", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = bert_model(max_len, attn="eager")

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, model.config.vocab_size, (1, 64))
    batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length", max=max_len)
    program = torch.onnx.export(
        Hidden(),
        (ids, torch.ones_like(ids)),
        dynamo=True,
        verbose=False,
        dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
    )
    program.save(str(out))
    return out


def bench_bert(threads: int, repeat: int, lengths: tuple[int, ...]) -> None:
    import onnxruntime as ort

    import bucketrt
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import make_inputs

    yoso_dir = export_once("yoso-4096-lsh", "yoso-4096", {"use_expectation": False})
    bert_path = export_bert(4096)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    bert = ort.InferenceSession(str(bert_path), options, providers=["CPUExecutionProvider"])
    yoso = bucketrt.ort_session(yoso_dir, intra_op_num_threads=threads)
    manifest = read_manifest(yoso_dir)
    say(f"## yoso-4096 (LSH) vs same-size BERT (softmax), both in ONNX Runtime (batch 1, {threads} threads)")
    say("")
    say("| N | BERT ms | YOSO-LSH ms | YOSO speed-up | BERT growth | YOSO growth |")
    say("|---:|---:|---:|---:|---:|---:|")
    first = None
    for length in lengths:
        feeds = make_inputs(manifest, batch_size=1, sequence_length=length, padding=False)
        bert_t = measure(lambda: bert.run(None, feeds), repeat=repeat, budget_s=60)
        yoso_t = measure(lambda: yoso.run(None, feeds), repeat=repeat, budget_s=60)
        first = first or (bert_t, yoso_t)
        say(
            f"| {length} | {bert_t.ms:.0f} | {yoso_t.ms:.0f} | {bert_t.median_s / yoso_t.median_s:.2f}x | "
            f"{bert_t.median_s / first[0].median_s:.2f}x | {yoso_t.median_s / first[1].median_s:.2f}x |"
        )
    say("")


def _profile_split(session_path: Path, feeds: dict, threads: int) -> tuple[float, dict[str, float]]:
    """One profiled ONNX Runtime run: (total node ms, ms per class).

    Classes, from the shapes ORT records (it leaves out initializers): "dense" = MatMul/Gemm with
    one recorded input or a 2-D one (a weight: the linear layers); "attention matmul" = MatMul
    between activations (scores and context); "softmax"; "attention other" = any other node with
    an input of rank >= 4, i.e. on per-head tensors (mask adds, block windows, sparse selection,
    concats, head transposes); "rest" = layer norms, GELU, bias adds, embeddings.
    """
    import json

    import onnxruntime as ort

    import bucketrt

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(OUT / "lsg-profile")
    session = bucketrt.ort_session(session_path, options=options)
    session.run(None, feeds)  # warm-up, profiled too: only the last run is counted below
    session.run(None, feeds)
    trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start = runs[-1]["ts"]
    split: dict[str, float] = {}
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < start:
            continue
        op = event["args"].get("op_name", "")
        shapes = [list(s.values())[0] for s in event["args"].get("input_type_shape", [])]
        if op in ("MatMul", "FusedMatMul", "Gemm"):
            kind = "dense" if len(shapes) < 2 or any(len(s) == 2 for s in shapes) else "attention matmul"
        elif op == "Softmax":
            kind = "softmax"
        elif any(len(s) >= 4 for s in shapes):
            kind = "attention other"
        else:
            kind = "rest"
        split[kind] = split.get(kind, 0.0) + event["dur"] / 1e3
        split[f"op:{op}"] = split.get(f"op:{op}", 0.0) + event["dur"] / 1e3
    total = sum(v for k, v in split.items() if not k.startswith("op:"))
    return total, split


def bench_lsg(threads: int, repeat: int, length: int = 4096) -> None:
    import onnxruntime as ort

    import bucketrt
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_reference, make_inputs

    lsg_dir = export_once("lsg-bert-4096", "lsg-bert-4096", {}, task="feature-extraction")
    bert_path = export_bert(4096)  # BERT base dims (yoso-4096's are BERT base's), full attention
    manifest = read_manifest(lsg_dir)
    feeds = make_inputs(manifest, batch_size=1, sequence_length=length, padding=False)
    bert_feeds = {k: v for k, v in feeds.items() if k in ("input_ids", "attention_mask")}
    load = os.getloadavg()
    say(f"## lsg-bert-4096 (norm sparsity, block 128) at N={length}, batch 1, {threads} threads")
    say("")
    say(f"Load average before: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} cores.")
    say("")
    reference = load_reference(lsg_dir)
    with torch.inference_mode():
        torch_t = measure(lambda: reference.run(feeds), repeat=repeat, budget_s=90)
    reference = None  # frees the PyTorch model before ORT's session is made
    lsg = bucketrt.ort_session(lsg_dir, intra_op_num_threads=threads)
    lsg_t = measure(lambda: lsg.run(None, feeds), repeat=repeat, budget_s=90)
    lsg = None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    bert = ort.InferenceSession(str(bert_path), options, providers=["CPUExecutionProvider"])
    bert_t = measure(lambda: bert.run(None, bert_feeds), repeat=repeat, budget_s=90)
    bert = None
    say("| model | runtime | ms (median) | runs | LSG ORT speed-up |")
    say("|---|---|---:|---:|---:|")
    say(
        f"| LSG (port) | PyTorch eager | {torch_t.ms:.0f} | {torch_t.runs} | {torch_t.median_s / lsg_t.median_s:.2f}x |"
    )
    say(f"| LSG | ONNX Runtime | {lsg_t.ms:.0f} | {lsg_t.runs} | 1.00x |")
    say(
        f"| BERT, full attention | ONNX Runtime | {bert_t.ms:.0f} | {bert_t.runs} | {bert_t.median_s / lsg_t.median_s:.2f}x |"
    )
    say("")
    total, split = _profile_split(lsg_dir, feeds, threads)
    say(f"ONNX Runtime profile of the LSG model (one run, node time {total:.0f} ms):")
    say("")
    say("| part | ms | share |")
    say("|---|---:|---:|")
    for kind in ("dense", "attention matmul", "softmax", "attention other", "rest"):
        say(f"| {kind} | {split.get(kind, 0.0):.0f} | {100 * split.get(kind, 0.0) / total:.0f}% |")
    ops = sorted(((k[3:], v) for k, v in split.items() if k.startswith("op:")), key=lambda kv: -kv[1])
    say("")
    say("Top op types: " + ", ".join(f"{op} {ms:.0f} ms" for op, ms in ops[:8]))
    load = os.getloadavg()
    say("")
    say(f"Load average after: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min).")
    say("")


class Int8Model(NamedTuple):
    """One model of the int8 part."""

    export: str  # export name, shared with the parts above
    preset: str
    overrides: dict  # config overrides
    task: str | None
    batch: int
    lengths: tuple[int, ...]  # default sequence lengths
    with_bert: bool  # the same-size BERT runs beside it
    # transformers' own model runs on CPU in PyTorch: timed too, in fp32 and bf16 (Reformer's LSH
    # attention is PyTorch code; YOSO's LSH is CUDA-only there, and bucketrt's reference ops take no bf16)
    with_transformers: bool = False


INT8_MODELS = {
    "yoso-4096": Int8Model("yoso-4096-lsh", "yoso-4096", {"use_expectation": False}, None, 1, (1024, 2048, 4096), True),
    "lsg-bert-4096": Int8Model("lsg-bert-4096", "lsg-bert-4096", {}, "feature-extraction", 1, (1024, 4096), True),
    "reformer": Int8Model(
        "reformer-crime-and-punishment", "reformer-crime-and-punishment", {}, None, 1, (1024, 4096), False, True
    ),
    "switch-base-8": Int8Model(
        "switch-base-8-encoder", "switch-base-8", {}, "feature-extraction-encoder", 8, (128,), False
    ),
}


def quantize_once(folder: Path) -> Path:
    from bucketrt.quantization import quantize

    out = folder.with_name(folder.name + "-int8")  # a new export of folder drops it (make_cached)

    def make():
        print(f"quantizing {folder.name} ...", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        quantize(folder, out)

    return make_cached(out, make)


def bert_model(max_len: int, attn: str = "sdpa"):
    """The same-size BERT (yoso-4096's dims = BERT base), seed 0: the one export_bert exports too."""
    from transformers import BertConfig, BertModel, YosoConfig

    torch.manual_seed(0)
    yoso = YosoConfig()  # the yoso-4096 preset's architecture
    config = BertConfig(
        vocab_size=yoso.vocab_size,
        hidden_size=yoso.hidden_size,
        num_hidden_layers=yoso.num_hidden_layers,
        num_attention_heads=yoso.num_attention_heads,
        intermediate_size=yoso.intermediate_size,
        type_vocab_size=yoso.type_vocab_size,
        max_position_embeddings=max_len,
        attn_implementation=attn,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def bench_int8(
    threads: int,
    repeat: int,
    models: list[str],
    lengths: tuple[int, ...] | None,
    plot_dir,
    torch_max: int | None = None,
) -> None:
    import json

    import onnxruntime as ort

    import bucketrt
    from bucketrt.benchmarking import cpu_isa, describe_isa, plot_scaling
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_reference, load_transformers_model, make_inputs
    from bucketrt.quantization import quantize_model_file

    isa = cpu_isa()
    say(f"## int8 (`bucketrt quantize`) against fp32 and the PyTorch peers ({threads} threads)")
    say("")
    say(f"CPU: {describe_isa(isa)}. Load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.")
    say("")
    results = {}
    for key in models:
        name, preset, overrides, task, batch, default_lengths, with_bert, with_transformers = INT8_MODELS[key]
        folder = export_once(name, preset, overrides, task=task)
        qfolder = quantize_once(folder)
        manifest = read_manifest(folder)
        first = manifest["components"][0]["name"]
        runs = {}  # label -> callable(feeds), in the table's order
        fp32 = bucketrt.ort_session(folder, intra_op_num_threads=threads, component=first)
        int8 = bucketrt.ort_session(qfolder, intra_op_num_threads=threads, component=first)
        reference = load_reference(folder)
        runs["bucketrt ORT fp32"] = lambda f: fp32.run(None, f)
        runs["bucketrt ORT int8"] = lambda f: int8.run(None, f)
        # PyTorch eager runs the export's reference: Hugging Face's model with bucketrt's reference
        # ops (YOSO's LSH on CPU exists only as those), in fp32 and under bf16 autocast.
        runs["PyTorch eager fp32"] = lambda f: reference.run(f)

        def bf16(f, run=reference.run):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return run(f)

        runs["PyTorch eager bf16"] = bf16
        if with_transformers:
            hf = load_transformers_model(folder)

            def hf_fp32(f, hf=hf):
                return hf(**{k: torch.from_numpy(v) for k, v in f.items() if k in ("input_ids", "attention_mask")})

            def hf_bf16(f, run=hf_fp32):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return run(f)

            runs["transformers eager fp32"] = hf_fp32
            runs["transformers eager bf16"] = hf_bf16
        if with_bert:
            bert_path = export_bert(4096)
            bert_int8 = bert_path.with_name("model-int8.onnx")
            if not bert_int8.exists():
                quantize_model_file(bert_path, bert_int8)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            bert_fp32_s = ort.InferenceSession(str(bert_path), options, providers=["CPUExecutionProvider"])
            bert_int8_s = ort.InferenceSession(str(bert_int8), options, providers=["CPUExecutionProvider"])
            bert = bert_model(4096)
            pick = lambda f: {k: v for k, v in f.items() if k in ("input_ids", "attention_mask")}  # noqa: E731

            def bert_torch(f):
                return bert(**{k: torch.from_numpy(v) for k, v in pick(f).items()})

            def bert_bf16(f):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return bert_torch(f)

            runs["BERT ORT fp32"] = lambda f: bert_fp32_s.run(None, pick(f))
            runs["BERT ORT int8"] = lambda f: bert_int8_s.run(None, pick(f))
            runs["BERT PyTorch fp32 (sdpa)"] = bert_torch
            runs["BERT PyTorch bf16"] = bert_bf16
        series = {label: [] for label in runs}
        skipped: dict[str, str] = {}
        say(f"### {key} ({name}), batch {batch}: ms, medians of {repeat}")
        say("")
        say("| N | " + " | ".join(runs) + " | int8 vs fp32 | int8 vs fastest peer |")
        say("|---:|" + "---:|" * (len(runs) + 2))
        for length in lengths or default_lengths:
            feeds = make_inputs(manifest, batch_size=batch, sequence_length=length, padding=False, component=first)
            times = {}
            with torch.inference_mode():
                for label, fn in runs.items():
                    if torch_max is not None and length > torch_max and label.startswith("PyTorch eager"):
                        times[label] = None  # --int8-torch-max: the reference ops are slow, and no peer
                        continue
                    try:
                        times[label] = measure(lambda: fn(feeds), repeat=repeat, budget_s=120).ms
                    except ValueError as e:  # bucketrt's reference ops take float32 and float16, not bf16
                        times[label] = None
                        skipped.setdefault(label, str(e))
                        continue
                    series[label].append((length, times[label]))
            peers = {k: v for k, v in times.items() if not k.startswith("bucketrt") and v is not None}
            fastest = min(peers, key=peers.get) if peers else None  # none: every peer skipped at this N
            say(
                f"| {length} | "
                + " | ".join("-" if v is None else f"{v:.0f}" for v in times.values())
                + f" | {times['bucketrt ORT fp32'] / times['bucketrt ORT int8']:.2f}x"
                + (f" | {peers[fastest] / times['bucketrt ORT int8']:.2f}x ({fastest}) |" if fastest else " | - |")
            )
        say("")
        for label, why in skipped.items():
            say(f"{label}: not timed ({why}).")
            say("")
        results[key] = {label: points for label, points in series.items() if points}
        if plot_dir is not None:
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
            figure = Path(plot_dir) / f"bench-int8-{key}.png"
            plot_scaling(results[key], figure, f"{key}, batch {batch}, {threads} threads ({isa['cpu'] or 'CPU'})")
            say(f"![{key}: time against N]({figure.name})")
            say("")
        fp32 = int8 = reference = runs = hf = None  # free the models before the next family's
    say(f"Load average after: {os.getloadavg()[0]:.2f}.")
    say("")
    (OUT / "int8.json").write_text(json.dumps({"isa": isa, "threads": threads, "series": results}, indent=1))


def bench_reformer(threads: int, repeat: int, lengths: tuple[int, ...]) -> None:
    import math

    import bucketrt
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_reference, make_inputs
    from bucketrt.library import op_session
    from bucketrt.ops.catalogue import ARGMAX_HASH, SORTED_CHUNK_ATTENTION

    folder = export_once("reformer-crime-and-punishment", "reformer-crime-and-punishment", {})
    manifest = read_manifest(folder)
    rebuilt = load_reference(folder)
    hf = rebuilt.model  # bucketrt wraps Hugging Face's modules and leaves the model itself untouched
    session = bucketrt.ort_session(folder, intra_op_num_threads=threads)
    say(f"## reformer-crime-and-punishment: ONNX Runtime vs PyTorch eager (batch 1, {threads} threads)")
    say("")
    say(
        "Runs of the three interleaved (HF, reference, ORT, HF, ...) so that other load on the machine "
        "hits all alike; best of the runs, medians in brackets."
    )
    say("")
    say(
        "| N | HF eager ms | bucketrt reference ms | ORT ms | speed-up vs HF | vs reference | ORT growth | N log N growth |"
    )
    say("|---:|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    for length in lengths:
        feeds = make_inputs(manifest, batch_size=1, sequence_length=length, padding=False)
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
        runs = {
            "hf": lambda: hf(**tensors, use_cache=False),
            "ref": lambda: rebuilt.run(feeds),
            "ort": lambda: session.run(None, feeds),
        }
        samples = {name: [] for name in runs}
        with torch.inference_mode():
            for fn in runs.values():
                fn()  # warm-up
            for _ in range(max(1, repeat)):
                for name, fn in runs.items():
                    start = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - start)
        best = {name: min(v) for name, v in samples.items()}
        med = {name: statistics.median(v) for name, v in samples.items()}
        first = first or (length, best["ort"])
        nlogn = (length * math.log(length)) / (first[0] * math.log(first[0]))
        cell = lambda name: f"{best[name] * 1e3:.0f} ({med[name] * 1e3:.0f})"  # noqa: E731
        say(
            f"| {length} | {cell('hf')} | {cell('ref')} | {cell('ort')} | {best['hf'] / best['ort']:.2f}x | "
            f"{best['ref'] / best['ort']:.2f}x | {best['ort'] / first[1]:.2f}x | {nlogn:.2f}x |"
        )
    say("")

    # The ops alone at the longest length, crime-and-punishment's attention size.
    length, heads, dim = max(lengths), 2, 64
    say(f"### Reformer ops alone (B=1, H={heads}, N={length}, D={dim}, chunks of 64, {threads} threads)")
    say("")
    say("| op | PyTorch reference ms | ORT kernel ms | speed-up |")
    say("|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    mask = np.ones((1, length), np.int32)
    qk = rng.standard_normal((1, heads, length, dim), dtype=np.float32)
    key = qk / np.sqrt((qk**2).mean(-1, keepdims=True)) / 8
    value = rng.standard_normal((1, heads, length, dim), dtype=np.float32)
    sizes = np.array([64, 128], np.int32)
    rotations = rng.standard_normal((heads, dim, 96), dtype=np.float32)
    hash_feeds = {"mask": mask, "vector": qk, "projection": rotations, "bucket_sizes": sizes}
    buckets = reference.argmax_hash(*(torch.from_numpy(a) for a in hash_feeds.values()), num_hash=1).numpy()
    cases = [
        (ARGMAX_HASH, {"num_hash": 1}, hash_feeds),
        (
            SORTED_CHUNK_ATTENTION,
            {"chunk_length": 64, "causal": 1, "mask_self": 1},
            {"query": qk, "key": key, "value": value, "mask": mask, "buckets": buckets},
        ),
        (
            SORTED_CHUNK_ATTENTION,
            {"chunk_length": 64, "causal": 1},  # local attention
            {"query": qk, "key": key, "value": value, "mask": mask, "buckets": np.zeros_like(buckets)},
        ),
    ]
    for spec, attrs, feeds in cases:
        op = op_session(spec, attrs, intra_op_num_threads=threads)
        tensors = [torch.from_numpy(feeds[t.name]) for t in spec.inputs]
        ref_fn = reference.REFERENCES[spec.name]
        with torch.inference_mode():
            torch_t = measure(lambda: ref_fn(*tensors, **attrs), repeat=repeat)
        ort_t = measure(lambda: op.run(None, feeds), repeat=repeat)
        label = spec.name + (" (local)" if spec is SORTED_CHUNK_ATTENTION and not attrs.get("mask_self") else "")
        say(f"| {label} | {torch_t.ms:.1f} | {ort_t.ms:.1f} | {torch_t.median_s / ort_t.median_s:.1f}x |")
    say("")


class StandardModel(NamedTuple):
    name: str  # the custom-op export's folder under out/bench (shared with the other parts)
    preset: str
    overrides: dict
    task: str | None
    batch: int
    lengths: tuple[int, ...]


# Two layers of each preset's size where the preset is deep (yoso-4096, lsg-bert-4096: 12 layers of
# 768; switch-base-8: 12 + 12 blocks): the ratios are per layer, and the exports take a sixth of the
# time. reformer-crime-and-punishment keeps its 6 small layers (hidden 256).
STANDARD_MODELS = {
    "reformer": StandardModel(
        "reformer-crime-and-punishment", "reformer-crime-and-punishment", {}, None, 1, (1024, 4096)
    ),
    "yoso-4096": StandardModel(
        "yoso-4096-lsh-2l", "yoso-4096", {"use_expectation": False, "num_hidden_layers": 2}, None, 1, (1024, 4096)
    ),
    # LSG's default (norm) export has no bucketrt op; its LSH sparsity calls ArgmaxHash and BucketSum.
    "lsg-bert-4096": StandardModel(
        "lsg-bert-4096-lsh-2l",
        "lsg-bert-4096",
        {"sparsity_type": "lsh", "num_hidden_layers": 2},
        "feature-extraction",
        1,
        (1024, 4096),
    ),
    "switch-base-8": StandardModel(
        "switch-base-8-encoder-2l",
        "switch-base-8",
        {"num_layers": 2, "num_decoder_layers": 2},
        "feature-extraction-encoder",
        8,
        (128,),
    ),
}


def bench_standard(threads: int, repeat: int, models: list[str], lengths: tuple[int, ...] | None) -> None:
    """Standard-op against custom-op exports in ONNX Runtime (CPU), and OpenVINO against ONNX
    Runtime on the standard-op exports, per family and length, in this one process."""
    import onnxruntime as ort
    import openvino as ov

    from bucketrt.benchmarking import cpu_isa, describe_isa
    from bucketrt.errors import BucketrtError
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import make_inputs
    from bucketrt.library import ort_session

    say(f"## Standard ops: ONNX Runtime with and without bucketrt's kernels, and OpenVINO ({threads} threads)")
    say("")
    say(f"CPU: {describe_isa(cpu_isa())}")
    say(f"ONNX Runtime {ort.__version__} (CPU execution provider), OpenVINO {ov.__version__} (CPU plugin)")
    say("")
    say(
        "| model | batch x N | ORT custom ops ms | ORT standard ops ms | standard / custom | "
        "OpenVINO f32 ms | OpenVINO / ORT (standard) | OpenVINO default ms |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|")
    core = ov.Core()
    for key in models:
        model = STANDARD_MODELS[key]
        try:  # first: a family without lowerings is one row, and its custom-op export is not made
            standard_dir = export_once(
                model.name + "-standard", model.preset, model.overrides, task=model.task, ops="standard"
            )
        except BucketrtError as e:
            say(f"| {key} | - | - | - | {e.one_line()} | - | - | - |")
            continue
        custom_dir = export_once(model.name, model.preset, model.overrides, task=model.task)
        manifest = read_manifest(custom_dir)
        first = manifest["components"][0]
        custom = ort_session(custom_dir, intra_op_num_threads=threads, component=first["name"])
        # No op library registered: the standard-op export runs as any ONNX Runtime would run it.
        plain = ort_session(standard_dir, intra_op_num_threads=threads, component=first["name"], op_library=False)
        onnx_path = str(standard_dir / first["files"]["model"])
        try:
            compiled = {
                "f32": core.compile_model(
                    onnx_path, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
                ),
                "default": core.compile_model(onnx_path, "CPU", {"INFERENCE_NUM_THREADS": threads}),
            }
        except RuntimeError as e:  # a graph OpenVINO cannot compile: ONNX Runtime's columns alone
            compiled, why = {}, " ".join(str(e).split())[-160:]
        default_precision = core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # "bf16" with AMX
        for length in lengths or model.lengths:
            feeds = make_inputs(manifest, batch_size=model.batch, sequence_length=length, padding=False)
            requests = {k: c.create_infer_request() for k, c in compiled.items()}
            custom_t = measure(lambda: custom.run(None, feeds), repeat=repeat, budget_s=60)
            plain_t = measure(lambda: plain.run(None, feeds), repeat=repeat, budget_s=60)
            row = (
                f"| {key} | {model.batch}x{length} | {custom_t.ms:.0f} | {plain_t.ms:.0f} | "
                f"{plain_t.median_s / custom_t.median_s:.2f}x |"
            )
            if not requests:
                say(f"{row} OpenVINO cannot compile it: {why} | - | - |")
                continue
            ov_t = measure(lambda: requests["f32"].infer(feeds), repeat=repeat, budget_s=60)
            ov_default_t = measure(lambda: requests["default"].infer(feeds), repeat=repeat, budget_s=60)
            say(
                f"{row} {ov_t.ms:.0f} | {ov_t.median_s / plain_t.median_s:.2f}x | "
                f"{ov_default_t.ms:.0f} ({default_precision}) |"
            )
    say("")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        choices=("ops", "models", "bert", "reformer", "switch", "lsg", "int8", "moe", "serving", "standard"),
        action="append",
    )
    parser.add_argument(
        "--standard-models", default=",".join(STANDARD_MODELS), help="standard part: comma-separated models"
    )
    parser.add_argument(
        "--standard-lengths", default=None, help="standard part: lengths for every model (default: each its own)"
    )
    parser.add_argument("--int8-models", default=",".join(INT8_MODELS), help="int8 part: comma-separated models")
    parser.add_argument(
        "--int8-lengths", default=None, help="int8 part: lengths for every model (default: each its own)"
    )
    parser.add_argument(
        "--plot-dir", type=Path, default=None, help="int8 and moe parts: write one figure per model here"
    )
    parser.add_argument(
        "--moe-models", default="mixtral,qwen3-moe,gpt-oss", help="moe part: comma-separated models (or phimoe)"
    )
    parser.add_argument("--moe-size", choices=("mid", "small"), default="mid", help="moe part: the models' size")
    parser.add_argument("--moe-lengths", default="128,1024", help="moe part: prompt lengths (decode after the first)")
    parser.add_argument("--moe-batches", default="1,4", help="moe part: batch sizes")
    parser.add_argument("--moe-new", type=int, default=128, help="moe part: tokens decoded per run")
    parser.add_argument("--moe-timeout", type=float, default=1800, help="moe part: seconds a peer may take")
    parser.add_argument(
        "--moe-decode-runs",
        type=int,
        default=3,
        help="moe part: decoding runs per case, peer and round; each figure is their median",
    )
    parser.add_argument(
        "--moe-rounds", type=int, default=1, help="moe part: rounds over the peers; each figure is its best round"
    )
    parser.add_argument("--moe-out", default=str(OUT / "moe"), help="moe part: sources and exports (cached)")
    parser.add_argument(
        "--int8-torch-max",
        type=int,
        default=None,
        help="int8 part: time the bucketrt model in PyTorch eager only up to this length (its reference ops are slow)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--bert-lengths", default="1024,2048,4096")
    parser.add_argument("--reformer-lengths", default="1024,4096,16384")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    parts = args.only or ["ops", "models", "bert", "reformer", "switch", "lsg", "int8", "moe", "serving", "standard"]
    torch.set_num_threads(args.threads)
    say(f"bucketrt benchmarks: torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores")
    say("")
    if "ops" in parts:
        bench_ops(args.threads, args.repeat)
    if "models" in parts:
        bench_models(args.threads, args.repeat, tuple(int(v) for v in args.lengths.split(",")))
    if "bert" in parts:
        bench_bert(args.threads, args.repeat, tuple(int(v) for v in args.bert_lengths.split(",")))
    if "reformer" in parts:
        bench_reformer(args.threads, args.repeat, tuple(int(v) for v in args.reformer_lengths.split(",")))
    if "switch" in parts:
        sys.path.insert(0, str(Path(__file__).parent))
        import switch

        switch.run(args.threads, args.repeat, say)
    if "lsg" in parts:
        bench_lsg(args.threads, args.repeat)
    if "int8" in parts:
        models = [m for m in args.int8_models.split(",") if m]
        unknown = [m for m in models if m not in INT8_MODELS]
        if unknown:
            parser.error(f"--int8-models: unknown {', '.join(unknown)}; choose from {', '.join(INT8_MODELS)}")
        lengths = tuple(int(v) for v in args.int8_lengths.split(",")) if args.int8_lengths else None
        bench_int8(args.threads, args.repeat, models, lengths, args.plot_dir, args.int8_torch_max)
    if "standard" in parts:
        models = [m for m in args.standard_models.split(",") if m]
        unknown = [m for m in models if m not in STANDARD_MODELS]
        if unknown:
            parser.error(f"--standard-models: unknown {', '.join(unknown)}; choose from {', '.join(STANDARD_MODELS)}")
        lengths = tuple(int(v) for v in args.standard_lengths.split(",")) if args.standard_lengths else None
        bench_standard(args.threads, args.repeat, models, lengths)
    if "moe" in parts:
        sys.path.insert(0, str(Path(__file__).parent))
        import moe

        moe.run(args, say)
    if "serving" in parts:
        sys.path.insert(0, str(Path(__file__).parent))
        import serving

        serving.run(say=say)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
