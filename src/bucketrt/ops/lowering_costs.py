"""What each op's standard-op lowering (ops/lowering.py) costs against its custom kernels, as
docs/ops.md states it ("Standard-op lowering", one subsection per op; codegen writes it). Standard
library only, as codegen.

The MoE figures are per MoE layer and call, float32 (4 bytes), with T tokens, K picks per token, E
experts, D the model width, F the experts' width and G their first projection's (2F gated, F plain);
the hashing and attention ops' use their specs' dims.
"""

from __future__ import annotations

INTRO = (
    "`bucketrt export --ops standard` traces each op's lowering (src/bucketrt/ops/lowering.py) instead of "
    "emitting its bucketrt node: standard ONNX ops only, every dynamic dim left dynamic, the reference's "
    "semantics (integer outputs identical, floats within float32 rounding, the non-finite rules above; float16 "
    "computed in float32 and rounded once), so that the graph runs in any ONNX runtime without bucketrt's op "
    'library (ONNX Runtime without it, OpenVINO, TensorRT for RTX); the manifest records `"op_set": "standard"` '
    "and lists no ops. Where the reference takes a float32 MatMul (SignHash's gaussian projection, ArgmaxHash), "
    "the runtime picks its summation order: a code bit or bucket within rounding may differ, as between the "
    "kernels. A lowered graph has none of the kernels' data checks: it takes the values it is given, and an "
    "out-of-range code, bucket or index fails the runtime's Gather or Scatter (or wraps, for a negative one), "
    "or adds nothing where it is summed by a one-hot (LSHCumulation's keys, BucketSum's rows), instead of the "
    "kernels' error. No lowering scatters with a reduction (TensorRT for RTX's ONNX parser takes none; the one "
    "exception is stated under LSHCumulation). No lowering uses TopK: sorts are radix or counting sorts in CumSum and "
    "ScatterElements, so a runtime's TopK limit (TensorRT's K <= 3840) bounds no length. "
    "`tests/test_lowering.py` and `tests/test_lowering_moe.py` test each lowering against its reference, eagerly "
    "and exported. What each costs against the custom kernel:"
)

# Op name -> its subsection's text.
COSTS: dict[str, str] = {
    "SignHash": (
        "The reference's arithmetic. Hadamard: the three butterfly transforms and ±1 diagonals are exact in "
        "float32, so the codes are the reference's to the bit; memory [B, N, P, D] floats per step, where the "
        "kernel transforms a row in registers; time log2(D) Add/Sub steps of the same work. Gaussian: one "
        "MatMul, as the reference takes it for finite inputs; the runtime picks its summation order, so a bit "
        "whose projection lies within rounding of 0 may differ (as between the kernels, which sum in d "
        "order)."
    ),
    "ArgmaxHash": (
        "bucket_sizes stays an input (its values are unknown when tracing; its length F is known): factor f's "
        "candidates are the round's S columns masked to its own (o_f .. o_f + n_f/2, the others -inf), so "
        "that one ArgMax over [y, -y] finds its digit in the reference's order (NaN first, then the first "
        "maximum). Cost: the projection as one MatMul (the kernel's work), then F ArgMaxes over 2S candidates "
        "where the kernel scans 2S once (F is 1, or 2 for factorised buckets), and [B, H, R, N, 2S] floats of "
        "candidates per factor. A bucket may differ where two candidates lie within rounding of each other "
        "(the MatMul's order), as between the kernels."
    ),
    "LSHCumulation": (
        "Per hash function, a [B, capacity, D] table of the keys' values summed by code: one MatMul of the keys' "
        "one-hot [B, Nk, capacity] (transposed) with their values beside the values' +Inf and -Inf flags (NaN "
        "counting as both; [B, Nk, 3D]), so that a 0 of the one-hot never multiplies an Inf, then a Gather at the "
        "queries' codes; the m functions' rows are added in order. No scatter with a reduction (TensorRT for "
        "RTX's ONNX parser takes none) and no difference of cumulative sums: each table entry is the plain "
        "float32 sum of the reference's terms, within rounding at any length (4096 keys, 512 codes: 3e-7 of the "
        "largest output measured). Memory per function: the one-hot, 4 * B * Nk * capacity bytes (8 MiB per "
        "(batch, head) row at 4096 keys and YOSO's 512 codes), and the table, 12 * B * capacity * D bytes. "
        "Time: 6 * B * Nk * capacity * D FLOPs per function where the kernel adds Nk rows of D, 3 * capacity "
        "times its work (YOSO's 9-bit codes: 1536 times; its defaults in LSH mode, 12 heads of 64 and 64 hashes, "
        "at 4096 tokens: about 620 GFLOPs a layer): "
        "the custom op stays the choice wherever its library loads. Past 4096 codes (hash_code_len > 12) the "
        "one-hot would outgrow everything else, and the tables are ScatterND-adds ([B * capacity, D], the "
        "kernel's work), which TensorRT for RTX's parser refuses. A key's code outside [0, capacity) adds "
        "nothing, a query's fails the Gather (the kernels refuse both)."
    ),
    "BucketSum": (
        "One MatMul of the rows' one-hot [G, N, num_buckets] (transposed) with the rows and their weights side by "
        "side, beside their +Inf and -Inf flags (NaN counting as both; [G, N, 3 (D + 1)]), so that a 0 of the "
        "one-hot never multiplies an Inf: no scatter with a reduction (TensorRT for RTX's ONNX parser takes "
        "none), and each sum is the plain float32 sum of the reference's terms, within rounding at any length. "
        "Memory: the one-hot, 4 * G * N * num_buckets bytes (num_buckets <= 4096, the spec's bound); time: "
        "6 * G * N * num_buckets * (D + 1) FLOPs, 3 * num_buckets times the kernel's additions. A bucket id "
        "outside [0, num_buckets) adds nothing (the kernel refuses it)."
    ),
    "SortedChunkAttention": (
        "The reference's chunked attention with N dynamic. Instead of a branch on N, N <= chunk_length is "
        "padded to one chunk per round, whose queries attend their own chunk alone (every key once: the plain "
        "attention) and take round 0's output; pad keys score -inf and take no part. The sort is "
        "`stable_argsort` (no TopK: no length limit from a runtime's TopK); unsorting gathers by the inverse "
        "permutation (one ScatterElements of int64 indices).\n\nCost against the kernel: the same scores and "
        "softmax ([B, H, K, chunk, W * chunk] floats for W = chunks_before + 1 + chunks_after, which the "
        "kernel computes a chunk at a time), but q, k, v copied into sorted order ([B, H, R * N, D] each) and "
        "k, v into their windows (W times that), which the kernel reads in place; the product with V three "
        "times as wide (values beside their NaN/+Inf/-Inf flags, so that a key of weight 0 adds nothing "
        "whatever its value); and the radix sort, 128 N per (b, h, round) in int64. N <= chunk_length costs R "
        "rounds of one padded chunk.\n\nNot checked (the kernels' errors): N beyond max_length (the runtime "
        "classes and Triton refuse it first), N > chunk_length not a multiple of it (padded to one instead), "
        "negative buckets."
    ),
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
        "switch-base-128: 128) and E*B*S*(F + 2D) floats of intermediates (the tokens expanded to [E, B*S, D], so "
        "that OpenVINO's CPU MatMul inside the If broadcasts nothing; switch-base-8, 512 tokens: 75 MB), no "
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
        "FLOPs (GPT-OSS-20B: 8 times, Mixtral: 4, Qwen3-30B-A3B: 16) and E*T*(G + 2D) floats of intermediates "
        "(the tokens expanded to [E, T, D] for OpenVINO, as ExpertFFN's; GPT-OSS-20B, 512 tokens: 755 MB), no "
        "weight copied, where per-pair gathering would copy 204 GB. The "
        "kernel groups the pairs by expert and computes only the chosen experts at any length: the custom op "
        "stays the choice for long prefills with many experts. A pick of expert E (none) takes expert 0 and is "
        "dropped by a select, whatever its weight; the picks' weighted outputs are summed by one ReduceSum (the "
        "runtime's order, within float32 rounding of the spec's j = 0, 1, ...). Every gating and activation "
        "lowers, the clamps as comparisons so that NaN stays NaN as in torch.clamp (GPT-OSS's "
        "glu_clamped_offset with quick_gelu among them)."
    ),
    "MaskedAttention": (
        "The reference's formulation: the g = H/N query heads of each key/value head as the rows of one "
        "MatMul against its keys (no key or value repeated per head), every logit scaled, masked keys selected "
        "to -inf, the maximum taken with the sink, exponentials selected to 0 where the mask is 0, and the sum "
        "over keys with the sink's exp(sinks - m) as the denominator.\n\nCost against the kernel: every "
        "[B, H, S, T] logit is computed, written and read three times (scores, exponentials, weights), where the "
        "kernel computes only the keys between each query block's first and last attended key (half of a "
        "causal prefill's) and keeps a block's logits in cache; the product with the values is three times as "
        "wide ([T, 3 Dv]: the finite values and the flags of their Infs and NaNs, so that a key of weight 0 adds "
        "nothing without a branch on the values), where the kernel checks the values once and takes one "
        "product. A query with no key is selected to 0 after the product. So the MoE family's standard-op exports "
        "keep the model's own eager attention (an additive mask, Softmax), which is cheaper and needs no "
        "lowering; this one serves graphs that call the op otherwise."
    ),
}

# The ops without a lowering, each with why: `bucketrt export --ops standard` refuses a model that
# calls one. Every op of the catalogue has a lowering (lowering.LOWERINGS) or an entry here
# (tests/test_op_places.py); `lowering.lowers` refuses an op listed here.
NOT_LOWERED: dict[str, str] = {
    "ExpertFFNInt8": "written by `bucketrt quantize` in place of ExpertFFN nodes, which a standard-op export has none of",
    "TopKExpertsInt8": "written by `bucketrt quantize` in place of TopKExperts nodes, which a standard-op export has "
    "none of",
    "LinearInt8": "written by `bucketrt quantize` in place of the linear layers of an export that already calls "
    "bucketrt ops; a standard-op export's are quantized by ONNX Runtime's quantize_dynamic",
}
