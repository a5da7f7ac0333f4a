"""GPU benchmarks of bucketrt's CUDA kernels (figures, not tests), through bucketrt.library.cuda.

1. LSHCumulation alone: time, and achieved bandwidth = the bytes the op must move at least (value
   and both hash tensors and masks read once, the output written once) over that time, against the
   GPU's memory bandwidth (its datasheet figure by name, and a device-to-device copy measured here).
   YOSO's shape (B*H = 12, N = 16384, D = 64, m = 64 hashes of 9 bits) and fewer hashes, since the
   table traffic (m atomic adds and m reads per value element, in L2) grows with m while the
   compulsory bytes barely do.
2. YOSO attention = SignHash of the queries + SignHash of the keys + LSHCumulation (what the export
   runs per layer) against torch's scaled_dot_product_attention (its own backend choice: flash
   attention in float16), batch 1, 12 heads of 64, N = 4096, 16384, 65536, float16 and float32.
3. TopKExperts (a top-k MoE layer's experts) at two families' shapes, decoding steps and a prefill:
   time, the useful GFLOP/s (2 x live pairs x (G x D + D x F)) and, for decoding, the experts' weights
   streamed per second; against the same layer in eager torch (transformers' loop over the experts
   hit: gather, two matmuls through cuBLAS, index_add_), whose float16 matmuls use tensor cores where
   TopKExperts' tiles are float32 FMAs.

Run (needs torch with CUDA and the op library with the test-only CUDA harness beside it, as
`make device-lib` puts them in .device/; nothing else):

    BUCKETRT_LIBRARY=.device/libbucketrt_ort.so PYTHONPATH=src python3 benchmarks/cuda_kernels.py [--json out.json]

(Not named cuda.py: run as a script, that would shadow NVIDIA's `cuda` package, which torch imports.)

Timing: CUDA events around a loop of back-to-back calls (enqueued without synchronising, so the
harness's host work overlaps the GPU's), median of 3 loops after a warm-up call.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from bucketrt.library import cuda
from bucketrt.ops.catalogue import hadamard_parts

# Datasheet memory bandwidth, GB/s, by a substring of torch's device name (first match wins).
PEAK_BANDWIDTH_GBS = [
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5, HBM3
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L4", 300.0),
]

HEADS, HEAD_DIM, HASHES, CODE_LEN = 12, 64, 64, 9  # yoso-4096's attention (YosoConfig defaults)
RESULTS: dict = {}


def say(line: str = "") -> None:
    print(line, flush=True)


def gpu_ms(fn, min_ms: float = 200.0, max_iters: int = 200) -> float:
    """Median per-call GPU time of fn (ms): warm-up, one timed call to size the loops, 3 loops."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    one = start.elapsed_time(end)
    iters = max(1, min(max_iters, int(min_ms / max(one, 1e-3))))
    samples = []
    for _ in range(3):
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / iters)
    return statistics.median(samples)


def copy_bandwidth_gbs() -> float:
    """A device-to-device copy of 1 GiB: bytes read + written per second."""
    x = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    ms = gpu_ms(lambda: y.copy_(x), min_ms=100.0)
    return 2 * x.numel() * 4 / (ms * 1e-3) / 1e9


def peak_bandwidth(name: str) -> tuple[float | None, str]:
    for key, gbs in PEAK_BANDWIDTH_GBS:
        if key in name:
            return gbs, f"datasheet ({key})"
    return None, "unknown GPU: no datasheet figure"


# -- LSHCumulation ---------------------------------------------------------------------------


def lsh_inputs(batch, length, dim, num_hash, capacity, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.int32, device="cuda")
    query_hash = torch.randint(0, capacity, (batch, length, num_hash), dtype=torch.int32, device="cuda", generator=g)
    key_hash = torch.randint(0, capacity, (batch, length, num_hash), dtype=torch.int32, device="cuda", generator=g)
    value = torch.randn(batch, length, dim, device="cuda", generator=g).to(dtype)
    return mask, query_hash, mask, key_hash, value


def compulsory_bytes(batch, length, dim, num_hash, dtype) -> int:
    element = torch.finfo(dtype).bits // 8
    return batch * length * (2 * dim * element + 2 * num_hash * 4 + 2 * 4)


def bench_lsh(peak_gbs: float | None, copy_gbs: float) -> None:
    batch, length, dim, capacity = HEADS, 16384, HEAD_DIM, 2**CODE_LEN
    say(f"## LSHCumulation alone (B*H={batch}, N={length}, D={dim}, capacity {capacity}, random codes)")
    say("")
    say(
        "Achieved = compulsory bytes / time; the last columns compare it with the datasheet bandwidth "
        f"({peak_gbs or 'n/a'} GB/s) and with the copy measured here ({copy_gbs:.0f} GB/s)."
    )
    say("")
    say("| dtype | m | mode | ms | compulsory MB | achieved GB/s | % of datasheet | % of copy |")
    say("|---|---:|---|---:|---:|---:|---:|---:|")
    rows = []
    for dtype in (torch.float16, torch.float32):
        for num_hash, deterministic in ((64, 0), (64, 1), (16, 0), (4, 0), (1, 0)):
            inputs = lsh_inputs(batch, length, dim, num_hash, capacity, dtype)
            attrs = {"hashtable_capacity": capacity, "deterministic": deterministic}
            workspace_bytes, _ = cuda.plan("LSHCumulation", *inputs, **attrs)
            workspace = torch.empty(max(workspace_bytes, 1), dtype=torch.uint8, device="cuda")
            ms = gpu_ms(lambda: cuda.run("LSHCumulation", *inputs, synchronous=False, workspace=workspace, **attrs))
            nbytes = compulsory_bytes(batch, length, dim, num_hash, dtype)
            gbs = nbytes / (ms * 1e-3) / 1e9
            of_peak = f"{100 * gbs / peak_gbs:.1f}%" if peak_gbs else "n/a"
            name = str(dtype).removeprefix("torch.")
            mode = "deterministic" if deterministic else "fast"
            say(
                f"| {name} | {num_hash} | {mode} | {ms:.3f} | {nbytes / 1e6:.1f} | {gbs:.0f} | {of_peak} | "
                f"{100 * gbs / copy_gbs:.1f}% |"
            )
            rows.append({"dtype": name, "num_hash": num_hash, "mode": mode, "ms": ms, "bytes": nbytes, "gbs": gbs})
    RESULTS["lsh_cumulation"] = rows
    say("")


# -- YOSO attention against SDPA ---------------------------------------------------------------


def bench_yoso(lengths: list[int]) -> None:
    say(
        f"## YOSO attention (2 x SignHash + LSHCumulation) vs torch SDPA: batch 1, {HEADS} heads of {HEAD_DIM}, "
        f"m={HASHES}, L={CODE_LEN} (hadamard)"
    )
    say("")
    say("| dtype | N | SignHash x2 ms | LSHCumulation ms | YOSO ms | SDPA ms | SDPA / YOSO |")
    say("|---|---:|---:|---:|---:|---:|---:|")
    parts = hadamard_parts(HEAD_DIM, HASHES, CODE_LEN)
    rows = []
    for dtype in (torch.float16, torch.float32):
        for length in lengths:
            g = torch.Generator(device="cuda").manual_seed(length)
            q, k, v = (torch.randn(HEADS, length, HEAD_DIM, device="cuda", generator=g).to(dtype) for _ in range(3))
            mask = torch.ones(HEADS, length, dtype=torch.int32, device="cuda")
            projection = torch.randn(HEADS, 3 * parts, HEAD_DIM, device="cuda", generator=g).sign().to(dtype)
            hash_attrs = {"num_hash": HASHES, "hash_code_len": CODE_LEN, "transform": "hadamard"}
            lsh_attrs = {"hashtable_capacity": 2**CODE_LEN}
            (qh,) = cuda.run("SignHash", mask, q, projection, **hash_attrs)
            (kh,) = cuda.run("SignHash", mask, k, projection, **hash_attrs)
            lsh_bytes, _ = cuda.plan("LSHCumulation", mask, qh, mask, kh, v, **lsh_attrs)
            workspace = torch.empty(max(lsh_bytes, 1), dtype=torch.uint8, device="cuda")

            def hash_both():
                a = cuda.run("SignHash", mask, q, projection, synchronous=False, **hash_attrs)[0]
                b = cuda.run("SignHash", mask, k, projection, synchronous=False, **hash_attrs)[0]
                return a, b

            def cumulate():
                return cuda.run(
                    "LSHCumulation", mask, qh, mask, kh, v, synchronous=False, workspace=workspace, **lsh_attrs
                )

            def yoso():
                a, b = hash_both()
                return cuda.run(
                    "LSHCumulation", mask, a, mask, b, v, synchronous=False, workspace=workspace, **lsh_attrs
                )

            q4, k4, v4 = (t.view(1, HEADS, length, HEAD_DIM) for t in (q, k, v))

            def sdpa():
                return torch.nn.functional.scaled_dot_product_attention(q4, k4, v4)

            t_hash, t_lsh, t_yoso = gpu_ms(hash_both), gpu_ms(cumulate), gpu_ms(yoso)
            try:
                t_sdpa = gpu_ms(sdpa, min_ms=200.0 if length <= 16384 else 50.0)
                ratio = f"{t_sdpa / t_yoso:.2f}x"
            except RuntimeError as e:  # e.g. out of memory for a backend without flash attention
                t_sdpa, ratio = math.nan, f"SDPA failed: {str(e).splitlines()[0][:60]}"
            name = str(dtype).removeprefix("torch.")
            say(f"| {name} | {length} | {t_hash:.3f} | {t_lsh:.3f} | {t_yoso:.3f} | {t_sdpa:.3f} | {ratio} |")
            rows.append(
                {"dtype": name, "N": length, "hash_ms": t_hash, "lsh_ms": t_lsh, "yoso_ms": t_yoso, "sdpa_ms": t_sdpa}
            )
            torch.cuda.empty_cache()
    RESULTS["yoso_vs_sdpa"] = rows
    say("")
    say("Goal: YOSO at least 2x faster than SDPA at N = 16384.")
    say("")


# -- TopKExperts -------------------------------------------------------------------------------

# (name, D, F, E, K, gating, activation, limit): a coarse family (few wide experts) and a fine one.
TOPK_MODELS = [
    ("Mixtral-8x7B", 4096, 14336, 8, 2, "glu", "silu", 0.0),
    ("GPT-OSS-20B", 2880, 2880, 32, 4, "glu_clamped_offset", "quick_gelu", 7.0),
]
TOPK_TOKENS = (1, 16, 2048)


def topk_torch(hidden, index, weight, gate_up, gate_up_bias, down, down_bias, attrs):
    """The layer as transformers' eager experts run it: per expert hit, its tokens' two projections."""
    from bucketrt.ops.reference import EXPERT_ACTIVATIONS, gating_function

    ffn = gating_function(attrs["gating"], EXPERT_ACTIVATIONS[attrs["activation"]], attrs["limit"])
    out = torch.zeros_like(hidden)
    experts = gate_up.shape[0]
    for e in index.unique().tolist():
        if e == experts:
            continue
        token, pick = (index == e).nonzero(as_tuple=True)
        h = torch.nn.functional.linear(hidden[token], gate_up[e], gate_up_bias[e])
        y = torch.nn.functional.linear(ffn(h), down[e], down_bias[e])
        out.index_add_(0, token, y * weight[token, pick, None])
    return out


def bench_topk() -> None:
    say("## TopKExperts vs the same layer in eager torch (a loop over the experts hit)")
    say("")
    say(
        "Random routing (distinct experts per token), weights N(0, 1/fan-in). GFLOP/s: useful flops "
        "2 x pairs x (G x D + D x F) over time; GB/s: the weights of the experts hit read once, over time."
    )
    say("")
    say(
        "| model | dtype | tokens | pairs | experts hit | TopKExperts ms | GFLOP/s | weights GB/s | torch ms | torch / ours |"
    )
    say("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, dim, ff, experts, picks, gating, activation, limit in TOPK_MODELS:
        width = ff if gating == "none" else 2 * ff
        attrs = {"activation": activation, "gating": gating, "limit": limit}
        for dtype in (torch.float16, torch.float32):
            g = torch.Generator(device="cuda").manual_seed(dim + ff)
            weights = (
                (torch.randn(experts, width, dim, device="cuda", generator=g) / dim**0.5).to(dtype),
                (0.1 * torch.randn(experts, width, device="cuda", generator=g)).to(dtype),
                (torch.randn(experts, dim, ff, device="cuda", generator=g) / ff**0.5).to(dtype),
                (0.1 * torch.randn(experts, dim, device="cuda", generator=g)).to(dtype),
            )
            for tokens in TOPK_TOKENS:
                hidden = torch.randn(tokens, dim, device="cuda", generator=g).to(dtype)
                index = torch.rand(tokens, experts, device="cuda", generator=g).argsort(1)[:, :picks].to(torch.int32)
                weight = torch.rand(tokens, picks, device="cuda", generator=g).to(dtype)
                inputs = (hidden, index, weight, *weights)
                workspace_bytes, _ = cuda.plan("TopKExperts", *inputs, **attrs)
                workspace = torch.empty(max(workspace_bytes, 1), dtype=torch.uint8, device="cuda")
                ms = gpu_ms(
                    lambda: cuda.run("TopKExperts", *inputs, synchronous=False, workspace=workspace, **attrs),
                    min_ms=50.0,
                )
                hit = int(index.unique().numel())
                pairs = tokens * picks
                gflops = 2 * pairs * (width * dim + dim * ff) / (ms * 1e-3) / 1e9
                element = torch.finfo(dtype).bits // 8
                weight_gbs = hit * (width * (dim + 1) + dim * (ff + 1)) * element / (ms * 1e-3) / 1e9
                long_index = index.long()
                torch_ms = gpu_ms(lambda: topk_torch(hidden, long_index, weight, *weights, attrs), min_ms=50.0)
                label = str(dtype).removeprefix("torch.")
                say(
                    f"| {name} | {label} | {tokens} | {pairs} | {hit} | {ms:.3f} | {gflops:.0f} | {weight_gbs:.0f} | "
                    f"{torch_ms:.3f} | {torch_ms / ms:.2f}x |"
                )
                rows.append(
                    {
                        "model": name,
                        "dtype": label,
                        "tokens": tokens,
                        "pairs": pairs,
                        "experts_hit": hit,
                        "ms": ms,
                        "gflops": gflops,
                        "weights_gbs": weight_gbs,
                        "torch_ms": torch_ms,
                    }
                )
            torch.cuda.empty_cache()
    RESULTS["topk_experts"] = rows
    say("")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--lengths", default="4096,16384,65536")
    parser.add_argument("--only", choices=["lsh", "yoso", "topk"], help="one part")
    args = parser.parse_args(argv)
    reason = cuda.unavailable_reason()
    if reason:
        print(f"bucketrt CUDA benchmarks skipped: {reason}", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    peak, source = peak_bandwidth(name)
    copy = copy_bandwidth_gbs()
    say(f"# bucketrt CUDA benchmarks: {name}")
    say("")
    say(
        f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}); memory bandwidth {peak or 'n/a'} GB/s ({source}), device copy measured "
        f"{copy:.0f} GB/s; {time.strftime('%Y-%m-%d')}"
    )
    say("")
    RESULTS.update(gpu=name, peak_gbs=peak, copy_gbs=copy, torch=torch.__version__)
    started = time.perf_counter()
    if args.only in (None, "lsh"):
        bench_lsh(peak, copy)
    if args.only in (None, "yoso"):
        bench_yoso([int(n) for n in args.lengths.split(",")])
    if args.only in (None, "topk"):
        bench_topk()
    say(f"(benchmarks took {time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(RESULTS, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
