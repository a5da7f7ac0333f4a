"""Prefill and decode times of a text-generation export of the moe family (Mixtral, Qwen-MoE, ...):
ONNX Runtime with bucketrt's TopKExperts against transformers' own model in PyTorch eager (its
default experts implementation), same weights, same threads, in this one process.

* prefill: the prompt [batch, PROMPT] with an empty cache, one call, the last position's logits
  only on both sides (logits_to_keep, as generate runs it; median of --repeat);
* decode: one new token per row with the cache of the prompt, per token (the median over --repeat
  runs of --new steps, each run after a prefill that is not timed).

    python benchmarks/moe_generation.py out/mixtral-mid [--prompt 128] [--new 16] [--batch 1] [--threads N]

`--overhead`: the runtime's own generation loop (bucketrt.runtime.decoding, run_with_ort_values:
the cache stays in ONNX Runtime's values) against the same loop over numpy feeds and fetches (the cache
copied out and in every step, as session.run does), each decode step's time outside ONNX
Runtime's Run (the step's wall clock less the profiler's model_run) and where a decode step's
time goes inside ONNX Runtime, per op type (its profiler, decode steps only); no PyTorch.

    python benchmarks/moe_generation.py out/mixtral-mid --overhead [--prompt 512] [--new 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def _ort_runs(session, ids, new: int, repeat: int):
    """Prefill and decode medians of the runtime's own generation loop (time_generation), which
    binds whatever cache the export takes (a growing past, a shared buffer)."""
    from bucketrt.benchmarking import time_generation

    timing = time_generation(session, ids, new + 1, repeat)
    return timing.prefill.median_s, timing.step.median_s


def _torch_runs(model, ids, new: int, repeat: int):
    from transformers.cache_utils import DynamicCache

    ids = torch.from_numpy(ids)
    prefill, decode = [], []
    with torch.no_grad():
        for _ in range(repeat + 1):
            cache = DynamicCache()
            started = time.perf_counter()
            out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
            prefill.append(time.perf_counter() - started)
            token = out.logits[:, -1].argmax(-1)[:, None]
            started = time.perf_counter()
            for _ in range(new):
                out = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
                token = out.logits[:, -1].argmax(-1)[:, None]
            decode.append((time.perf_counter() - started) / new)
    return statistics.median(prefill[1:]), statistics.median(decode[1:])


class _NumpyFeeds:
    """The session without run_with_ort_values: the loop feeds numpy arrays and gets numpy arrays
    back (the cache copied out and in every step)."""

    def __init__(self, session):
        self.session = session

    def run(self, names, feeds):
        return self.session.run(names, feeds)

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def get_overridable_initializers(self):
        return self.session.get_overridable_initializers()


def _loop_steps(session, ids, new: int) -> list[float]:
    """The wall clock of each step of decoding.iter_causal (the first: the prefill)."""
    from bucketrt.runtime import decoding

    times, started = [], time.perf_counter()
    for _ in decoding.iter_causal(session, ids, max_new_tokens=new + 1):
        now = time.perf_counter()
        times.append(now - started)
        started = now
    return times


def _overhead(export_dir, ids, new: int, repeat: int, threads: int) -> None:
    import json

    import onnxruntime as ort

    import bucketrt

    session = bucketrt.ort_session(export_dir, intra_op_num_threads=threads)
    loops = {"OrtValues (the runtime's loop)": session, "numpy feeds and fetches": _NumpyFeeds(session)}
    per_token = {name: [] for name in loops}
    _loop_steps(session, ids, 2)  # warm-up
    for _ in range(repeat):  # interleaved
        for name, target in loops.items():
            per_token[name].append(statistics.median(_loop_steps(target, ids, new)[1:]))
    for name, values in per_token.items():
        print(f"  {name}: decode {statistics.median(values) * 1e3:.2f} ms/token (median of {repeat} medians)")

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = "/tmp/moe_generation_profile"
    options.intra_op_num_threads = threads
    profiled = bucketrt.ort_session(export_dir, options=options, check_attributes=False)
    walls_of = {
        name: _loop_steps(target, ids, new)
        for name, target in (("OrtValues", profiled), ("numpy feeds", _NumpyFeeds(profiled)))
    }
    path = profiled.end_profiling()
    with open(path) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("name") == "model_run"]
    # Two loops of new + 1 runs each, in order: the first of each is the prefill.
    steps = new + 1
    by_loop = {"OrtValues": runs[:steps], "numpy feeds": runs[steps : 2 * steps]}
    for name, loop_runs in by_loop.items():
        walls = walls_of[name][1:]
        inside = [r["dur"] * 1e-6 for r in loop_runs[1:]]
        outside = [w - i for w, i in zip(walls, inside)]
        print(
            f"  {name}: decode step {statistics.median(walls) * 1e3:.2f} ms, of which outside ONNX Runtime's Run "
            f"{statistics.median(outside) * 1e3:.3f} ms ({statistics.median(outside) / statistics.median(walls):.1%}; "
            f"medians over {len(walls)} steps, profiling on)"
        )
    # Inside a decode step (the OrtValue loop's), per op type.
    first, last = by_loop["OrtValues"][1], by_loop["OrtValues"][-1]
    window = (first["ts"], last["ts"] + last["dur"])
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not window[0] <= e["ts"] <= window[1]:
            continue
        op = e.get("args", {}).get("op_name", "?")
        totals[op] = totals.get(op, 0.0) + e["dur"] * 1e-6
    total = sum(totals.values())
    step_total = sum(r["dur"] * 1e-6 for r in by_loop["OrtValues"][1:])
    print(
        f"  inside ONNX Runtime, per decode step (nodes' kernel time {total / new * 1e3:.2f} ms of model_run's "
        f"{step_total / new * 1e3:.2f} ms):"
    )
    for op, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {op}: {seconds / new * 1e3:.3f} ms ({seconds / total:.1%})")
    os.remove(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
    parser.add_argument("--new", type=int, default=16, help="decode steps timed per run")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads for both (default: all cores)")
    parser.add_argument("--overhead", action="store_true", help="the generation loop's overhead and a profile")
    args = parser.parse_args(argv)

    import bucketrt
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_transformers_model

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    manifest = read_manifest(args.export_dir)
    ids = np.random.default_rng(0).integers(0, manifest["config"]["vocab_size"], (args.batch, args.prompt))
    experts = manifest.get("experts", {})
    print(
        f"{manifest['source']} ({manifest['model_class']}, {experts.get('layers')} MoE layers of "
        f"{experts.get('num_experts')} experts top-{experts.get('top_k')}); batch {args.batch}, prompt {args.prompt}, "
        f"{args.new} decode steps, {threads} threads"
    )
    if args.overhead:
        _overhead(args.export_dir, ids, args.new, args.repeat, threads)
        return 0
    session = bucketrt.ort_session(args.export_dir, intra_op_num_threads=threads)
    model = load_transformers_model(args.export_dir)
    rows = {"ONNX Runtime + TopKExperts": _ort_runs(session, ids, args.new, args.repeat)}
    rows[f"PyTorch eager (transformers, experts '{model.config._experts_implementation}')"] = _torch_runs(
        model, ids, args.new, args.repeat
    )
    for name, (prefill, decode) in rows.items():
        print(f"  {name}: prefill {prefill * 1e3:.1f} ms, decode {decode * 1e3:.2f} ms/token")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
