"""Mixture-of-experts causal LMs on CPU: bucketrt against its peers, side by side (issue 23).

For each model (random weights, one save_pretrained folder that every peer loads): prefill at every
batch x prompt length, decode tokens per second over --moe-new tokens after a prompt of the first
length, and each peer's peak memory. Every peer runs in a subprocess of its own (this file, with
`--worker`), one after the other, with the same threads, and reports its peak resident memory (VmHWM):

* transformers in PyTorch eager: its experts loop ("eager") and its "grouped_mm", fp32, and both in
  bf16 where the CPU has bf16 (AVX512-BF16 or AMX);
* the dense export in ONNX Runtime: every expert on every token, what Optimum users get. bucketrt
  exports it with every op as its standard-op lowering (`export(..., ops="standard")`), TopKExperts'
  held to every expert on every token, and optimum-onnx's own exporter (`make moe-peers`: .peers/optimum) is
  tried for the families it has;
* onnxruntime-genai (`make moe-peers`: .peers/genai), its model builder's fp32 and int8 models with
  its own C++ generation loop, for the families its builder takes (GPT-OSS here: its int8 from the
  experts' MXFP4 tensors, which the source carries, see MXFP4_FILE);
* bucketrt: the export in ONNX Runtime with TopKExperts, fp32, and int8 (`bucketrt quantize`), its
  key/value cache one buffer that past and present share (`--shared-kv-buffer`: each step writes its
  keys and values in place, as onnxruntime-genai's does), the way to run it for speed.

A peer that cannot run (no environment, a family its exporter lacks, an error) is a row saying why.
Prefill and decode go through each runtime's own generation loop: bucketrt's
(bucketrt.benchmarking.time_generation: runtime.decoding.iter_causal), a DynamicCache loop for
PyTorch, the Generator for onnxruntime-genai. The prefill computes the last position's logits only
where the loop can ask for it, as transformers' generate does: bucketrt's exports (their optional
`logits_to_keep` input, fed by its loop) and PyTorch (`logits_to_keep=1`); optimum-onnx's and
onnxruntime-genai's graphs compute every position's, as they ship. The goal ratios of issue 23 are
printed as PASS/MISS.

    make moe-peers                                            # the peers' environments (once)
    python benchmarks/run.py --only moe --plot-dir docs       # the full run (about an hour on 2 cores)
    python benchmarks/run.py --only moe --moe-size small --moe-lengths 64,256 --moe-new 16   # minutes
    python benchmarks/run.py --only moe --moe-rounds 2        # each figure the best of two rounds over the peers

Within a round, a prompt-only case is timed --repeat times and a decoding case --moe-decode-runs
times (3 by default), each figure the median of its runs: one decoding run's step time moves by
10-20 % between runs here, more than some of the goals' margins.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / ".peers"
# Sizes: "mid" are the presets the issue names (the Mixtral-like one of hidden 1024, intermediate
# 2816, 4 layers, 8 experts top-2); "small" is for a run of minutes.
SMALL = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
# GPT-OSS at mixtral-mid's size: onnxruntime-genai 0.18 builds it for CPU in fp32 (its PhiMoE path
# forces CUDA and int4 and reads the per-expert modules of transformers 4).
GPT_OSS_MID = dict(
    model_type="gpt_oss",
    vocab_size=32000,
    hidden_size=1024,
    intermediate_size=2816,
    num_hidden_layers=4,
    num_attention_heads=16,
    num_key_value_heads=4,
    head_dim=64,
    num_local_experts=8,
    num_experts_per_tok=2,
    max_position_embeddings=4096,
)
MODELS = {
    # name: (bucketrt preset or config, overrides of the small size)
    "mixtral": ("mixtral-mid", SMALL),
    "qwen3-moe": ("qwen3-moe-mid", dict(SMALL, moe_intermediate_size=96, head_dim=64)),
    "gpt-oss": (GPT_OSS_MID, SMALL),
    "phimoe": ("phimoe-mid", SMALL),
}
# onnxruntime-genai 0.18's builder takes these families among the MoE ones (not Mixtral, Qwen3-MoE).
GENAI_FAMILIES = {"phimoe", "gpt_oss"}  # phimoe: see _peers


# -- workers: one peer, one process; only the standard library at module level (the peers'
# environments have neither bucketrt nor, for onnxruntime-genai, the same transformers) ----------
def _peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    exec from the forked parent's memory, so every worker would report at least the driver's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _runs(args, new: int) -> int:
    """Timed runs of a case (after its warm-up): --decode-runs where it decodes, else --repeat."""
    return max(1, args.decode_runs if new > 1 else args.repeat)


def _medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """(prefill s, s per later step) of several runs: the median of each, apart."""
    import statistics

    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def _worker_torch(args) -> dict:
    import numpy as np
    import torch
    import transformers
    from transformers.cache_utils import DynamicCache

    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.folder, dtype=dtype, experts_implementation=args.experts
    ).eval()
    vocab = model.config.vocab_size

    def run(ids, new):
        """transformers' greedy decoding with its DynamicCache: (prefill s, s per later step). Each
        step computes the last position's logits only (logits_to_keep=1), as generate does."""
        cache = DynamicCache()
        started = time.perf_counter()
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)[:, None]
        first = time.perf_counter()
        for _ in range(new - 1):
            out = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1)[:, None]
        return first - started, (time.perf_counter() - first) / max(new - 1, 1)

    rows = []
    with torch.inference_mode():
        for batch, length, new in args.cases:
            ids = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (batch, length)))
            run(ids, min(new, 4))  # warm-up
            prefill, step = _medians([run(ids, new) for _ in range(_runs(args, new))])
            rows.append(
                {
                    "batch": batch,
                    "prompt": length,
                    "new": new,
                    "prefill_s": prefill,
                    "step_s": step if new > 1 else None,
                }
            )
    return {"rows": rows, "info": f"transformers {transformers.__version__}, torch {torch.__version__}"}


def _worker_ort(args) -> dict:
    import numpy as np
    import onnxruntime

    from bucketrt.benchmarking import time_generation
    from bucketrt.library import ort_session

    if (Path(args.folder) / "bucketrt.json").exists():
        session = ort_session(args.folder, intra_op_num_threads=args.threads)
    else:  # optimum-onnx's model.onnx: standard ops only
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(str(Path(args.folder) / "model.onnx"), options)
    vocab = json.loads((Path(args.folder) / "config.json").read_text())["vocab_size"]
    rows = []
    for batch, length, new in args.cases:
        ids = np.random.default_rng(0).integers(0, vocab, (batch, length))
        timing = time_generation(session, ids, new, _runs(args, new))
        rows.append(
            {
                "batch": batch,
                "prompt": length,
                "new": new,
                "prefill_s": timing.prefill.median_s,
                "step_s": timing.step.median_s if timing.step else None,
            }
        )
    return {"rows": rows, "info": f"onnxruntime {onnxruntime.__version__}"}


def _worker_genai(args) -> dict:
    import numpy as np
    import onnxruntime_genai as og

    config_path = Path(args.folder) / "genai_config.json"
    config = json.loads(config_path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = args.threads
    options["inter_op_num_threads"] = 1
    config_path.write_text(json.dumps(config, indent=2))
    model = og.Model(args.folder)
    vocab = config["model"]["vocab_size"]
    window = config["model"]["decoder"].get("sliding_window", {}).get("window_size", 0)
    rows = []

    def run(ids, new):
        params = og.GeneratorParams(model)
        total = ids.shape[1] + new
        # The cache is allocated for max_length; sliding-window layers (GPT-OSS) want a window's room.
        room = max(total, window)
        params.set_search_options(max_length=room, min_length=room, do_sample=False, batch_size=ids.shape[0])
        generator = og.Generator(model, params)
        started = time.perf_counter()
        generator.append_tokens(ids)  # the prompt: the prefill
        generator.generate_next_token()  # its first token
        first = time.perf_counter()
        for _ in range(new - 1):
            generator.generate_next_token()
        done = time.perf_counter()
        return first - started, (done - first) / max(new - 1, 1)

    for batch, length, new in args.cases:
        ids = np.random.default_rng(0).integers(0, vocab, (batch, length)).astype(np.int32)
        run(ids, min(new, 4))  # warm-up
        prefill, step = _medians([run(ids, max(new, 1)) for _ in range(_runs(args, new))])
        rows.append(
            {"batch": batch, "prompt": length, "new": new, "prefill_s": prefill, "step_s": step if new > 1 else None}
        )
    return {"rows": rows, "info": f"onnxruntime-genai {og.__version__}"}


WORKERS = {"torch": _worker_torch, "ort": _worker_ort, "genai": _worker_genai}


def worker_main(argv) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=WORKERS, required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--decode-runs", type=int, default=3)
    parser.add_argument("--cases", type=json.loads, required=True, help="[[batch, prompt, new], ...]")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--experts", default="grouped_mm")
    args = parser.parse_args(argv)
    result = WORKERS[args.worker](args)
    result["peak_mb"] = _peak_mb()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the driver ---------------------------------------------------------------------------------
def _python(env: str) -> Path:
    return PEERS / env / "bin" / "python"


def _run_worker(
    python, kind: str, folder: Path, threads: int, repeat: int, decode_runs: int, cases, timeout: float, **extra
) -> dict:
    """One peer in its own process: its result, or {"missing": why}."""
    command = [str(python), str(Path(__file__).resolve()), "--worker", kind, "--folder", str(folder)]
    command += ["--threads", str(threads), "--repeat", str(repeat), "--decode-runs", str(decode_runs)]
    command += ["--cases", json.dumps(cases)]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"missing": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()
    return {"missing": f"failed (exit {done.returncode}): " + (tail[-1] if tail else "no output")}


def _best_of(first: dict, later: dict) -> dict:
    """Two rounds of one peer: each case's fastest prefill and step, the larger peak memory. On a
    machine whose speed drifts over minutes (other tenants), the best of rounds with the peers
    interleaved compares each at its least disturbed, not at whatever moment its turn came."""
    if "missing" in later:
        return first
    rows = []
    for a, b in zip(first["rows"], later["rows"]):
        row = dict(a, prefill_s=min(a["prefill_s"], b["prefill_s"]))
        if a["step_s"] is not None and b["step_s"] is not None:
            row["step_s"] = min(a["step_s"], b["step_s"])
        rows.append(row)
    return dict(first, rows=rows, peak_mb=max(first.get("peak_mb", 0), later.get("peak_mb", 0)))


def _make_source(name: str, size: str, out: Path) -> tuple[Path, str]:
    """The model's save_pretrained folder (random weights, seed 0) with a word-level tokenizer of
    its vocabulary: every peer loads these weights. Returns (folder, model_type)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    from bucketrt.exporter.presets import presets

    preset_name, small = MODELS[name]
    base = presets()[preset_name].config if isinstance(preset_name, str) else preset_name
    values = dict(base, **(small if size == "small" else {}))
    mxfp4 = values["model_type"] == "gpt_oss"
    folder = out / "src"
    marker = folder / "bucketrt-bench.json"
    made = {"config": values, "experts": "mxfp4" if mxfp4 else "float32"}
    if marker.exists() and json.loads(marker.read_text()) == made:
        return folder, values["model_type"]
    values_copy = dict(values)
    model_type = values_copy.pop("model_type")
    values_copy.pop("architectures", None)
    config = transformers.AutoConfig.for_model(
        model_type, **values_copy, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    packed = _experts_to_mxfp4(model) if mxfp4 else {}
    for stale in out.iterdir() if out.exists() else ():  # exports of other weights
        if stale.is_dir():
            shutil.rmtree(stale)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if packed:
        _save_beside(folder, packed, MXFP4_FILE)
    vocab = {f"w{i}": i for i in range(config.vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="w0", pad_token="w0", bos_token="w1", eos_token="w2"
    ).save_pretrained(folder)
    marker.write_text(json.dumps(made))
    return folder, model_type


# GPT-OSS ships its experts in MXFP4 (OCP microscaling: 4-bit e2m1 values, one power-of-two scale per
# 32 along the input axis), and onnxruntime-genai's builder makes its int8 GPT-OSS only from those
# tensors (`{prefix}_blocks`, `{prefix}_scales`). The benchmark's GPT-OSS experts are rounded to MXFP4
# values, so that every peer computes one model, and the packed tensors are written beside the float
# weights, as the released checkpoints have them.
MXFP4_FILE = "experts-mxfp4.safetensors"


def _mxfp4(weight):
    """weight [..., N, K] (K a multiple of 32) -> (blocks [..., N, K/32, 16] uint8: two codes a byte,
    the even position's in the low nibble; scales [..., N, K/32] uint8: the exponents + 127; the
    float values they encode, the shape of `weight`)."""
    import torch
    from transformers.integrations.mxfp4 import FP4_VALUES  # the values of codes 0-15: bit 3 the sign

    *lead, n, k = weight.shape
    if k % 32:
        raise ValueError(f"MXFP4 takes blocks of 32 along the input axis; this weight has {k}")
    block = weight.reshape(*lead, n, k // 32, 32)
    amax = block.abs().amax(-1)
    # The smallest power of two that brings the block's largest magnitude within 6, e2m1's largest.
    exponent = torch.ceil(torch.log2(amax.clamp_min(2.0**-126) / 6.0)).clamp(-127, 127)
    scale = torch.pow(2.0, exponent)[..., None]
    scaled = block / scale
    magnitudes = torch.tensor(FP4_VALUES[:8])
    index = (scaled.abs()[..., None] - magnitudes).abs().argmin(-1)
    negative = scaled < 0
    codes = (index | torch.where(negative, 8, 0)).to(torch.uint8)
    values = torch.where(negative, -magnitudes[index], magnitudes[index]) * scale
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks.contiguous(), (exponent + 127).to(torch.uint8), values.reshape(weight.shape)


def _experts_to_mxfp4(model) -> dict:
    """Rounds every GPT-OSS expert projection of `model` to MXFP4 in place; returns the checkpoint's
    packed tensors ({name}_blocks and {name}_scales, output-major) by name."""
    import torch

    packed = {}
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for name in ("gate_up_proj", "down_proj"):
                weight = getattr(layer.mlp.experts, name)  # [experts, in, out]
                blocks, scales, values = _mxfp4(weight.transpose(1, 2))
                weight.copy_(values.transpose(1, 2))
                packed[f"model.layers.{i}.mlp.experts.{name}_blocks"] = blocks
                packed[f"model.layers.{i}.mlp.experts.{name}_scales"] = scales
    return packed


def _save_beside(folder: Path, tensors: dict, file_name: str) -> None:
    """Writes `tensors` to folder/file_name and an index of every tensor (model.safetensors'
    and these): loaders that read the index (onnxruntime-genai's MXFP4 loader) find them there,
    while transformers' from_pretrained still loads model.safetensors alone, which it prefers."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    save_file(tensors, str(folder / file_name), metadata={"format": "pt"})
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        weight_map = {key: "model.safetensors" for key in weights.keys()}  # noqa: SIM118
    weight_map.update({key: file_name for key in tensors})
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def _export(source: Path, out: Path, dense: bool = False) -> Path:
    from bucketrt.exporter import export
    from bucketrt.ops import lowering

    sys.path.insert(0, str(Path(__file__).parent))
    from run import make_cached  # cached per build; _make_source clears the exports of other weights

    def make():
        print(f"exporting {out} ...", flush=True)
        if dense:
            # The standard-op export (bucketrt.ops.lowering), with TopKExperts' lowering held to its
            # every-expert-on-every-token branch (it gathers the picked experts' weights when a call has
            # no more (token, pick) pairs than experts): the formulation Optimum's exporters write.
            with lowering.every_expert():
                export(str(source), out, ops="standard")
        else:
            export(str(source), out, options={"shared_kv_buffer": True})

    return make_cached(out, make)


def _quantize(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from run import quantize_once

    return quantize_once(folder)


def _genai_build(source: Path, out: Path, precision: str) -> Path | str:
    """onnxruntime-genai's model builder on the local folder: the output folder, or why not."""
    python = _python("genai")
    if not python.exists():
        return "no environment: run `make moe-peers` (.peers/genai)"
    if (out / "genai_config.json").exists():
        return out
    cache = out.with_name(out.name + "-cache")
    command = [str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out)]
    command += ["-p", precision, "-e", "cpu", "-c", str(cache)]
    print("building " + " ".join(command[2:]) + " ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if done.returncode or not (out / "genai_config.json").exists():
        tail = (done.stderr or done.stdout).strip().splitlines()
        return f"its builder failed (exit {done.returncode}): " + (tail[-1] if tail else "no output")
    return out


def _optimum_export(source: Path, out: Path) -> Path | str:
    """optimum-onnx's exporter (its own environment) on the local folder: the folder, or why not."""
    python = _python("optimum")
    if not python.exists():
        return "no environment: run `make moe-peers` (.peers/optimum)"
    if (out / "model.onnx").exists():
        return out
    # transformers 4 reads some config keys by their old names (Qwen3-MoE's num_experts, which
    # transformers 5 writes as num_local_experts): a copy of the folder's config with both.
    legacy = out.with_name(out.name + "-source")
    shutil.rmtree(legacy, ignore_errors=True)
    legacy.mkdir(parents=True)
    for item in source.iterdir():
        (legacy / item.name).symlink_to(item.resolve())
    config = json.loads((source / "config.json").read_text())
    if "num_local_experts" in config:
        config.setdefault("num_experts", config["num_local_experts"])
    (legacy / "config.json").unlink()
    (legacy / "config.json").write_text(json.dumps(config, indent=2))
    command = [str(python), "-m", "optimum.exporters.onnx", "--model", str(legacy), "--task"]
    command += ["text-generation-with-past", "--no-post-process", str(out)]
    print("exporting with optimum-onnx ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if done.returncode or not (out / "model.onnx").exists():
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        return f"its exporter failed (exit {done.returncode}): " + (lines[-1] if lines else "no output")
    return out


def _bf16_cpu(isa: dict) -> bool:
    return bool(isa["avx512_bf16"] or isa["amx"])


def run(args, say) -> dict:
    """The MoE part of benchmarks/run.py (--only moe); returns the results (also out/bench/moe.json)."""
    from bucketrt.benchmarking import cpu_isa, describe_isa

    out_root = Path(args.moe_out)
    threads, repeat = args.threads, args.repeat
    lengths = tuple(int(v) for v in args.moe_lengths.split(","))
    batches = tuple(int(v) for v in args.moe_batches.split(","))
    new = args.moe_new
    # Prefill at every batch x length; decode after a prompt of the first length (its prefill too).
    cases = [[b, length, new if length == lengths[0] else 1] for b in batches for length in lengths]
    isa = cpu_isa()
    flags = _cpu_flags()
    say(f"## Mixture-of-experts causal LMs against their peers ({args.moe_size} size, {threads} threads)")
    say("")
    say(describe_isa(isa))
    say("")
    say("CPU flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in _FLAGS) + ".")
    say(f"Load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.")
    if args.moe_rounds > 1:
        say(f"Each figure is the best of {args.moe_rounds} rounds over the peers (each peer once per round, in turn).")
    say(
        f"Within a round, a decoding figure is the median of {args.moe_decode_runs} runs of {new} tokens, "
        f"a prompt-only one the median of {repeat} runs."
    )
    say("")
    results = {}
    for name in args.moe_models.split(","):
        model_out = out_root / f"{name}-{args.moe_size}"
        source, model_type = _make_source(name, args.moe_size, model_out)
        peers = _peers(name, model_type, source, model_out, isa)
        rows = {}
        for round_ in range(args.moe_rounds):  # every peer once per round, in turn
            for label, spec in peers.items():
                if isinstance(spec, str):
                    rows[label] = {"missing": spec}
                elif "missing" not in rows.get(label, {}):
                    print(f"timing {name}: {label} (round {round_ + 1} of {args.moe_rounds}) ...", flush=True)
                    python, kind, folder, extra = spec
                    result = _run_worker(
                        python, kind, folder, threads, repeat, args.moe_decode_runs, cases, args.moe_timeout, **extra
                    )
                    rows[label] = _best_of(rows[label], result) if label in rows else result
                if "missing" in rows[label] and round_ == 0:
                    print(f"  {label}: {rows[label]['missing']}", flush=True)
        results[name] = {
            "model_type": model_type,
            "config": json.loads((source / "config.json").read_text()),
            "peers": rows,
        }
        _tables(name, results[name], lengths, batches, new, say)
    goals = _goals(results, lengths, batches, say)
    say(f"Load average after: {os.getloadavg()[0]:.2f}.")
    say("")
    summary = {
        "isa": isa,
        "threads": threads,
        "lengths": lengths,
        "batches": batches,
        "new": new,
        "rounds": args.moe_rounds,
        "decode_runs": args.moe_decode_runs,
        "models": results,
        "goals": goals,
    }
    (out_root / "moe.json").write_text(json.dumps(summary, indent=1))
    if args.plot_dir is not None:
        _plots(results, Path(args.plot_dir), args.moe_size, threads, say)
    return summary


_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


BUCKETRT_FP32, BUCKETRT_INT8 = "bucketrt fp32", "bucketrt int8"
GENAI_FP32, GENAI_INT8 = "onnxruntime-genai fp32", "onnxruntime-genai int8"
DENSE = "dense export (torch.onnx, ORT) fp32"
OPTIMUM = "dense export (optimum-onnx, ORT) fp32"


def _peers(name: str, model_type: str, source: Path, out: Path, isa: dict) -> dict:
    """label -> (python, worker, folder, extra args), or why the peer does not run."""
    main = Path(sys.executable)
    peers: dict = {}
    for dtype in ("fp32", "bf16"):
        for experts in ("eager", "grouped_mm"):
            label = f"transformers {experts} {dtype}"
            if dtype == "bf16" and not _bf16_cpu(isa):
                peers[label] = "no bf16 on this CPU (AVX512-BF16 or AMX)"
            else:
                peers[label] = (main, "torch", source, {"dtype": dtype, "experts": experts})
    dense = _export(source, out / "dense", dense=True)
    peers[DENSE] = (main, "ort", dense, {})
    optimum = _optimum_export(source, out / "optimum")
    peers[OPTIMUM] = optimum if isinstance(optimum, str) else (main, "ort", optimum, {})
    for label, precision in ((GENAI_FP32, "fp32"), (GENAI_INT8, "int8")):
        if model_type not in GENAI_FAMILIES:
            peers[label] = f"{model_type} is not a family of onnxruntime-genai's model builder"
            continue
        if model_type == "phimoe":
            peers[label] = (
                "onnxruntime-genai 0.18's builder takes PhiMoE only as PhiMoEForCausalLM with long RoPE, then "
                "forces --execution_provider cuda and int4, and reads transformers 4's per-expert modules (w1, w2, "
                "w3), which transformers 5's PhimoeForCausalLM does not have"
            )
            continue
        built = _genai_build(source, out / f"genai-{precision}", precision)
        peers[label] = built if isinstance(built, str) else (_python("genai"), "genai", built, {})
    fp32 = _export(source, out / "bucketrt")
    peers[BUCKETRT_FP32] = (main, "ort", fp32, {})
    peers[BUCKETRT_INT8] = (main, "ort", _quantize(fp32), {})
    return peers


def _row(result: dict, batch: int, length: int) -> dict | None:
    for row in result.get("rows", ()):
        if row["batch"] == batch and row["prompt"] == length:
            return row
    return None


def _tables(name: str, result: dict, lengths, batches, new: int, say) -> None:
    config = result["config"]
    experts = config.get("num_local_experts") or config.get("num_experts")
    say(
        f"### {name} ({result['model_type']}: hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
        f"{experts} experts top-{config['num_experts_per_tok']})"
    )
    say("")
    head = [f"prefill b{b}x{n} ms" for b in batches for n in lengths] + [f"decode b{b} tok/s" for b in batches]
    say("| peer | " + " | ".join(head) + " | peak MB |")
    say("|---|" + "---:|" * (len(head) + 1))
    missing = []
    for label, peer in result["peers"].items():
        if "missing" in peer:
            missing.append((label, peer["missing"]))
            continue
        cells = []
        for b in batches:
            for n in lengths:
                row = _row(peer, b, n)
                cells.append(f"{row['prefill_s'] * 1e3:.0f}" if row else "-")
        for b in batches:
            row = _row(peer, b, lengths[0])
            cells.append(f"{b / row['step_s']:.1f}" if row and row.get("step_s") else "-")
        say(f"| {label} | " + " | ".join(cells) + f" | {peer['peak_mb']:.0f} |")
    say("")
    for label, why in missing:
        say(f"- {label}: not timed, {why}")
    if missing:
        say("")


def _ratios(result: dict, mine: str, theirs: list[str], lengths, batches) -> dict | None:
    """Prefill and decode speed-ups of `mine` over the fastest of `theirs` per case (the fastest
    that ran in that case): {"prefill": [...], "decode": [...], "against": {...}}, None if mine or
    every peer is missing."""
    peers = result["peers"]
    if "missing" in peers.get(mine, {"missing": ""}):
        return None
    present = [t for t in theirs if t in peers and "missing" not in peers[t]]
    if not present:
        return None
    out = {"prefill": [], "decode": [], "against": []}
    for b in batches:
        for n in lengths:
            own = _row(peers[mine], b, n)
            others = [(_row(peers[t], b, n), t) for t in present]
            others = [(r["prefill_s"], t) for r, t in others if r]
            if own and others:
                best, who = min(others)
                out["prefill"].append(best / own["prefill_s"])
                out["against"].append(who)
        own = _row(peers[mine], b, lengths[0])
        others = [(_row(peers[t], b, lengths[0]), t) for t in present]
        others = [(r["step_s"], t) for r, t in others if r and r.get("step_s")]
        if own and own.get("step_s") and others:
            best, who = min(others)
            out["decode"].append(best / own["step_s"])
            out["against"].append(who)
    return out


def _goals(results: dict, lengths, batches, say) -> list[dict]:
    torch_fp32 = ["transformers eager fp32", "transformers grouped_mm fp32"]
    torch_any = torch_fp32 + ["transformers eager bf16", "transformers grouped_mm bf16"]
    dense = [DENSE, OPTIMUM]
    checks = []
    for name, result in results.items():
        experts = result["config"].get("num_local_experts") or result["config"].get("num_experts")
        checks += [
            (name, "bucketrt fp32 vs fastest PyTorch fp32", BUCKETRT_FP32, torch_fp32, {"prefill": 1.3, "decode": 1.2}),
            (
                name,
                "bucketrt int8 vs fastest PyTorch (any precision)",
                BUCKETRT_INT8,
                torch_any,
                {"prefill": 1.5, "decode": 1.5},
            ),
            (name, "bucketrt int8 vs bucketrt fp32", BUCKETRT_INT8, [BUCKETRT_FP32], {"decode": 2.0}),
            (
                name,
                "bucketrt fp32 vs the dense export",
                BUCKETRT_FP32,
                dense,
                {"prefill": 10.0 if experts >= 64 else 3.0, "decode": 10.0 if experts >= 64 else 3.0},
            ),
            (
                name,
                "bucketrt fp32 vs onnxruntime-genai fp32",
                BUCKETRT_FP32,
                [GENAI_FP32],
                {"prefill": 1.0, "decode": 1.0},
            ),
            (
                name,
                "bucketrt int8 vs onnxruntime-genai int8",
                BUCKETRT_INT8,
                [GENAI_INT8],
                {"prefill": 1.0, "decode": 1.0},
            ),
        ]
    say("### Goals (issue 23), each the worst case over batch sizes and prompt lengths")
    say("")
    say("| model | goal | prefill (min .. max) | decode (min .. max) | verdict |")
    say("|---|---|---:|---:|---|")
    goals = []
    for name, label, mine, theirs, targets in checks:
        ratios = _ratios(results[name], mine, theirs, lengths, batches)
        if ratios is None:
            if set(theirs) <= {GENAI_FP32, GENAI_INT8} and not any(
                t in results[name]["peers"] and "missing" not in results[name]["peers"][t] for t in theirs
            ):
                if all(
                    "not a family" in results[name]["peers"].get(t, {}).get("missing", "not a family") for t in theirs
                ):
                    continue  # no onnxruntime-genai model of this family: the comparison is PhiMoE's
            say(f"| {name} | {label} | - | - | NOT MEASURED (a side is missing) |")
            goals.append({"model": name, "goal": label, "verdict": "not measured"})
            continue
        cells, verdicts = [], []
        for part in ("prefill", "decode"):
            values = ratios[part]
            if part not in targets:
                cells.append(f"{min(values):.2f}x .. {max(values):.2f}x" if values else "-")
                continue
            if not values:
                cells.append("-")
                verdicts.append("not measured")
                continue
            ok = min(values) >= targets[part]
            verdicts.append("PASS" if ok else "MISS")
            cells.append(
                f"{min(values):.2f}x .. {max(values):.2f}x (goal {targets[part]:g}x: {'PASS' if ok else 'MISS'})"
            )
        verdict = (
            "PASS"
            if verdicts and all(v == "PASS" for v in verdicts)
            else ("MISS" if "MISS" in verdicts else "NOT MEASURED")
        )
        say(f"| {name} | {label} | {cells[0]} | {cells[1]} | {verdict} |")
        goals.append({"model": name, "goal": label, "verdict": verdict, **ratios})
    say("")
    return goals


class _Row:
    """A worker's row in the shape plot_generation reads."""

    class _T:
        def __init__(self, s):
            self.median_s = s

    def __init__(self, row):
        self.batch_size, self.prompt_length = row["batch"], row["prompt"]
        self.prefill = self._T(row["prefill_s"])
        self.tokens_per_s = row["batch"] / row["step_s"] if row.get("step_s") else None


def _plots(results: dict, plot_dir: Path, size: str, threads: int, say) -> None:
    from bucketrt.benchmarking import plot_generation

    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        series = {}
        for label, peer in result["peers"].items():
            if "missing" in peer:
                continue
            series[label] = [_Row(r) for r in peer["rows"]]
        figure = plot_dir / f"bench-moe-{name}-{size}.png"
        plot_generation(series, figure, f"{name} ({size}), {threads} threads: tokens per second")
        say(f"![{name}: tokens per second against batch and prompt length]({figure.name})")
        say("")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        sys.exit(worker_main(sys.argv[1:]))
    sys.path.insert(0, str(Path(__file__).parent))
    import run as run_module

    sys.exit(run_module.main(["--only", "moe", *sys.argv[1:]]))
