"""TopKExperts' CPU kernel against the other ways to compute a top-k MoE layer's experts (run alone):

* `topk`: one TopKExperts node (its kernel groups the (token, pick) pairs by expert, then tiles of
  (expert, rows, slice of F or D) through the SIMD GEMM);
* `per-token`: the same node run once per token (T = 1 each): the naive loop, every pick's expert
  weights read again for every token;
* `expertffn`: ExpertFFN's grouping, K ExpertFFN nodes in one graph (one per pick slot, each routed
  by a stable sort of that slot's experts) and their sum in order. ExpertFFN has no gate and no
  biases, so this compares gating `none` with zero biases, the same FLOPs;
* `torch`: the PyTorch reference (a loop over the experts present, MKL's GEMMs), for scale.

Sizes: Mixtral-like (D 1024, F 2816, E 8, K 2), Qwen3-MoE-like (D 1024, F 768 and 256, E 64, K 8),
decode (T 1, 4) and prefill (T 128, 512, 2048). float32 (or --float16), `--threads` intra-op threads.

`--int8`: TopKExperts in float32 against TopKExpertsInt8 (the same layer with its experts' weights
quantized as `bucketrt quantize` does, bucketrt.quantization.expert_ffn), the SwiGLU (glu, silu)
layers of the same sizes and token counts, with the CPU's ISA and the int8 GEMM the kernels pick.

    python benchmarks/topk_experts.py [--threads 2] [--repeat 5] [--tokens 1,4,128,512,2048] [--only mixtral] [--float16]
    python benchmarks/topk_experts.py --threads 1 --cpu-time    # on a shared machine: each run's own CPU time
    python benchmarks/topk_experts.py --int8 [--threads 2] [--cpu-time]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bucketrt.benchmarking import cpu_isa, cpu_kernel_variants, describe_isa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SIZES = {  # D, F, E, K
    "mixtral": (1024, 2816, 8, 2),
    "qwen3-f768": (1024, 768, 64, 8),
    "qwen3-f256": (1024, 256, 64, 8),
}


def _inputs(rng, tokens, dim, ff, experts, picks, gating):
    from op_inputs import topk_experts_inputs

    return topk_experts_inputs(rng, tokens, picks, dim, ff, experts, gating)


def _session(attrs, threads, dtype):
    from bucketrt.library import op_session
    from bucketrt.ops.catalogue import TOPK_EXPERTS

    meta = {t.name: (dtype, None) for t in TOPK_EXPERTS.inputs if t.dtype == "float"}  # every dim symbolic
    return op_session(TOPK_EXPERTS, attrs, meta, intra_op_num_threads=threads)


def _expert_ffn_graph(picks: int, threads: int, activation: str):
    """K ExpertFFN nodes (one per pick slot) sharing hidden, wi, wo; their outputs summed in order."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from bucketrt.library import session_options
    from bucketrt.ops.catalogue import EXPERT_FFN
    from bucketrt.ops.graph import IR_VERSION, OPSET
    from bucketrt.ops.schema import DOMAIN, VERSION

    f32, i32 = TensorProto.FLOAT, TensorProto.INT32
    inputs = [
        helper.make_tensor_value_info("hidden", f32, [1, "T", "D"]),
        helper.make_tensor_value_info("wi", f32, ["E", "F", "D"]),
        helper.make_tensor_value_info("wo", f32, ["E", "D", "F"]),
    ]
    nodes, outs = [], []
    for j in range(picks):
        inputs += [
            helper.make_tensor_value_info(f"order{j}", i32, [1, "T"]),
            helper.make_tensor_value_info(f"counts{j}", i32, ["E"]),
            helper.make_tensor_value_info(f"gate{j}", f32, [1, "T"]),
        ]
        nodes.append(
            helper.make_node(
                "ExpertFFN",
                ["hidden", f"order{j}", f"counts{j}", f"gate{j}", "wi", "wo"],
                [f"y{j}"],
                domain=DOMAIN,
                **EXPERT_FFN.node_attributes({"activation": activation}),
            )
        )
        outs.append(f"y{j}")
    total = outs[0]
    for j in range(1, picks):
        nodes.append(helper.make_node("Add", [total, outs[j]], [f"sum{j}"]))
        total = f"sum{j}"
    graph = helper.make_graph(nodes, "k_expert_ffn", inputs, [helper.make_tensor_value_info(total, f32, None)])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, VERSION)]
    )
    model.ir_version = IR_VERSION
    options = session_options(intra_op_num_threads=threads)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _expert_ffn_feeds(inputs, experts):
    index, weight = inputs["expert_index"], inputs["expert_weight"]
    feeds = {
        "hidden": inputs["hidden"][None],
        "wi": inputs["gate_up"],
        "wo": inputs["down"],
    }
    for j in range(index.shape[1]):
        column = index[:, j]
        live = column < experts
        order = np.argsort(np.where(live, column, experts), kind="stable").astype(np.int32)
        feeds[f"order{j}"] = np.where(np.arange(order.size) < live.sum(), order, -1).astype(np.int32)[None]
        feeds[f"counts{j}"] = np.bincount(column[live], minlength=experts).astype(np.int32)
        feeds[f"gate{j}"] = weight[:, j][None].astype(np.float32)
    return feeds


def run(
    threads: int,
    repeat: int,
    token_counts: list[int],
    only: str | None,
    dtype: str = "float32",
    per_token_max: int = 128,
    cpu_time: bool = False,
    say=print,
) -> None:
    from bucketrt.ops import reference
    from bucketrt.ops.catalogue import TOPK_EXPERTS

    torch.set_num_threads(threads)

    clock = "CPU time" if cpu_time else "wall clock"
    say(f"CPU: {describe_isa(cpu_isa())}; kernels: {cpu_kernel_variants()}; {threads} threads; {dtype}; {clock}")
    say("")
    say("Best of each way over the rounds (interleaved), ms; the ratios are the other way's time over TopKExperts'.")
    say(
        "| layer | gating | T | TopKExperts | per-token | ExpertFFN x K | torch | vs per-token | vs ExpertFFN | vs torch |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|")
    for name, (dim, ff, experts, picks) in SIZES.items():
        if only and only != name:
            continue
        for gating in ("glu", "none"):
            activation = "silu" if gating == "glu" else "relu"
            attrs = {"activation": activation, "gating": gating, "limit": 0.0}
            rng = np.random.default_rng(0)
            weights = _inputs(rng, 1, dim, ff, experts, picks, gating)
            if gating == "none":
                weights["gate_up_bias"][:] = 0.0
                weights["down_bias"][:] = 0.0
            weights = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in weights.items()}
            session = None
            grouping = gating == "none" and dtype == "float32"
            ffn = _expert_ffn_graph(picks, threads, activation) if grouping else None
            for tokens in token_counts:
                routed = _inputs(np.random.default_rng(tokens), tokens, dim, ff, experts, picks, gating)
                routed = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in routed.items()}
                inputs = {**weights, **{k: routed[k] for k in ("hidden", "expert_index", "expert_weight")}}
                session = session or _session(attrs, threads, dtype)
                ways = {"topk": lambda: session.run(None, inputs)}
                if tokens <= per_token_max:

                    def loop(session=session, inputs=inputs, tokens=tokens):
                        for t in range(tokens):
                            one = {k: inputs[k][t : t + 1] for k in ("hidden", "expert_index", "expert_weight")}
                            session.run(None, {**inputs, **one})

                    ways["per-token"] = loop
                if ffn is not None:
                    feeds = _expert_ffn_feeds(inputs, experts)
                    (a,) = session.run(None, inputs)
                    (b,) = ffn.run(None, feeds)
                    assert np.abs(a - b[0]).max() <= 1e-4 * max(1.0, float(np.abs(b).max()))  # the same layer
                    ways["expertffn"] = lambda ffn=ffn, feeds=feeds: ffn.run(None, feeds)
                tensors = [torch.from_numpy(inputs[t.name]) for t in TOPK_EXPERTS.inputs]
                ways["torch"] = lambda tensors=tensors: reference.topk_experts(*tensors, **attrs)
                best = _interleaved(ways, repeat, cpu_time)

                def ms(way):
                    return f"{best[way] * 1e3:.2f}" if way in best else "-"

                def ratio(way):
                    return f"{best[way] / best['topk']:.1f}x" if way in best else "-"

                say(
                    f"| {name} (D {dim}, F {ff}, E {experts}, K {picks}) | {gating} | {tokens} | {ms('topk')} | "
                    f"{ms('per-token')} | {ms('expertffn')} | {ms('torch')} | {ratio('per-token')} | "
                    f"{ratio('expertffn')} | {ratio('torch')} |"
                )


def run_int8(
    threads: int, repeat: int, token_counts: list[int], only: str | None, cpu_time: bool = False, say=print
) -> None:
    """TopKExperts (float32) against TopKExpertsInt8 on the same layers and routed tokens."""
    from op_inputs import topk_experts_int8_inputs

    from bucketrt.library import op_session
    from bucketrt.ops.catalogue import TOPK_EXPERTS, TOPK_EXPERTS_INT8

    clock = "CPU time" if cpu_time else "wall clock"
    say(f"CPU: {describe_isa(cpu_isa())}; kernels: {cpu_kernel_variants()}; {threads} threads; {clock}")
    say("")
    say("Best of each over the rounds (interleaved), ms; speed-up: TopKExperts' time over TopKExpertsInt8's.")
    say("| layer | T | TopKExperts fp32 | TopKExpertsInt8 | speed-up |")
    say("|---|---|---|---|---|")
    attrs = {"activation": "silu", "gating": "glu", "limit": 0.0}
    for name, (dim, ff, experts, picks) in SIZES.items():
        if only and only != name:
            continue
        # The same weights and routing for both: the int8 inputs are the fp32 ones quantized.
        fp32_weights = _inputs(np.random.default_rng(0), 1, dim, ff, experts, picks, "glu")
        int8_weights = topk_experts_int8_inputs(np.random.default_rng(0), 1, picks, dim, ff, experts, "glu")
        sessions = {}
        for spec in (TOPK_EXPERTS, TOPK_EXPERTS_INT8):
            meta = {t.name: ("float32", None) for t in spec.inputs if t.dtype == "float"}  # every dim symbolic
            sessions[spec.name] = op_session(spec, attrs, meta, intra_op_num_threads=threads)
        for tokens in token_counts:
            routed = _inputs(np.random.default_rng(tokens), tokens, dim, ff, experts, picks, "glu")
            routed = {k: routed[k] for k in ("hidden", "expert_index", "expert_weight")}
            feeds = {TOPK_EXPERTS.name: {**fp32_weights, **routed}, TOPK_EXPERTS_INT8.name: {**int8_weights, **routed}}
            ways = {op: (lambda op=op: sessions[op].run(None, feeds[op])) for op in sessions}
            best = _interleaved(ways, repeat, cpu_time)
            fp32_ms, int8_ms = best[TOPK_EXPERTS.name] * 1e3, best[TOPK_EXPERTS_INT8.name] * 1e3
            say(
                f"| {name} (D {dim}, F {ff}, E {experts}, K {picks}) | {tokens} | {fp32_ms:.2f} | {int8_ms:.2f} | "
                f"{fp32_ms / int8_ms:.2f}x |"
            )


def _interleaved(ways: dict, repeat: int, cpu_time: bool) -> dict[str, float]:
    """The best (least) time of each way over `repeat` rounds, one run of each per round after a
    warm-up round, so that load from other processes on a shared machine hits every way alike.
    `cpu_time`: the process's CPU time (every thread's) rather than the wall clock: with one thread,
    the time a run takes on a CPU of its own, whatever else the machine runs."""
    best = dict.fromkeys(ways, float("inf"))
    clock = time.process_time if cpu_time else time.perf_counter
    with torch.no_grad():
        for round in range(repeat + 1):
            for way, fn in ways.items():
                start = clock()
                fn()
                if round:
                    best[way] = min(best[way], clock() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", default="1,4,128,512,2048")
    parser.add_argument("--only", choices=sorted(SIZES))
    parser.add_argument("--float16", action="store_true", help="float16 inputs (no ExpertFFN comparison)")
    parser.add_argument("--per-token-max", type=int, default=128, help="the most tokens the per-token loop runs")
    parser.add_argument("--cpu-time", action="store_true", help="CPU time, not wall clock (with --threads 1)")
    parser.add_argument("--int8", action="store_true", help="TopKExperts fp32 against TopKExpertsInt8")
    args = parser.parse_args(argv)
    if args.int8:
        run_int8(args.threads, args.repeat, [int(t) for t in args.tokens.split(",")], args.only, args.cpu_time)
        return 0
    dtype = "float16" if args.float16 else "float32"
    tokens = [int(t) for t in args.tokens.split(",")]
    run(args.threads, args.repeat, tokens, args.only, dtype, args.per_token_max, args.cpu_time)
    return 0


if __name__ == "__main__":
    sys.exit(main())
