"""SwitchTransformers benchmarks (run by benchmarks/run.py --only switch, or alone):

1. The MoE layer alone in ONNX Runtime (router MatMul + Softmax + Top1Dispatch + ExpertFFN) against
   one dense FFN of the same d_ff (MatMul + Relu + MatMul, ORT's MLAS) on the same tokens:
   switch-base-8's sizes (d_model 768, d_ff 3072, 8 experts, capacity 64), batch 8 x 128 tokens.
   Goal: at most 1.3x the dense FFN (the same FLOPs, plus routing, gathers and scatters).
2. ExpertFFN in float32 against ExpertFFNInt8 (int8 experts, bucketrt.quantization.expert_ffn),
   single nodes at switch-base-8's sizes (d_model 768, d_ff 3072, 8 experts), 16, 512 and 2048 tokens
   spread evenly over the experts, with the CPU's ISA flags and the int8 path they select.
3. The exported switch-base-8 encoder in ONNX Runtime against the same model in PyTorch eager
   (transformers' own, unpatched), batch 8 x 128. Goal: ORT at least 1.5x faster.

    python benchmarks/switch.py [--threads N] [--repeat R] [--only layer|int8|encoder]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from bucketrt.benchmarking import Timing, measure

OUT = Path("out/bench")


def _say(say, line=""):
    (say or print)(line)


def _interleaved(a, b, repeat: int) -> tuple[Timing, Timing]:
    """Medians of `a` and `b` timed in alternation (one run of each per round), so that load from
    other processes on a shared machine hits both alike."""
    runs_a, runs_b = [], []
    for _ in range(repeat):
        runs_a.append(measure(a, warmup=0, repeat=1).median_s)
        runs_b.append(measure(b, warmup=0, repeat=1).median_s)
    return (
        Timing(statistics.median(runs_a), min(runs_a), repeat),
        Timing(statistics.median(runs_b), min(runs_b), repeat),
    )


def moe_layer(threads: int, repeat: int, say=None, batch=8, length=128, d_model=768, d_ff=3072, experts=8, capacity=64):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import bucketrt
    from bucketrt.ops.catalogue import EXPERT_FFN, TOP1_DISPATCH
    from bucketrt.ops.graph import IR_VERSION, OPSET
    from bucketrt.ops.schema import DOMAIN, VERSION

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, length, d_model), dtype=np.float32)
    router = (rng.standard_normal((d_model, experts)) * d_model**-0.5).astype(np.float32)
    wi = (rng.standard_normal((experts, d_ff, d_model)) * d_model**-0.5).astype(np.float32)
    wo = (rng.standard_normal((experts, d_model, d_ff)) * d_ff**-0.5).astype(np.float32)
    hidden = helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["B", "S", d_model])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "S", d_model])

    def model(nodes, inits, extra_opsets=()):
        graph = helper.make_graph(
            nodes, "g", [hidden], [out], [numpy_helper.from_array(a, n) for n, a in inits.items()]
        )
        return helper.make_model(
            graph,
            ir_version=IR_VERSION,
            opset_imports=[helper.make_opsetid("", OPSET), *extra_opsets],
        ).SerializeToString()

    moe = model(
        [
            helper.make_node("MatMul", ["hidden", "router"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
            helper.make_node(
                TOP1_DISPATCH.name,
                ["probs"],
                [t.name for t in TOP1_DISPATCH.outputs],
                domain=DOMAIN,
                **TOP1_DISPATCH.node_attributes({"expert_capacity": capacity}),
            ),
            helper.make_node(
                EXPERT_FFN.name,
                ["hidden", "order", "counts", "gate", "wi", "wo"],
                ["out"],
                domain=DOMAIN,
                **EXPERT_FFN.node_attributes({"activation": "relu"}),
            ),
        ],
        {"router": router, "wi": wi, "wo": wo},
        [helper.make_opsetid(DOMAIN, VERSION)],
    )
    # The dense FFN with the first expert's weights, transposed for MatMul (as torch exports nn.Linear).
    dense = model(
        [
            helper.make_node("MatMul", ["hidden", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("MatMul", ["a", "w2"], ["out"]),
        ],
        {"w1": np.ascontiguousarray(wi[0].T), "w2": np.ascontiguousarray(wo[0].T)},
    )
    moe_s = ort.InferenceSession(moe, bucketrt.session_options(threads), providers=["CPUExecutionProvider"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    dense_s = ort.InferenceSession(dense, options, providers=["CPUExecutionProvider"])
    feeds = {"hidden": x}
    for _ in range(2):
        moe_s.run(None, feeds), dense_s.run(None, feeds)
    moe_t, dense_t = _interleaved(lambda: moe_s.run(None, feeds), lambda: dense_s.run(None, feeds), repeat)
    _say(
        say,
        f"## Switch MoE layer alone (batch {batch} x {length} tokens, d_model {d_model}, d_ff {d_ff}, "
        f"{experts} experts, capacity {capacity}, {threads} threads)",
    )
    _say(say)
    _say(say, "| layer | ORT ms | vs dense FFN |")
    _say(say, "|---|---:|---:|")
    _say(say, f"| dense FFN (MatMul, Relu, MatMul) | {dense_t.ms:.1f} | 1.00x |")
    _say(say, f"| MoE: router + Top1Dispatch + ExpertFFN | {moe_t.ms:.1f} | {moe_t.median_s / dense_t.median_s:.2f}x |")
    _say(say)
    return moe_t.median_s / dense_t.median_s


def encoder(threads: int, repeat: int, say=None, batch=8, length=128):
    import bucketrt
    from bucketrt.exporter import export, load_reference

    path = OUT / "switch-base-8-encoder"
    if not (path / "bucketrt.json").is_file():
        export("switch-base-8", path, task="feature-extraction-encoder")
    ref = load_reference(path)  # rebuilt from the seed: the same weights
    import transformers

    hf = transformers.SwitchTransformersEncoderModel(ref.model.config)
    hf.load_state_dict(ref.model.state_dict())  # transformers' own modules, unpatched
    hf.eval()
    del ref
    rng = np.random.default_rng(0)
    ids = rng.integers(0, hf.config.vocab_size, (batch, length), dtype=np.int64)
    mask = np.ones_like(ids)
    session = bucketrt.ort_session(path, intra_op_num_threads=threads)
    feeds = {"input_ids": ids, "attention_mask": mask}
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

    def eager():
        with torch.no_grad():
            return hf(input_ids=t_ids, attention_mask=t_mask).last_hidden_state

    got = session.run(None, feeds)[0]
    err = float(np.abs(got - eager().numpy()).max())
    eager()
    ort_t, pt_t = _interleaved(lambda: session.run(None, feeds), eager, repeat)
    _say(say, f"## switch-base-8 encoder (batch {batch} x {length}, {threads} threads)")
    _say(say)
    _say(say, "| PyTorch eager ms | ORT ms | speed-up | max abs diff |")
    _say(say, "|---:|---:|---:|---:|")
    _say(say, f"| {pt_t.ms:.0f} | {ort_t.ms:.0f} | {pt_t.median_s / ort_t.median_s:.2f}x | {err:.1e} |")
    _say(say)
    return pt_t.median_s / ort_t.median_s


def expert_ffn_int8(threads: int, repeat: int, say=None, tokens=(16, 512, 2048), d_model=768, d_ff=3072, experts=8):
    from bucketrt.benchmarking import cpu_isa, describe_isa
    from bucketrt.library import op_session
    from bucketrt.ops.catalogue import EXPERT_FFN, EXPERT_FFN_INT8
    from bucketrt.quantization.expert_ffn import quantize_weights

    _say(
        say, f"ExpertFFN float32 vs ExpertFFNInt8, d_model {d_model}, d_ff {d_ff}, {experts} experts, {threads} threads"
    )
    _say(say, f"CPU: {describe_isa(cpu_isa())}")
    _say(say, "| tokens | ExpertFFN fp32 ms | ExpertFFNInt8 ms | speed-up |")
    _say(say, "|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    wi = (rng.standard_normal((experts, d_ff, d_model)) * d_model**-0.5).astype(np.float32)
    wo = (rng.standard_normal((experts, d_model, d_ff)) * d_ff**-0.5).astype(np.float32)
    wi8, wi_scale = quantize_weights(wi)
    wo8, wo_scale = quantize_weights(wo)
    attrs = {"activation": "relu"}
    for n in tokens:
        common = {
            "hidden": rng.standard_normal((1, n, d_model), dtype=np.float32),
            "order": rng.permutation(n).astype(np.int32).reshape(1, n),
            "counts": np.full(experts, n // experts, np.int32),
            "gate": rng.random((1, n), dtype=np.float32),
        }
        fp32 = {**common, "wi": wi, "wo": wo}
        int8 = {**common, "wi": wi8, "wi_scale": wi_scale, "wo": wo8, "wo_scale": wo_scale}
        sessions = []
        for spec, feeds in ((EXPERT_FFN, fp32), (EXPERT_FFN_INT8, int8)):
            meta = {k: (str(v.dtype), list(v.shape)) for k, v in feeds.items()}
            session = op_session(spec, attrs, meta, intra_op_num_threads=threads)
            session.run(None, feeds)  # warm-up
            sessions.append((session, feeds))
        (s32, f32), (s8, f8) = sessions
        t32, t8 = _interleaved(lambda: s32.run(None, f32), lambda: s8.run(None, f8), repeat)
        ms32, ms8 = t32.median_s * 1e3, t8.median_s * 1e3
        _say(say, f"| {n} | {ms32:.1f} | {ms8:.1f} | {ms32 / ms8:.2f}x |")
    _say(say)


def run(threads: int, repeat: int, say=None) -> None:
    moe_layer(threads, repeat, say)
    expert_ffn_int8(threads, repeat, say)
    encoder(threads, repeat, say)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("layer", "int8", "encoder"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only in (None, "layer"):
        moe_layer(args.threads, args.repeat)
    if args.only in (None, "int8"):
        expert_ffn_int8(args.threads, args.repeat)
    if args.only in (None, "encoder"):
        encoder(args.threads, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
