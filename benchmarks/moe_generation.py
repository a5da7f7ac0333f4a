"""Prefill and decode times of a text-generation export of the moe family (Mixtral, Qwen-MoE, ...):
ONNX Runtime with bucketrt's TopKExperts against transformers' own model in PyTorch eager (its
default experts implementation), same weights, same threads, in this one process.

* prefill: the prompt [batch, PROMPT] with an empty cache, one call (median of --repeat);
* decode: one new token per row with the cache of the prompt, per token (the median over --repeat
  runs of --new steps, each run after a prefill that is not timed).

    python benchmarks/moe_generation.py out/mixtral-mid [--prompt 128] [--new 16] [--batch 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def _ort_runs(session, ids, new: int, repeat: int):
    from bucketrt.runtime import decoding

    names = [o.name for o in session.get_outputs()]
    first = decoding.first_step_feeds(session, ids)
    prefill, decode = [], []
    for _ in range(repeat + 1):  # the first run warms up
        started = time.perf_counter()
        outputs = dict(zip(names, session.run(names, first)))
        prefill.append(time.perf_counter() - started)
        mask, positions = first["attention_mask"], first["position_ids"][:, -1:]
        token = outputs["logits"][:, -1].argmax(-1)[:, None]
        started = time.perf_counter()
        for _ in range(new):
            mask = np.concatenate([mask, np.ones_like(mask[:, :1])], axis=1)
            positions = positions + 1
            feeds = {"input_ids": token, "attention_mask": mask, "position_ids": positions}
            feeds.update(
                {"past_key_values." + k[len("present.") :]: v for k, v in outputs.items() if k.startswith("present.")}
            )
            outputs = dict(zip(names, session.run(names, feeds)))
            token = outputs["logits"][:, -1].argmax(-1)[:, None]
        decode.append((time.perf_counter() - started) / new)
    return statistics.median(prefill[1:]), statistics.median(decode[1:])


def _torch_runs(model, ids, new: int, repeat: int):
    from transformers.cache_utils import DynamicCache

    ids = torch.from_numpy(ids)
    prefill, decode = [], []
    with torch.no_grad():
        for _ in range(repeat + 1):
            cache = DynamicCache()
            started = time.perf_counter()
            out = model(input_ids=ids, cache=cache, use_cache=True)
            prefill.append(time.perf_counter() - started)
            token = out.logits[:, -1].argmax(-1)[:, None]
            started = time.perf_counter()
            for _ in range(new):
                out = model(input_ids=token, cache=cache, use_cache=True)
                token = out.logits[:, -1].argmax(-1)[:, None]
            decode.append((time.perf_counter() - started) / new)
    return statistics.median(prefill[1:]), statistics.median(decode[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
    parser.add_argument("--new", type=int, default=16, help="decode steps timed per run")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads for both (default: all cores)")
    args = parser.parse_args(argv)

    import bucketrt
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_transformers_model

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    manifest = read_manifest(args.export_dir)
    session = bucketrt.ort_session(args.export_dir, intra_op_num_threads=threads)
    model = load_transformers_model(args.export_dir)
    ids = np.random.default_rng(0).integers(0, manifest["config"]["vocab_size"], (args.batch, args.prompt))
    experts = manifest.get("experts", {})
    print(
        f"{manifest['source']} ({manifest['model_class']}, {experts.get('layers')} MoE layers of "
        f"{experts.get('num_experts')} experts top-{experts.get('top_k')}); batch {args.batch}, prompt {args.prompt}, "
        f"{args.new} decode steps, {threads} threads"
    )
    rows = {"ONNX Runtime + TopKExperts": _ort_runs(session, ids, args.new, args.repeat)}
    rows[f"PyTorch eager (transformers, experts '{model.config._experts_implementation}')"] = _torch_runs(
        model, ids, args.new, args.repeat
    )
    for name, (prefill, decode) in rows.items():
        print(f"  {name}: prefill {prefill * 1e3:.1f} ms, decode {decode * 1e3:.2f} ms/token")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
