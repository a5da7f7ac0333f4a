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
        "it to the token). Then one of two formulations, chosen at run time by an ONNX If on the token count "
        "(dynamic dims stay dynamic): where the B*S tokens are at most the E experts (decoding), per-token "
        "gathered weights: each token gathers its expert's wi [F, D] and wo [D, F] and runs two batched MatMuls, "
        "the kernel's 4*B*S*F*D FLOPs, with 2*B*S*F*D gathered weight floats (no more than the experts' own "
        "weights there; Switch-base, D 768, F 3072: 18.9 MB a token); otherwise every token through every "
        "expert, each token's own output then gathered: E times the kernel's FLOPs (switch-base-8: 8 times, "
        "switch-base-128: 128) and E*B*S*(F + D) floats of intermediates (switch-base-8, 512 tokens: 63 MB), no "
        "weight copied, where the per-token form would copy 9.7 GB of weights. The kernel computes only the "
        "listed tokens' experts and reads each expert's weights once: the custom op stays the choice for "
        "prefills with many experts. Unlisted tokens are selected to 0 (never multiplied by 0, which would keep "
        "a NaN); the clamps of the activations are comparisons (ONNX Clip and Relu leave NaN to the runtime)."
    ),
    "TopKExperts": (
        "One of two formulations, chosen at run time by an ONNX If on the number of (token, pick) pairs "
        "(dynamic dims stay dynamic). Where the T*K pairs are at most the E experts (decoding), per-token "
        "gathered weights: each pair gathers its expert's gate_up [G, D], down [D, F] and biases and runs one "
        "small MatMul each, so only the chosen experts are computed: the kernel's 2*T*K*(G + F)*D FLOPs, with "
        "T*K*(G + F)*D gathered weight floats, no more than the experts' own weights, which the kernel reads too "
        "(GPT-OSS-20B, D 2880, F 2880, G 5760, E 32, K 4: 99.5 MB a pair, 398 MB for one decoding token). "
        "Otherwise every token through every expert, each pick's output then gathered: E/K times the kernel's "
        "FLOPs (GPT-OSS-20B: 8 times, Mixtral: 4, Qwen3-30B-A3B: 16) and E*T*(G + D) floats of intermediates "
        "(GPT-OSS-20B, 512 tokens: 566 MB), no weight copied, where per-pair gathering would copy 204 GB. The "
        "kernel groups the pairs by expert and computes only the chosen experts at any length: the custom op "
        "stays the choice for long prefills with many experts. A pick of expert E (none) takes expert 0 and is "
        "dropped by a select, whatever its weight; the picks' weighted outputs are summed by one ReduceSum (the "
        "runtime's order, within float32 rounding of the spec's j = 0, 1, ...). Every gating and activation "
        "lowers, the clamps as comparisons so that NaN stays NaN as in torch.clamp (GPT-OSS's "
        "glu_clamped_offset with quick_gelu among them)."
    ),
}
