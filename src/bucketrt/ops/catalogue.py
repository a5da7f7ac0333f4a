"""The catalogue: every bucketrt op, defined once.

Everything else derives from these `OpSpec`s (their schema: `schema`): the exporter emits nodes
through `bucketrt.ops.dispatch.call`, which takes output shapes and dtypes from them; the PyTorch
references (`reference`) validate their arguments with them; the native kernels include the C++
header generated from them (`codegen`), which declares every op's inputs, outputs and attributes
and drives their generic validation and registration; docs/ops.md is generated from them; the
kernel tests build single-node ONNX models from them (`graph`).

A new op is an `OpSpec` here, added to `OPS`. Standard library only (see `schema`).
"""

from __future__ import annotations

from .schema import FLAG, FLOAT, FLOAT_TYPES, MAX_INT32, Attribute, OpSpec, Tensor

# SignHash's longest code: 30 bits keeps 2^L and every code positive in int32.
MAX_HASH_CODE_LEN = 30
# Attributes that size an output are bounded by what the models need, so that no attribute makes an
# output out of proportion to the inputs (a 9-token BucketSum once asked for 86 GB with num_buckets
# 2^31 - 1): the output may be at most that many times an input's size, whatever the inputs.
# SignHash's and ArgmaxHash's hash counts: YOSO uses up to 64 hashes, Reformer 1 to 8 rounds, LSG 1.
MAX_NUM_HASH = 1024
# BucketSum's buckets: LSG merges a chunk of min(block_size, sparse_block_size) rows (128 by default)
# into at most that many buckets.
MAX_NUM_BUCKETS = 4096
# SortedChunkAttention's neighbours on each side. A window of 1 + before + after chunks costs that
# many chunks' work per query; beyond the chunks that exist, the reference counts a key once per
# appearance (Reformer's own configs use 0 to 2). 64 keeps a query's work within 129 chunks.
MAX_NEIGHBOUR_CHUNKS = 64

# What a projection y = x · p (SignHash's gaussian transform, ArgmaxHash) is where its inputs are not
# finite: decided by the inputs, not by the sum, so that no backend's summation order (SIMD lanes,
# CUDA threads, a standard-op MatMul) can make a different finite value or Inf of it. The sums of
# finite products follow the spec's order, which then decides only where they overflow.
NONFINITE_PROJECTION_RULE = (
    "Non-finite inputs: a vector row or a projection column that holds a NaN or an Inf makes every y it "
    "enters NaN, whatever the other values (an Inf times 0, or Infs of both signs, would give NaN in one "
    "summation order and an Inf in another; this rule leaves no order to decide)"
)

LSH_CUMULATION = OpSpec(
    name="LSHCumulation",
    summary="YOSO's LSH attention: each query sums the values of the keys that share its bucket, "
    "averaged over the hash functions.",
    semantics="out[b,q,:] = query_mask[b,q] * (1/m) * sum_h sum_k key_mask[b,k] * "
    "[query_hash[b,q,h] == key_hash[b,k,h]] * value[b,k,:]. The masks select rather than multiply: a "
    "masked key takes no part whatever its value (a NaN or Inf there changes nothing), and a masked query's "
    "output is 0; the values of the keys that take part sum as IEEE (NaN and Inf propagate).",
    inputs=(
        Tensor("query_mask", "int32", ("B", "Nq"), "Non-zero where the query takes part."),
        Tensor(
            "query_hash",
            "int32",
            ("B", "Nq", "m"),
            "Bucket of each query under each of the m hash functions, in [0, hashtable_capacity).",
        ),
        Tensor("key_mask", "int32", ("B", "Nk"), "Non-zero where the key takes part."),
        Tensor("key_hash", "int32", ("B", "Nk", "m"), "Bucket of each key, in [0, hashtable_capacity)."),
        Tensor("value", FLOAT, ("B", "Nk", "D"), "Value vector of each key."),
    ),
    outputs=(Tensor("cumulation", FLOAT, ("B", "Nq", "D"), "Per-query sum, zero for masked queries."),),
    attributes=(
        Attribute(
            "hashtable_capacity",
            "int",
            "Number of buckets, 2^hash_code_len; every code of an unmasked row must lie below it.",
            minimum=1,
            maximum=2**MAX_HASH_CODE_LEN,
            power_of_two=True,
        ),
        Attribute(
            "deterministic",
            "int",
            "1: bitwise-identical results from run to run (the CUDA kernel then "
            "sums each bucket's values in key order, not with atomics, at some cost in speed); 0: the "
            "backend's fastest way. The CPU kernel is deterministic either way.",
            default=0,
            allowed=FLAG,
        ),
    ),
    float_types=FLOAT_TYPES,
)

SIGN_HASH = OpSpec(
    name="SignHash",
    summary="YOSO's hashing: random projections of each vector, one code bit per projection sign, "
    "num_hash codes of hash_code_len bits.",
    semantics=(
        "Row r of the batch uses projection[r mod G]. "
        "transform='hadamard' (YOSO's fast_hash; D a power of two, P = max(1, ceil(num_hash / (D // L))) parts): "
        "for part p, y = H·(d3 ⊙ H·(d2 ⊙ H·(d1 ⊙ x))) with H the unnormalised Sylvester Hadamard matrix and "
        "d_r = projection[g, r*P + p, :] (±1); hash j of the part, index p*(D//L)+j < num_hash, has bit i = [y[j*L+i] > 0]. "
        "transform='gaussian' (use_fast_hash=False): y = x · projection[g] of width num_hash*L, each product rounded "
        "to float32 and summed over d in ascending order (the order decides only where a sum of finite products "
        "overflows); hash h has bit i = [y[h*L+i] > 0], so a NaN y has bit 0 and +Inf bit 1. "
        + NONFINITE_PROJECTION_RULE
        + ": its bit is 0. The hadamard transform's butterflies are IEEE operations in the order above (NaN and "
        "Inf propagate through them). "
        "code = sum_i bit_i * 2^i; rows with mask 0 get code 0."
    ),
    inputs=(
        Tensor("mask", "int32", ("B", "N"), "Non-zero where the vector is hashed; masked rows are coded 0."),
        Tensor("vector", FLOAT, ("B", "N", "D"), "Vectors to hash."),
        Tensor(
            "projection",
            FLOAT,
            ("G", "R", "C"),
            "Random projection sampled at export: hadamard [G, 3*P, D] of ±1 diagonals (round r, part p "
            "at row r*P+p); gaussian [G, D, num_hash*hash_code_len]. G must divide B.",
        ),
    ),
    outputs=(Tensor("hash", "int32", ("B", "N", "num_hash"), "Codes in [0, 2^hash_code_len)."),),
    attributes=(
        Attribute(
            "num_hash",
            "int",
            "Number of hash functions m (bounded: it sizes the output; YOSO uses up to 64).",
            minimum=1,
            maximum=MAX_NUM_HASH,
        ),
        Attribute(
            "hash_code_len",
            "int",
            "Bits per code L (hadamard also needs L <= D).",
            minimum=1,
            maximum=MAX_HASH_CODE_LEN,
        ),
        Attribute("transform", "string", "Projection kind.", default="hadamard", choices=("hadamard", "gaussian")),
    ),
    float_types=FLOAT_TYPES,
)

# Activations an expert FFN may apply between its two matmuls: the names transformers' ACT2FN
# gives the parameter-free ones (PReLU and xIELU carry learned parameters and are not ops'
# attributes), each with the function it computes (synonyms share one). This is their one
# definition: reference.ACTIVATION_FUNCTIONS gives each function's formula, and the generated C++
# header an enum of the functions and the name table, which the CPU and CUDA kernels switch over.
EXPERT_ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_10": "gelu_10",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_accurate": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "silu": "silu",
    "swish": "silu",
    "relu2": "relu2",
    "relu6": "relu6",
    "leaky_relu": "leaky_relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "hardswish": "hardswish",
    "mish": "mish",
    "laplace": "laplace",
    "sqrtsoftplus": "sqrt_softplus",
    "linear": "linear",
}
# The distinct functions, in first-use order (the C++ enum's order).
ACTIVATION_FUNCTIONS = tuple(dict.fromkeys(EXPERT_ACTIVATIONS.values()))

TOP1_DISPATCH = OpSpec(
    name="Top1Dispatch",
    summary="Switch Transformer top-1 routing: each token picks its most probable expert; within each "
    "sequence, tokens beyond an expert's capacity are dropped; kept tokens are listed expert by expert.",
    semantics=(
        "expert0[b,s] = argmax_e probs[b,s,e] (the first maximum; a NaN counts as the maximum); "
        "gate[b,s] = probs[b,s,expert0[b,s]] (not renormalised); "
        "priority[b,s] = #{s' <= s : expert0[b,s'] == expert0[b,s]} (1-based, counted per sequence b in "
        "sequence order, dropped tokens included); kept = priority <= expert_capacity; "
        "expert[b,s] = kept ? expert0[b,s] : -1; counts[e] = #{kept tokens with expert e}; "
        "order lists the flat indices b*S+s of kept tokens sorted by (expert, b*S+s), then -1 to fill B*S entries."
    ),
    inputs=(
        Tensor(
            "probs", FLOAT, ("B", "S", "E"), "Router probabilities (softmax of the router logits over E).", routing=True
        ),
    ),
    outputs=(
        Tensor("expert", "int32", ("B", "S"), "Expert of each token, -1 where dropped for capacity."),
        Tensor("gate", FLOAT, ("B", "S"), "Probability of the chosen expert (kept or not)."),
        Tensor("priority", "int32", ("B", "S"), "1-based rank of the token in its expert's queue within its sequence."),
        Tensor("counts", "int32", ("E",), "Kept tokens per expert, over the whole batch."),
        Tensor(
            "order",
            "int32",
            ("B", "S"),
            "Flat token indices b*S+s grouped by expert (counts[0] of expert 0, "
            "then expert 1, ...), ascending within an expert; -1 after the sum of counts.",
        ),
    ),
    attributes=(
        Attribute(
            "expert_capacity", "int", "Most tokens an expert takes from one sequence.", minimum=0, maximum=MAX_INT32
        ),
    ),
    float_types=FLOAT_TYPES,
)

EXPERT_FFN = OpSpec(
    name="ExpertFFN",
    summary="Mixture-of-experts feed-forward: each listed token goes through its expert's two-layer FFN, "
    "scaled by its gate; unlisted (dropped) tokens get zero. Costs in proportion to the tokens listed.",
    semantics=(
        "With start_e = sum_{e'<e} counts[e'], every token t = order[start_e + i], i < counts[e], gets "
        "out[t,:] = gate[t] * (act(hidden[t,:] · wi[e]^T) · wo[e]^T) (flat indices over B*S); every other "
        "token gets 0. Row layouts are nn.Linear's: wi[e] is [F, D], wo[e] is [D, F]. Non-finite values go "
        "through act as in torch: the clamps of relu, relu2, relu6, gelu_10 and hardswish propagate NaN "
        "(torch.clamp(NaN) = NaN, never a bound); Inf goes through as IEEE (relu6(+-Inf) is 6 or 0, "
        "gelu(-Inf) = -Inf * 0 = NaN), and the products sum as IEEE."
    ),
    inputs=(
        Tensor("hidden", FLOAT, ("B", "S", "D"), "Token states entering the experts."),
        Tensor("order", "int32", ("B", "S"), "Flat token indices grouped by expert, as Top1Dispatch writes them."),
        Tensor("counts", "int32", ("E",), "Tokens per expert in `order` (each >= 0, summing to at most B*S)."),
        Tensor("gate", FLOAT, ("B", "S"), "Scale of each token's expert output."),
        Tensor(
            "wi", FLOAT, ("E", "F", "D"), "First projection of each expert (stacked nn.Linear weights).", weights=True
        ),
        Tensor(
            "wo", FLOAT, ("E", "D", "F"), "Second projection of each expert (stacked nn.Linear weights).", weights=True
        ),
    ),
    outputs=(Tensor("out", FLOAT, ("B", "S", "D"), "Scaled expert outputs, zero for tokens not listed."),),
    attributes=(
        Attribute(
            "activation",
            "string",
            "Activation between the projections, by its transformers (ACT2FN) name.",
            default="relu",
            choices=tuple(EXPERT_ACTIVATIONS),
        ),
    ),
    float_types=FLOAT_TYPES,
)

# Most input elements an int8 ExpertFFN row may have: every sum of (q - zp) * w, |q - zp| <= 255 and
# |w| <= 128, stays within int32 (255 * 128 * 65536 < 2^31), whatever the weights.
MAX_INT8_SUM_LENGTH = 65536

EXPERT_FFN_INT8 = OpSpec(
    name="ExpertFFNInt8",
    summary="ExpertFFN with int8 expert weights (per expert and output channel scales) and activations "
    "quantized per token row at run time: uint8 x int8 products summed in int32, as VNNI's dot product "
    "computes them, and float32 results. `bucketrt.quantization.expert_ffn` rewrites ExpertFFN into it.",
    semantics=(
        "Routing as ExpertFFN: with start_e = sum_{e'<e} counts[e'], every token t = order[start_e + i], "
        "i < counts[e], gets out[t,:] = gate[t] * L(act(L(hidden[t,:], wi[e], wi_scale[e])), wo[e], wo_scale[e]); "
        "every other token gets 0. L(x, w, s_w) is one quantized linear layer over a row x of K floats "
        "(w is [N, K], nn.Linear's layout): lo = min(0, min_k x_k), hi = max(0, max_k x_k), "
        "s = hi/255 - lo/255 (1 where that is 0), zp = clamp(round(-lo/s), 0, 255), "
        "q_k = clamp(round(x_k/s) + zp, 0, 255) (float32 division, round half to even: asymmetric uint8, "
        "so that relu's non-negative outputs use all 256 levels); acc_n = sum_k (q_k - zp) * w[n,k], exact in "
        "int32 (K <= 65536); L_n = float32(acc_n) * (s * s_w[n]) (the product of the scales rounded first). "
        "Every step is exact or one IEEE float32 operation, so every backend gets the same bits; only act's "
        "functions differ in the last ulps. A row x with a NaN or Inf is not quantized: its s is NaN (q = 0), "
        "so L is NaN for the whole row, and act of NaN is NaN (the clamps propagate it, as torch.clamp); "
        "scales and the gate multiply as IEEE."
    ),
    inputs=(
        Tensor("hidden", FLOAT, ("B", "S", "D"), "Token states entering the experts."),
        Tensor("order", "int32", ("B", "S"), "Flat token indices grouped by expert, as Top1Dispatch writes them."),
        Tensor("counts", "int32", ("E",), "Tokens per expert in `order` (each >= 0, summing to at most B*S)."),
        Tensor("gate", FLOAT, ("B", "S"), "Scale of each token's expert output."),
        Tensor("wi", "int8", ("E", "F", "D"), "First projection of each expert, int8 (D <= 65536).", weights=True),
        Tensor("wi_scale", FLOAT, ("E", "F"), "Scale of each row (output channel) of wi."),
        Tensor("wo", "int8", ("E", "D", "F"), "Second projection of each expert, int8 (F <= 65536).", weights=True),
        Tensor("wo_scale", FLOAT, ("E", "D"), "Scale of each row (output channel) of wo."),
    ),
    outputs=(Tensor("out", FLOAT, ("B", "S", "D"), "Scaled expert outputs, zero for tokens not listed."),),
    attributes=EXPERT_FFN.attributes,
)

# How a TopKExperts expert turns its first projection h into the second's input: the gating
# functions transformers' mixture-of-experts families use (their experts' `_apply_gate`), by name.
# `gate` and `up` are the two halves of h ([gate; up], the concatenated layout); L is `limit`.
EXPERT_GATINGS = {
    "none": "act(h): experts without a gate (h is `up` alone, G = F)",
    "glu": "act(gate) * up (Mixtral, Qwen-MoE, OLMoE, DeepSeek-V3, ...)",
    "glu_clamped": "act(min(gate, L)) * clamp(up, -L, L) (DeepSeek-V4)",
    "glu_clamped_after": "min(act(gate), L) * clamp(up, -L, L) (Step-3.7, Ling)",
    "glu_clamped_offset": "act(min(gate, L)) * (clamp(up, -L, L) + 1) (GPT-OSS, MiniMax-M3: act is quick_gelu, "
    "x * sigmoid(1.702 x))",
}
# The gatings that clamp by `limit`; the others take limit 0.
LIMITED_GATINGS = ("glu_clamped", "glu_clamped_after", "glu_clamped_offset")

TOPK_EXPERTS = OpSpec(
    name="TopKExperts",
    summary="The experts of a top-k mixture-of-experts layer: each token goes through the k experts its router "
    "chose, each expert's output scaled by the token's weight for it, and the k outputs summed. Costs in "
    "proportion to tokens x k, whatever the number of experts.",
    semantics=(
        "For token t and pick j < K with e = expert_index[t,j] < E: h = gate_up[e] · hidden[t,:] + gate_up_bias[e] "
        "(G values; G = 2F with gate = h[0:F] and up = h[F:2F], or G = F with gating none), a = gating(h) (F values, "
        "the gating functions below, with act the activation attribute), y_j = down[e] · a + down_bias[e]. "
        "out[t,:] = sum over the picks j = 0, 1, ..., K-1 in that order of expert_weight[t,j] * y_j, in float32. "
        "expert_index E means no expert: that pick adds nothing, whatever its weight (a token without an expert "
        "gets 0); an index outside [0, E] is an error. Layouts are nn.Linear's: gate_up[e] is [G, D], down[e] is "
        "[D, F]. Gatings: "
        + "; ".join(f"{name}: {text}" for name, text in EXPERT_GATINGS.items())
        + ". Non-finite values go through act and the clamps as in torch (torch.clamp propagates NaN), and "
        "products and sums as IEEE."
    ),
    inputs=(
        Tensor("hidden", FLOAT, ("T", "D"), "Token states entering the experts (tokens flattened)."),
        Tensor(
            "expert_index",
            "int32",
            ("T", "K"),
            "The experts each token's router chose, in [0, E]; E: none.",
            routing=True,
        ),
        Tensor("expert_weight", FLOAT, ("T", "K"), "The routing weight of each of the token's picks.", routing=True),
        Tensor(
            "gate_up",
            FLOAT,
            ("E", "G", "D"),
            "First projection of each expert: [gate; up] rows, or up alone.",
            weights=True,
        ),
        Tensor("gate_up_bias", FLOAT, ("E", "G"), "Its bias (zeros for experts without one)."),
        Tensor("down", FLOAT, ("E", "D", "F"), "Second projection of each expert.", weights=True),
        Tensor("down_bias", FLOAT, ("E", "D"), "Its bias (zeros for experts without one)."),
    ),
    outputs=(Tensor("out", FLOAT, ("T", "D"), "The weighted sum of each token's experts' outputs."),),
    attributes=(
        Attribute(
            "activation",
            "string",
            "Activation of the gating, by its transformers (ACT2FN) name.",
            default="silu",
            choices=tuple(EXPERT_ACTIVATIONS),
        ),
        Attribute(
            "gating",
            "string",
            "How h becomes the second projection's input (see the semantics).",
            default="glu",
            choices=tuple(EXPERT_GATINGS),
        ),
        Attribute(
            "limit",
            "float",
            "L, the clamp of the limited gatings (> 0 there); 0 for the others. At most float16's largest "
            "value: a clamp beyond it changes nothing in float16, and the bound is exact in an ONNX (float32) "
            "attribute.",
            default=0.0,
            minimum=0.0,
            maximum=65504.0,
        ),
    ),
    float_types=FLOAT_TYPES,
)

TOPK_EXPERTS_INT8 = OpSpec(
    name="TopKExpertsInt8",
    summary="TopKExperts with int8 expert weights (per expert and output channel scales) and activations "
    "quantized per row at run time, as ExpertFFNInt8 computes its layers: uint8 x int8 products summed in "
    "int32, float32 results. `bucketrt.quantization.expert_ffn` rewrites TopKExperts into it.",
    semantics=(
        "Routing, gatings, biases and the sum over picks as TopKExperts: for token t and pick j < K with "
        "e = expert_index[t,j] < E, h = L(hidden[t,:], gate_up[e], gate_up_scale[e]) + gate_up_bias[e] (G values), "
        "a = gating(h) (F values), y_j = L(a, down[e], down_scale[e]) + down_bias[e]; out[t,:] = sum over the picks "
        "j = 0, 1, ..., K-1 in that order of expert_weight[t,j] * y_j, in float32; expert_index E means no expert "
        "(the pick adds nothing), an index outside [0, E] is an error. L(x, w, s_w) is ExpertFFNInt8's quantized "
        "linear layer over a row x of K floats: x quantized as asymmetric uint8 per row (s = hi/255 - lo/255 over "
        "lo = min(0, min x), hi = max(0, max x), zp = clamp(round(-lo/s), 0, 255), q = clamp(round(x/s) + zp, 0, 255)), "
        "acc_n = sum_k (q_k - zp) * w[n,k] exact in int32 (D, F <= 65536), L_n = float32(acc_n) * (s * s_w[n]); "
        "each bias is then added as one float32 addition. A token's hidden row is quantized once whatever its "
        "picks; a row with a NaN or Inf has s NaN, so its layer's output is NaN; the gatings' clamps propagate "
        "NaN (torch.clamp); scales, biases and weights multiply and add as IEEE."
    ),
    inputs=(
        *TOPK_EXPERTS.inputs[:3],  # hidden, expert_index, expert_weight: TopKExperts' own
        Tensor(
            "gate_up",
            "int8",
            ("E", "G", "D"),
            "First projection of each expert, int8: [gate; up] rows, or up alone (D <= 65536).",
            weights=True,
        ),
        Tensor("gate_up_scale", FLOAT, ("E", "G"), "Scale of each row (output channel) of gate_up."),
        Tensor("gate_up_bias", FLOAT, ("E", "G"), "Its bias, float (zeros for experts without one)."),
        Tensor("down", "int8", ("E", "D", "F"), "Second projection of each expert, int8 (F <= 65536).", weights=True),
        Tensor("down_scale", FLOAT, ("E", "D"), "Scale of each row (output channel) of down."),
        Tensor("down_bias", FLOAT, ("E", "D"), "Its bias, float (zeros for experts without one)."),
    ),
    outputs=TOPK_EXPERTS.outputs,
    attributes=TOPK_EXPERTS.attributes,
)

LINEAR_INT8 = OpSpec(
    name="LinearInt8",
    summary="A linear layer (nn.Linear) with int8 weights (one scale per output channel) and its input "
    "quantized per row at run time, as ExpertFFNInt8 computes its layers: uint8 x int8 products summed in "
    "int32, float32 results. `bucketrt quantize` writes it in place of the linear layers of a model that "
    "decodes with a key/value cache, where each step reads every weight once and the op streams them at "
    "the memory's speed.",
    semantics=(
        "out[b,s,:] = L(input[b,s,:], weight, weight_scale) + bias, with L(x, w, s_w) ExpertFFNInt8's quantized "
        "linear layer over a row x of K floats: x quantized as asymmetric uint8 per row (s = hi/255 - lo/255 over "
        "lo = min(0, min x), hi = max(0, max x), 1 where that is 0; zp = clamp(round(-lo/s), 0, 255), "
        "q = clamp(round(x/s) + zp, 0, 255)), acc_n = sum_k (q_k - zp) * w[n,k] exact in int32 (K <= 65536), "
        "L_n = float32(acc_n) * (s * s_w[n]); the bias is then added as one float32 addition. Every step is "
        "exact or one IEEE float32 operation, so every backend gets the same bits. A row with a NaN or Inf has "
        "s NaN, so its outputs are NaN; scales and bias multiply and add as IEEE."
    ),
    inputs=(
        Tensor("input", FLOAT, ("B", "S", "K"), "Rows entering the layer."),
        Tensor(
            "weight", "int8", ("N", "K"), "The weights, int8, nn.Linear's [out, in] layout (K <= 65536).", weights=True
        ),
        Tensor("weight_scale", FLOAT, ("N",), "Scale of each row (output channel) of weight."),
        Tensor("bias", FLOAT, ("N",), "The bias, float (zeros for a layer without one)."),
    ),
    outputs=(Tensor("out", FLOAT, ("B", "S", "N"), "The layer's output rows."),),
)

ARGMAX_HASH = OpSpec(
    name="ArgmaxHash",
    summary="Angular LSH (Reformer's hashing): random projections of each vector, bucket = argmax over "
    "[xR, -xR], with optional factorised buckets and a padding bucket for masked rows.",
    semantics=(
        "S = sum_f bucket_sizes[f] / 2 columns per round; C must be num_hash * S. "
        "y[b,h,n,:] = vector[b,h,n,:] · projection[h], of width C, each product rounded to float32 and summed over "
        "d in ascending order (the order decides only where a sum of finite products overflows), seen as "
        "[num_hash, S] (round-major). " + NONFINITE_PROJECTION_RULE + ": a vector with a NaN or an Inf goes to "
        "bucket 0 (each factor's first candidate), a projection column with one to that column in every row "
        "(the first such column of the factor, in the order of z). "
        "For round r and factor f (size n_f, columns o_f .. o_f + n_f/2 of the round, o_f = sum_{g<f} n_g/2), "
        "z = concat(y_rf, -y_rf) and i_f = argmax(z), the first maximum on ties (a NaN counts as the maximum); "
        "bucket[b,h,r,n] = sum_f i_f * prod_{g<f} n_g, in [0, prod_f n_f). "
        "Rows with mask 0 get bucket prod_f n_f (one padding bucket after the others)."
    ),
    inputs=(
        Tensor("mask", "int32", ("B", "N"), "Non-zero where the vector is hashed; zero rows go to the padding bucket."),
        Tensor("vector", FLOAT, ("B", "H", "N", "D"), "Vectors to hash, per head H."),
        Tensor(
            "projection",
            FLOAT,
            ("H", "D", "C"),
            "Random rotations sampled at export, one per head: columns round-major, [num_hash, S].",
        ),
        Tensor(
            "bucket_sizes",
            "int32",
            ("F",),
            "Bucket count of each factor, each even and >= 2; their product (plus one) must fit int32. "
            "One entry for plain (unfactorised) hashing.",
        ),
    ),
    outputs=(Tensor("buckets", "int32", ("B", "H", "num_hash", "N"), "Bucket of each vector in each round."),),
    attributes=(
        Attribute(
            "num_hash",
            "int",
            "Number of hashing rounds (bounded: it sizes the output; Reformer uses 1 to 8).",
            minimum=1,
            maximum=MAX_NUM_HASH,
        ),
    ),
    float_types=FLOAT_TYPES,
)

BUCKET_SUM = OpSpec(
    name="BucketSum",
    summary="Merges the rows of each group by bucket: sums their vectors and their weights "
    "(a scatter-add; divided by the summed weights it is a scatter-mean).",
    semantics="sum[g,c,:] = sum_n [bucket[g,n] == c] * vector[g,n,:]; "
    "weight_sum[g,c] = sum_n [bucket[g,n] == c] * weight[g,n]; rows are added in order n = 0, 1, ...; "
    "every bucket id must lie in [0, num_buckets). The sums are IEEE: NaN and Inf propagate, and "
    "Inf + -Inf = NaN.",
    inputs=(
        Tensor("bucket", "int32", ("G", "N"), "Bucket of each row, in [0, num_buckets)."),
        Tensor("weight", FLOAT, ("G", "N"), "Weight of each row (LSG: how many tokens it already holds)."),
        Tensor("vector", FLOAT, ("G", "N", "D"), "Rows to merge (LSG: keys and values side by side)."),
    ),
    outputs=(
        Tensor("sum", FLOAT, ("G", "num_buckets", "D"), "Per-bucket sum of the rows; zero for an empty bucket."),
        Tensor("weight_sum", FLOAT, ("G", "num_buckets"), "Per-bucket sum of the weights."),
    ),
    attributes=(
        Attribute(
            "num_buckets",
            "int",
            "Number of buckets C (bounded: it sizes the outputs; LSG merges a chunk of 128 rows by default).",
            minimum=1,
            maximum=MAX_NUM_BUCKETS,
        ),
    ),
    float_types=FLOAT_TYPES,
)

SORTED_CHUNK_ATTENTION = OpSpec(
    name="SortedChunkAttention",
    summary="Reformer's attention: per hashing round, sort positions by bucket (stable counting sort), "
    "attend within chunks of the sorted order and their neighbours, unsort, and combine the rounds by "
    "their log-sum-exp. With one round of constant buckets it is Reformer's local attention.",
    semantics=(
        "score(q,k) = query[q]·key[k]; it is -1e9 where mask[k] == 0 or (causal and k > q); then -1e5 where "
        "mask_self and k == q (the self mask overrides the others). "
        "If N <= chunk_length: out[q] = softmax_k(score(q,k)) · value[k] over all k (plain attention, buckets "
        "ignored). Otherwise N must be a multiple of chunk_length: for each (b,h) the R*N pairs (r, n) are "
        "ordered by (r, buckets[b,h,r,n], n); slot i holds position pos[i]; slots form K = R*N/chunk_length "
        "chunks; a query in chunk c attends the keys of chunks (c + j) mod K for j = -chunks_before .. "
        "chunks_after (wrapping across rounds, a key counted once per appearance), giving o_r[n] and "
        "l_r[n] = logsumexp of its scores. out[n] = sum_r exp(l_r[n] - logsumexp_r l_r[n]) * o_r[n]. "
        "N > max_length (when max_length > 0) is an error. "
        "Weights: a key's softmax weight exp(score - l) and a round's weight exp(l_r - logsumexp_r l_r) are "
        "0 below 2^-126 (the smallest normal float32, where the kernels' exp saturates: which keys are out is "
        "a property of the scores, not of an exp's underflow), and a key or round of weight 0 contributes "
        "nothing whatever its value: a masked, causally hidden, self-masked (with other keys) or underflowed "
        "key's Inf or NaN never becomes 0 * Inf = NaN; the others sum as IEEE. A query whose every key is "
        "masked gives each the weight exp(0) = 1 (score -1e9 == l in float32, as Reformer): they all take "
        "part, the non-finite ones included."
    ),
    inputs=(
        Tensor("query", FLOAT, ("B", "H", "N", "D"), "Queries."),
        Tensor("key", FLOAT, ("B", "H", "N", "D"), "Keys (Reformer's LSH: the normalised shared query-keys)."),
        Tensor("value", FLOAT, ("B", "H", "N", "D"), "Values."),
        Tensor("mask", "int32", ("B", "N"), "Non-zero where the key may be attended (padding mask)."),
        Tensor("buckets", "int32", ("B", "H", "R", "N"), "Bucket of each position in each of R rounds, >= 0."),
    ),
    outputs=(Tensor("out", FLOAT, ("B", "H", "N", "D"), "Attention output, rounds combined."),),
    attributes=(
        Attribute("chunk_length", "int", "Slots per chunk of the sorted order.", minimum=1, maximum=MAX_INT32),
        Attribute(
            "chunks_before",
            "int",
            "Preceding chunks each chunk attends (bounded, so that a query's work "
            "stays within 129 chunks; a window wider than the K chunks wraps and counts a key once per "
            "appearance, as the semantics say).",
            default=1,
            minimum=0,
            maximum=MAX_NEIGHBOUR_CHUNKS,
        ),
        Attribute(
            "chunks_after",
            "int",
            "Following chunks each chunk attends.",
            default=0,
            minimum=0,
            maximum=MAX_NEIGHBOUR_CHUNKS,
        ),
        Attribute("causal", "int", "1: a query does not attend later positions.", default=0, allowed=FLAG),
        Attribute(
            "mask_self",
            "int",
            "1: a query attends itself only at score -1e5 (shared query-key).",
            default=0,
            allowed=FLAG,
        ),
        Attribute(
            "max_length",
            "int",
            "Longest N accepted (the model's position limit); 0: no limit.",
            default=0,
            minimum=0,
            maximum=MAX_INT32,
        ),
    ),
    float_types=FLOAT_TYPES,
)

MASKED_ATTENTION = OpSpec(
    name="MaskedAttention",
    summary="Scaled dot-product attention under a key mask, with grouped key/value heads and an optional sink "
    "logit per head: a decoder's attention (causal, padded, sliding-window, with a KV cache) in one node. Costs "
    "in proportion to the keys each query attends: the kernels skip the masked ones (a causal prefill computes "
    "half the scores).",
    semantics=(
        "Query head h reads key/value head n = h / (H/N) (H a multiple of N). For query s of row b, the keys k "
        "with mask[b,s,k] != 0 take part, with logits l_k = scale * (query[b,h,s,:] · key[b,n,k,:]); the sink's "
        "logit is sinks[h] (-inf: no sink). m = the largest of the l_k and the sink; w_k = exp(l_k - m); "
        "out[b,s,h,:] = sum_k (w_k / (sum_k w_k + exp(sinks[h] - m))) * value[b,n,k,:] over the keys that take "
        "part, in float32. A query with no key taking part gets 0. A key that does not take part, or whose "
        "weight is exactly 0, contributes nothing, whatever its key and value hold (no 0 * Inf); the others add "
        "as IEEE does (a NaN logit makes its query's output NaN)."
    ),
    inputs=(
        Tensor("query", FLOAT, ("B", "H", "S", "D"), "Queries, after any position encoding."),
        Tensor("key", FLOAT, ("B", "N", "T", "D"), "Keys of the N key/value heads (the cache's and the new ones)."),
        Tensor("value", FLOAT, ("B", "N", "T", "Dv"), "Values."),
        Tensor(
            "mask",
            "int32",
            ("B", "S", "T"),
            "Non-zero where the query attends the key (causality, padding, a sliding window).",
        ),
        Tensor("sinks", FLOAT, ("H",), "Each head's sink logit, in the softmax's denominator only; -inf: none."),
    ),
    outputs=(Tensor("out", FLOAT, ("B", "S", "H", "Dv"), "Attention output, heads side by side per query."),),
    attributes=(
        Attribute(
            "scale",
            "float",
            "The logits' scale (transformers' `scaling`, usually head_dim^-0.5).",
            minimum=0.0,
            maximum=65504.0,
        ),
    ),
    float_types=FLOAT_TYPES,
)

OPS: tuple[OpSpec, ...] = (
    LSH_CUMULATION,
    SIGN_HASH,
    ARGMAX_HASH,
    SORTED_CHUNK_ATTENTION,
    BUCKET_SUM,
    TOP1_DISPATCH,
    EXPERT_FFN,
    EXPERT_FFN_INT8,
    TOPK_EXPERTS,
    TOPK_EXPERTS_INT8,
    LINEAR_INT8,
    MASKED_ATTENTION,
)
BY_NAME = {op.name: op for op in OPS}


def hadamard_parts(dim: int, num_hash: int, hash_code_len: int) -> int:
    """Number of independent Hadamard parts P needed for `num_hash` codes (YOSO's num_part)."""
    per_part = dim // hash_code_len
    if per_part < 1:
        raise ValueError(f"SignHash: hash_code_len={hash_code_len} exceeds the vector dim {dim}")
    return max(1, -(-num_hash // per_part))
