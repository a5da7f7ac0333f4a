"""One causal self-attention layer's core on CPU, the ways ONNX Runtime and PyTorch can run it (run alone):

* `eager`: the standard ops the MoE exports trace (transformers' eager attention): MatMul of the
  queries by the transposed keys, Mul by the scale, Add of the float causal mask, Softmax, MatMul
  by the values. ONNX Runtime fuses the first two into FusedMatMul;
* `com.microsoft MultiHeadAttention` (`unidirectional=1`), ONNX Runtime's contrib op, what an
  ORT-only rewrite of the export at session creation would run;
* `ONNX Attention` (opset 23, `is_causal=1`), the standard op (ONNX IR 11, which ONNX Runtime
  1.32 reads; older releases do not have it);
* `bucketrt MaskedAttention`: bucketrt's op (what the MoE exports run since 2026-12-06 night), with
  the causal mask as int32 and no sinks;
* `torch sdpa`: PyTorch's `scaled_dot_product_attention(is_causal=True)`, what transformers' sdpa
  attention runs, in float32 and bfloat16.

Every ONNX Runtime form is checked against `eager` (max abs difference printed). Queries, keys and
values [batch, heads, length, head_dim] (every head its own keys: GQA's repeat is not in the
figure); milliseconds per call, the best of --repeat after a warm-up.

    python benchmarks/attention_cpu.py [--length 1024] [--heads 16] [--head-dim 64] [--batch 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _best_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from bucketrt.benchmarking import cpu_isa, describe_isa

    b, h, s, d = args.batch, args.heads, args.length, args.head_dim
    print(f"CPU: {describe_isa(cpu_isa())}; onnxruntime {ort.__version__}, torch {torch.__version__}")
    print(
        f"batch {b}, {h} heads of {d}, length {s}, causal, {args.threads} threads; ms per call (best of {args.repeat})"
    )
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((b, h, s, d), dtype=np.float32) for _ in range(3))
    mask = np.triu(np.full((s, s), np.finfo(np.float32).min, np.float32), 1)[None, None]

    def session(nodes, inputs, opsets, ir_version=10):
        used = {name for node in nodes for name in node.input}
        graph = helper.make_graph(
            nodes,
            "attention",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
            [helper.make_tensor("scale", TensorProto.FLOAT, [], [d**-0.5])] if "scale" in used else [],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(*o) for o in opsets], ir_version=ir_version)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        return ort.InferenceSession(model.SerializeToString(), options)

    eager = session(
        [
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["scores"]),
            helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "mask"], ["masked"]),
            helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
            helper.make_node("MatMul", ["probs", "v"], ["out"]),
        ],
        ("q", "k", "v", "mask"),
        [("", 20)],
    )
    feeds = {"q": q, "k": k, "v": v, "mask": mask}
    (want,) = eager.run(None, feeds)
    rows = [
        ("eager (FusedMatMul, Add mask, Softmax, MatMul)", _best_ms(lambda: eager.run(None, feeds), args.repeat), 0.0)
    ]

    flat = {n: x.transpose(0, 2, 1, 3).reshape(b, s, h * d).copy() for n, x in (("q", q), ("k", k), ("v", v))}
    mha = session(
        [
            helper.make_node(
                "MultiHeadAttention", ["q", "k", "v"], ["out"], domain="com.microsoft", num_heads=h, unidirectional=1
            )
        ],
        ("q", "k", "v"),
        [("", 20), ("com.microsoft", 1)],
    )
    (got,) = mha.run(None, flat)
    got = got.reshape(b, s, h, d).transpose(0, 2, 1, 3)
    rows.append(
        (
            "com.microsoft MultiHeadAttention",
            _best_ms(lambda: mha.run(None, flat), args.repeat),
            np.abs(got - want).max(),
        )
    )
    try:
        standard = session(
            [helper.make_node("Attention", ["q", "k", "v"], ["out"], is_causal=1)], ("q", "k", "v"), [("", 23)], 11
        )
        plain = {"q": q, "k": k, "v": v}
        (got,) = standard.run(None, plain)
        rows.append(
            (
                "ONNX Attention (opset 23)",
                _best_ms(lambda: standard.run(None, plain), args.repeat),
                np.abs(got - want).max(),
            )
        )
    except Exception as e:  # an ONNX Runtime without opset 23
        print(f"ONNX Attention (opset 23): not run: {' '.join(str(e).split())[:160]}")

    from bucketrt.library import op_session
    from bucketrt.ops.catalogue import MASKED_ATTENTION

    ours = op_session(MASKED_ATTENTION, {"scale": d**-0.5}, intra_op_num_threads=args.threads)
    bucketrt_feeds = {
        "query": q,
        "key": k,
        "value": v,
        "mask": np.tril(np.ones((b, s, s), np.int32)),
        "sinks": np.full(h, -np.inf, np.float32),
    }
    (got,) = ours.run(None, bucketrt_feeds)
    got = got.transpose(0, 2, 1, 3)  # [B, S, H, D] -> [B, H, S, D]
    rows.append(
        (
            "bucketrt MaskedAttention",
            _best_ms(lambda: ours.run(None, bucketrt_feeds), args.repeat),
            np.abs(got - want).max(),
        )
    )

    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            tq, tk, tv = (torch.from_numpy(x).to(dtype) for x in (q, k, v))

            def sdpa(tq=tq, tk=tk, tv=tv):
                return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)

            diff = (sdpa().float().numpy() - want).__abs__().max()
            rows.append((f"torch sdpa {str(dtype).split('.')[-1]}", _best_ms(sdpa, args.repeat), diff))
    base = rows[0][1]
    for name, ms, diff in rows:
        print(f"  {name:50s} {ms:8.1f} ms  {base / ms:5.2f}x eager  (max abs diff {diff:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
