"""What each op's standard-op lowering (ops/lowering.py) costs against its custom kernels, as
docs/ops.md states it ("Standard-op lowering", one subsection per op; codegen writes it). Standard
library only, as codegen.

The figures are per MoE layer and call, float32 (4 bytes), with T tokens, K picks per token, E experts,
D the model width, F the experts' width and G their first projection's (2F gated, F plain).
"""

from __future__ import annotations

INTRO = (
    "`bucketrt export --ops standard` traces each op's lowering (src/bucketrt/ops/lowering.py) instead of "
    "emitting its bucketrt node: standard ONNX ops only, every dynamic dim left dynamic, the reference's "
    "semantics (integer outputs identical, floats within float32 rounding, the non-finite rules above). "
    "What each lowering costs against the custom kernel:"
)

# Op name -> its subsection's text.
COSTS: dict[str, str] = {
    "Top1Dispatch": (
        "No sort and no TopK (so no runtime's TopK limit on K applies): the expert is an ArgMax (NaN found apart, "
        "as the spec's first NaN), the priority a CumSum of the [B, S, E] one-hot over the sequence, and a kept "
        "token's place in `order` its expert's start (the exclusive CumSum of `counts`) plus its rank among that "
        "expert's kept tokens (a CumSum in flat token order); the dropped tokens fill the places after the kept ones, "
        "so `order` is one ScatterElements of a permutation (no duplicate index). Time and memory O(B*S*E), as the "
        "kernel's argmax over E; the one-hot and its CumSums are int64, [B*S, E] (8 bytes each: 4 MB for 4096 "
        "tokens and 128 experts). Outputs identical to the reference's, NaN and Inf included."
    ),
    "ExpertFFN": (
        "Each token's expert comes from `order` and `counts` without a sort (place i belongs to expert "
        "#{e : end_e <= i}, end the inclusive CumSum of `counts`: a [B*S, E] comparison; one ScatterElements takes "
        "it to the token). Then per-token gathered weights: each token gathers its expert's wi [F, D] and wo [D, F] "
        "(Gather) and runs two batched MatMuls, so only the chosen expert is computed: the kernel's 4*B*S*F*D "
        "FLOPs, but 2*B*S*F*D gathered weights in memory where the kernel reads each expert's weights once "
        "(Switch-base: D 768, F 3072: 18.9 MB a token, 1.2 GB for 64 tokens, 9.7 GB for 512). A dense "
        "formulation (every token through every expert, each token's own selected) would cost E times the "
        "kernel's FLOPs and E*B*S*(F + D) floats of intermediates, without copying weights: the gathered form "
        "wins for decoding and small batches, the dense one for long prefills at large D*F. Unlisted tokens are "
        "selected to 0 (never multiplied by 0, which would keep a NaN); the clamps of the activations are "
        "comparisons (ONNX Clip and Relu leave NaN to the runtime)."
    ),
    "TopKExperts": (
        "Per-token gathered weights: each (token, pick) pair gathers its expert's gate_up [G, D], down [D, F] and "
        "biases and runs one small MatMul each, so only the chosen experts are computed: the kernel's "
        "2*T*K*(G + F)*D FLOPs, but T*K*(G + F)*D gathered weight floats in memory, where the kernel groups the "
        "pairs by expert and reads each chosen expert's weights once per call. GPT-OSS-20B (D 2880, F 2880, "
        "G 5760, E 32, K 4): 99.5 MB a pair, 398 MB for one decoding token (the four experts' weights, which the "
        "kernel reads too), 204 GB for a 512-token prefill. A dense all-experts formulation costs E/K times the "
        "kernel's FLOPs (GPT-OSS-20B: 8 times, Qwen3-30B-A3B: 16) and E*T*(G + D) floats of intermediates "
        "(GPT-OSS-20B, 512 tokens: 566 MB) and copies no weight: the gathered form is the one that scales with "
        "K rather than E, and fits decoding (T*K pairs of weights, no more than the kernel reads when T*K <= E); "
        "prefills of many tokens at large widths need the custom kernel, or a runtime's own MoE layer. A pick of "
        "expert E (none) gathers expert 0 and is dropped by a select, whatever its weight; the picks' weighted "
        "outputs are summed by one ReduceSum (the runtime's order, within float32 rounding of the spec's j = 0, "
        "1, ...). Every gating and activation lowers, the clamps as comparisons so that NaN stays NaN as in "
        "torch.clamp (GPT-OSS's glu_clamped_offset with quick_gelu among them)."
    ),
}
