"""The single definition of every bucketrt op.

Everything else is derived from the `OPS` catalogue below:

* the exporter emits nodes through `bucketrt.ops.call`, which checks inputs against the spec and
  takes output shapes and dtypes from it;
* the PyTorch references (`bucketrt.ops.reference`) validate their arguments with it;
* the native kernels include a C++ header generated from it (`python spec.py header OUT`), which
  declares every op's inputs, outputs and attributes and drives their generic validation;
* docs/ops.md is generated from it (`python spec.py markdown OUT`), and a test keeps it current;
* the kernel tests build single-node ONNX models from it.

This module must import nothing outside the standard library: CMake runs it as a script while the
native library is built, in an environment that has no torch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN = "bucketrt"
VERSION = 1

# Backend routing, not op semantics: TensorRT's ONNX parser maps a node it has no importer for to
# the plugin registered under the node's op type, with the version and namespace these two string
# attributes name (its defaults, "1" and "", would miss our plugins). Every emitter writes them
# (`OpSpec.node_attributes`); every validator accepts and ignores exactly these two.
PLUGIN_VERSION_ATTRIBUTE = "plugin_version"
PLUGIN_NAMESPACE_ATTRIBUTE = "plugin_namespace"
PLUGIN_NAMESPACE = DOMAIN
ROUTING_ATTRIBUTES = (PLUGIN_VERSION_ATTRIBUTE, PLUGIN_NAMESPACE_ATTRIBUTE)

# The dtype of every floating-point tensor: the op's type parameter T. All of an op's "float"
# tensors share T, which is one of the op's `float_types` (float32 first, the default). Kernels
# compute in float32 whatever T is: a float16 input is widened exactly, float32 sums are taken,
# and a float16 output is rounded once, to nearest even, at the end.
FLOAT = "float"
FLOAT_TYPES = ("float32", "float16")

# Bounds of the integer attributes. Every size a kernel derives from an attribute (products with
# the input dims, windows, table sizes) must fit int64 with margin, and no attribute may make an op
# do work out of proportion to its inputs: so every int attribute has a maximum.
#
# A size or count that indexes int32 tensors (codes, buckets, flat token indices, positions).
MAX_INT32 = 2**31 - 1
# SignHash's longest code: 30 bits keeps 2^L and every code positive in int32.
MAX_HASH_CODE_LEN = 30
# SortedChunkAttention's neighbours on each side. A window of 1 + before + after chunks costs that
# many chunks' work per query; beyond the chunks that exist, the reference counts a key once per
# appearance (Reformer's own configs use 0 to 2). 64 keeps a query's work within 129 chunks.
MAX_NEIGHBOUR_CHUNKS = 64
# 0/1 flags.
FLAG = (0, 1)


@dataclass(frozen=True)
class Tensor:
    """An input or output. `dims` are symbols; equal symbols must have equal sizes.

    A symbol that names an integer attribute takes that attribute's value; `expr` dims such as
    "m*L" are only checked by the op's own code (the generic checker skips them).
    """

    name: str
    dtype: str  # "int32" | "int8" | "float": the op's float type T (one of OpSpec.float_types)
    dims: tuple[str, ...]
    doc: str

    def concrete_dtype(self, float_type: str) -> str:
        """The element type of this tensor when the op's float type T is `float_type`."""
        return float_type if self.dtype == FLOAT else self.dtype


@dataclass(frozen=True)
class Attribute:
    """An attribute of an op. An int attribute has a minimum and a maximum, or allowed values
    (`allowed`, e.g. FLAG); a string attribute has its choices. Every backend enforces exactly
    these (the C++ checks are generated from them: `cpp_header`)."""

    name: str
    type: str  # "int" | "string"
    doc: str
    default: int | str | None = None  # None: required
    choices: tuple[str, ...] = ()  # string: the allowed values
    minimum: int | None = None
    maximum: int | None = None
    allowed: tuple[int, ...] = ()  # int: the allowed values (then no minimum/maximum)
    power_of_two: bool = False

    def __post_init__(self) -> None:
        if self.type == "int":
            bounded = self.allowed or (self.minimum is not None and self.maximum is not None)
            assert bounded, f"int attribute '{self.name}' needs a minimum and a maximum, or allowed values"
            assert not (self.allowed and (self.minimum is not None or self.maximum is not None)), self.name
            assert not self.choices, self.name
        else:
            assert self.type == "string" and self.choices, f"string attribute '{self.name}' needs its choices"
            assert self.minimum is None and self.maximum is None and not self.allowed, self.name
        if self.default is not None:
            assert self.check(self.default) is None, (self.name, self.default)

    def check(self, value) -> str | None:
        """What is wrong with `value` (the words after "attribute 'name' "), or None. The C++
        ResolveAttributes (plugins/cpu/validate.cc) words every case alike."""
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an int, got {value!r}"
            if self.allowed and value not in self.allowed:
                return f"must be one of {list(self.allowed)}, got {value}"
            if self.minimum is not None and value < self.minimum:
                return f"must be >= {self.minimum}, got {value}"
            if self.maximum is not None and value > self.maximum:
                return f"must be <= {self.maximum}, got {value}"
            if self.power_of_two and (value < 1 or value & (value - 1)):
                return f"must be a power of two, got {value}"
            return None
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
        if value not in self.choices:
            return f"must be one of {list(self.choices)}, got {value!r}"
        return None

    def bounds_text(self) -> str:
        """The allowed values as docs/ops.md states them."""
        if self.choices:
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        if self.allowed:
            return "one of " + ", ".join(f"`{v}`" for v in self.allowed)
        text = f"{self.minimum} .. {self.maximum}"
        return text + (", a power of two" if self.power_of_two else "")


@dataclass(frozen=True)
class OpSpec:
    name: str
    summary: str
    semantics: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    attributes: tuple[Attribute, ...] = field(default=())
    domain: str = DOMAIN
    version: int = VERSION
    # What T (the dtype of the "float" tensors) may be: float32 alone, or float32 and float16.
    float_types: tuple[str, ...] = ("float32",)

    def input(self, name: str) -> Tensor:
        return next(t for t in self.inputs if t.name == name)

    def attribute(self, name: str) -> Attribute:
        return next(a for a in self.attributes if a.name == name)

    def routing_attributes(self) -> dict[str, str]:
        """The attributes that route a node of this op to its TensorRT plugin (see ROUTING_ATTRIBUTES)."""
        return {PLUGIN_VERSION_ATTRIBUTE: str(self.version), PLUGIN_NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE}

    def node_attributes(self, attrs: dict) -> dict:
        """What an emitter writes on a node: the op's attributes, then the routing attributes."""
        return {**attrs, **self.routing_attributes()}

    # -- validation shared by the PyTorch reference and the exporter --------------------------

    def resolve_attributes(self, attrs: dict) -> dict:
        """Fills defaults and checks every attribute; raises ValueError naming the op.

        The routing attributes (plugin_version, plugin_namespace) are accepted and left out."""
        unknown = set(attrs) - {a.name for a in self.attributes} - set(ROUTING_ATTRIBUTES)
        if unknown:
            raise ValueError(f"{self.name}: unknown attribute(s) {sorted(unknown)}")
        out = {}
        for a in self.attributes:
            value = attrs.get(a.name, a.default)
            if value is None:
                raise ValueError(f"{self.name}: attribute '{a.name}' is required")
            problem = a.check(value)
            if problem is not None:
                raise ValueError(f"{self.name}: attribute '{a.name}' {problem}")
            out[a.name] = value
        return out

    def bind(self, shapes: list[tuple[int, ...]], dtypes: list[str], attrs: dict) -> dict[str, int]:
        """Checks input count, dtypes, ranks and symbolic dims; returns the symbol bindings.

        The same rules are generated into C++ (see `cpp_header`), so both sides reject alike.
        """
        if len(shapes) != len(self.inputs):
            raise ValueError(f"{self.name}: expected {len(self.inputs)} inputs, got {len(shapes)}")
        env: dict[str, int] = {k: v for k, v in attrs.items() if isinstance(v, int)}
        origin: dict[str, str] = {k: f"attribute '{k}'" for k in env}
        float_type: str | None = None  # T, once the first "float" input has fixed it
        float_origin = ""
        for spec, shape, dtype in zip(self.inputs, shapes, dtypes):
            if spec.dtype == FLOAT:
                if float_type is None and dtype not in self.float_types:
                    raise ValueError(f"{self.name}: input '{spec.name}' must be {self.float_types_text()}, got {dtype}")
                if float_type is not None and dtype != float_type:
                    raise ValueError(
                        f"{self.name}: input '{spec.name}' must be {float_type} like input '{float_origin}', got {dtype}"
                    )
                if float_type is None:
                    float_type, float_origin = dtype, spec.name
            elif dtype != spec.dtype:
                raise ValueError(f"{self.name}: input '{spec.name}' must be {spec.dtype}, got {dtype}")
            if len(shape) != len(spec.dims):
                raise ValueError(
                    f"{self.name}: input '{spec.name}' must have rank {len(spec.dims)} "
                    f"[{','.join(spec.dims)}], got shape {list(shape)}"
                )
            for axis, (sym, size) in enumerate(zip(spec.dims, shape)):
                if not sym.isidentifier():
                    continue
                if size < 1:
                    raise ValueError(f"{self.name}: input '{spec.name}' dim {axis} ({sym}) must be >= 1, got {size}")
                if sym in env and env[sym] != size:
                    raise ValueError(
                        f"{self.name}: input '{spec.name}' dim {axis} ({sym}) is {size}, "
                        f"but {origin[sym]} says {sym}={env[sym]}"
                    )
                env.setdefault(sym, size)
                origin.setdefault(sym, f"input '{spec.name}'")
        return env

    def output_shapes(self, env: dict[str, int]) -> list[tuple[int, ...]]:
        return [tuple(env[d] for d in t.dims) for t in self.outputs]

    def float_types_text(self) -> str:
        """The allowed float types as error messages name them: "float32", "float32 or float16"."""
        return " or ".join(self.float_types)

    def float_type(self, dtypes: list[str]) -> str:
        """T for these input dtypes: the first "float" input's dtype when the op allows it, else
        float_types[0] (bind() reports what is wrong with the dtypes; this never raises)."""
        for spec, dtype in zip(self.inputs, dtypes):
            if spec.dtype == FLOAT:
                return dtype if dtype in self.float_types else self.float_types[0]
        return self.float_types[0]

    def output_dtypes(self, dtypes: list[str]) -> list[str]:
        """The outputs' element types for these input dtypes."""
        float_type = self.float_type(dtypes)
        return [t.concrete_dtype(float_type) for t in self.outputs]


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------

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
        "transform='gaussian' (use_fast_hash=False): y = x · projection[g] of width num_hash*L; hash h has bit i = [y[h*L+i] > 0]. "
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
        Attribute("num_hash", "int", "Number of hash functions m.", minimum=1, maximum=MAX_INT32),
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
    inputs=(Tensor("probs", FLOAT, ("B", "S", "E"), "Router probabilities (softmax of the router logits over E)."),),
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
        Tensor("wi", FLOAT, ("E", "F", "D"), "First projection of each expert (stacked nn.Linear weights)."),
        Tensor("wo", FLOAT, ("E", "D", "F"), "Second projection of each expert (stacked nn.Linear weights)."),
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
        Tensor("wi", "int8", ("E", "F", "D"), "First projection of each expert, int8 (D <= 65536)."),
        Tensor("wi_scale", FLOAT, ("E", "F"), "Scale of each row (output channel) of wi."),
        Tensor("wo", "int8", ("E", "D", "F"), "Second projection of each expert, int8 (F <= 65536)."),
        Tensor("wo_scale", FLOAT, ("E", "D"), "Scale of each row (output channel) of wo."),
    ),
    outputs=(Tensor("out", FLOAT, ("B", "S", "D"), "Scaled expert outputs, zero for tokens not listed."),),
    attributes=EXPERT_FFN.attributes,
)

ARGMAX_HASH = OpSpec(
    name="ArgmaxHash",
    summary="Angular LSH (Reformer's hashing): random projections of each vector, bucket = argmax over "
    "[xR, -xR], with optional factorised buckets and a padding bucket for masked rows.",
    semantics=(
        "S = sum_f bucket_sizes[f] / 2 columns per round; C must be num_hash * S. "
        "y[b,h,n,:] = vector[b,h,n,:] · projection[h], of width C, seen as [num_hash, S] (round-major). "
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
    attributes=(Attribute("num_hash", "int", "Number of hashing rounds.", minimum=1, maximum=MAX_INT32),),
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
    attributes=(Attribute("num_buckets", "int", "Number of buckets C.", minimum=1, maximum=MAX_INT32),),
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

OPS: tuple[OpSpec, ...] = (
    LSH_CUMULATION,
    SIGN_HASH,
    ARGMAX_HASH,
    SORTED_CHUNK_ATTENTION,
    BUCKET_SUM,
    TOP1_DISPATCH,
    EXPERT_FFN,
    EXPERT_FFN_INT8,
)
BY_NAME = {op.name: op for op in OPS}


def hadamard_parts(dim: int, num_hash: int, hash_code_len: int) -> int:
    """Number of independent Hadamard parts P needed for `num_hash` codes (YOSO's num_part)."""
    per_part = dim // hash_code_len
    if per_part < 1:
        raise ValueError(f"SignHash: hash_code_len={hash_code_len} exceeds the vector dim {dim}")
    return max(1, -(-num_hash // per_part))


# --------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------


def cpp_header() -> str:
    """C++ view of the catalogue, for the kernels' generic validation and op registration."""
    dtype = {"int32": "DType::kInt32", "int8": "DType::kInt8", FLOAT: "DType::kFloat"}
    float_dtype = {"float32": "DType::kFloat32", "float16": "DType::kFloat16"}
    lines = [
        "// Generated from src/bucketrt/ops/spec.py by CMake. Do not edit.",
        "#pragma once",
        "#include <cstdint>",
        "",
        '#include "bucketrt/spec_types.h"',
        "",
        "namespace bucketrt::spec {",
        f'inline constexpr const char* kDomain = "{DOMAIN}";',
        f"inline constexpr int kVersion = {VERSION};",
        "// Routing attributes every node carries (TensorRT's plugin lookup); kernels ignore them.",
        f'inline constexpr const char* kPluginNamespace = "{PLUGIN_NAMESPACE}";',
        f'inline constexpr const char* kPluginVersionAttribute = "{PLUGIN_VERSION_ATTRIBUTE}";',
        f'inline constexpr const char* kPluginNamespaceAttribute = "{PLUGIN_NAMESPACE_ATTRIBUTE}";',
    ]
    for op in OPS:
        ident = op.name
        for kind, tensors in (("Inputs", op.inputs), ("Outputs", op.outputs)):
            rows = []
            for t in tensors:
                dims = ", ".join(f'"{d}"' for d in t.dims)
                rows.append(f'  {{"{t.name}", {dtype[t.dtype]}, {len(t.dims)}, {{{dims}}}}},')
            lines += [f"inline constexpr TensorSpec k{ident}{kind}[] = {{", *rows, "};"]
        # -- attributes: AttrSpec rows, with each attribute's allowed ints beside them --
        rows = []
        for a in op.attributes:
            default = "nullptr" if a.default is None else f'"{a.default}"'
            minimum = "kNoMinimum" if a.minimum is None else str(a.minimum)
            maximum = "kNoMaximum" if a.maximum is None else str(a.maximum)
            choices = "|".join(a.choices)
            allowed, num_allowed = "nullptr", 0
            if a.allowed:
                allowed, num_allowed = f"k{ident}_{a.name}_allowed", len(a.allowed)
                lines.append(f"inline constexpr long long {allowed}[] = {{{', '.join(map(str, a.allowed))}}};")
            rows.append(
                f'  {{"{a.name}", AttrType::k{a.type.capitalize()}, {default}, {minimum}, {maximum}, '
                f'{str(a.power_of_two).lower()}, "{choices}", {allowed}, {num_allowed}}},'
            )
        lines += [f"inline constexpr AttrSpec k{ident}Attributes[] = {{", *(rows or ["  {}"]), "};"]
        types = ", ".join(float_dtype[t] for t in op.float_types)
        lines += [f"inline constexpr DType k{ident}FloatTypes[] = {{{types}}};"]
        lines += [
            f'inline constexpr OpSpec k{ident} = {{"{op.name}", '
            f"k{ident}Inputs, {len(op.inputs)}, k{ident}Outputs, {len(op.outputs)}, "
            f"k{ident}Attributes, {len(op.attributes)}, k{ident}FloatTypes, {len(op.float_types)}}};",
        ]
        lines += _cpp_op_namespace(op)
    lines.append("inline constexpr const OpSpec* kAllOps[] = {" + ", ".join(f"&k{op.name}" for op in OPS) + "};")
    # ExpertFFN's activations: the functions as an enum, the names as a table onto it.
    camel = {f: "k" + "".join(part.capitalize() for part in f.split("_")) for f in ACTIVATION_FUNCTIONS}
    lines += [
        "// ExpertFFN's activation functions (spec.py EXPERT_ACTIVATIONS); the kernels switch over every one.",
        "enum class Activation { " + ", ".join(camel[f] for f in ACTIVATION_FUNCTIONS) + " };",
        f"inline constexpr int kNumActivations = {len(ACTIVATION_FUNCTIONS)};",
        "struct ActivationName {",
        "  const char* name;",
        "  Activation function;",
        "};",
        "inline constexpr ActivationName kActivationNames[] = {",
        *(f'  {{"{name}", Activation::{camel[f]}}},' for name, f in EXPERT_ACTIVATIONS.items()),
        "};",
    ]
    lines += [
        "}  // namespace bucketrt::spec",
        "",
        "// The op table every registration walks (plugins/ort/register.cc): X(Op) once per op, in",
        "// catalogue order. Each op needs a CPU kernel class ort::<Op>Kernel; a missing one is a",
        "// compile error, not an op that silently lacks a backend.",
        "#define BUCKETRT_FOR_EACH_OP(X) " + " ".join(f"X({op.name})" for op in OPS),
        "",
    ]
    return "\n".join(lines)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _cpp_op_namespace(op: OpSpec) -> list[str]:
    """Per op, namespace spec::<Op>: its input and output indices (spec order) and a dims struct with one
    member per symbolic dim, so kernels write `dims.Nq` and a renamed dim is a compile error rather
    than an unbound look-up at run time."""
    inputs = [f"k{_camel(t.name)}" for t in op.inputs]
    outputs = [f"k{_camel(t.name)}" for t in op.outputs]
    clash = set(inputs) & set(outputs)
    if clash:
        raise ValueError(f"{op.name}: input and output share the C++ name(s) {sorted(clash)}")
    symbols: list[str] = []
    for t in (*op.inputs, *op.outputs):
        for d in t.dims:
            if d.isidentifier() and d not in symbols:
                symbols.append(d)
    lines = [
        f"namespace {op.name} {{",
        "enum Input : int { " + ", ".join(inputs) + " };",
        "enum Output : int { " + ", ".join(outputs) + " };",
        "// Every symbolic dim of the op, bound by BindInputs (an attribute-named dim takes its value).",
        "struct Dims {",
        *(f"  int64_t {d};" for d in symbols),
        "  // From the bindings BindInputs filled (validate.h's Bindings, or anything with operator[](const char*)).",
        "  template <class Env>",
        "  static Dims From(const Env& env) {",
        "    Dims d;",
        *(f'    d.{d} = env["{d}"];' for d in symbols),
        "    return d;",
        "  }",
        "};",
        f"}}  // namespace {op.name}",
    ]
    return lines


def markdown() -> str:
    out = [
        "# bucketrt ops",
        "",
        "<!-- Generated from src/bucketrt/ops/spec.py (`python src/bucketrt/ops/spec.py markdown docs/ops.md`). -->",
        "",
        f"All ops live in the ONNX domain `{DOMAIN}`, version {VERSION}. Dims are symbols: equal symbols "
        "must have equal sizes, and a symbol named like an attribute takes its value. Every backend "
        "rejects a violation with an error that names the op and the input.",
        "",
        "Every attribute has the type and the bounds its table states (an int its range or its allowed "
        "values, a string its choices). Every backend (the PyTorch reference, the exporter, the ONNX "
        "Runtime CPU and CUDA kernels, the TensorRT plugins) rejects, when the node is created, an "
        "attribute out of its bounds, of another type, or that the op does not have, with an error "
        "that names the op and the attribute and says what is allowed. One limit: ONNX Runtime shows a "
        "custom op no list of its node's attributes, only a look-up by name, so its kernels reject an "
        "unknown name one edit away from one of the op's attributes (a letter dropped, added, changed "
        "or swapped: `chunks_befor`, `activatio`, `Causal`) and cannot see one further off. "
        "`bucketrt.ort_session` closes that gap for Python users: it checks every bucketrt node of the "
        "model against this catalogue (`bucketrt.ops.model_check.check_model`) before ONNX Runtime sees "
        "it. The other backends see every name.",
        "",
        f"Every node also carries the string attributes `{PLUGIN_VERSION_ATTRIBUTE}` (the op's version) and "
        f"`{PLUGIN_NAMESPACE_ATTRIBUTE}` (`{PLUGIN_NAMESPACE}`), with which TensorRT's ONNX parser finds the op's "
        "plugin. They route the node and do not change what it computes; every backend accepts and ignores them.",
        "",
    ]
    for op in OPS:
        # A single float type is printed as such; several as T, with a line saying what T may be.
        def shown(t: Tensor) -> str:
            if t.dtype != FLOAT:
                return t.dtype
            return op.float_types[0] if len(op.float_types) == 1 else "T"

        out += [f"## {op.name}", "", op.summary, "", f"**Semantics.** {op.semantics}", ""]
        if len(op.float_types) > 1:
            out += [
                f"**Types.** T is {op.float_types_text()}, the same for every T tensor of a node; the kernels "
                "compute in float32 (float16 inputs widened exactly, float16 outputs rounded once).",
                "",
            ]
        out += ["| input | dtype | shape | meaning |", "|---|---|---|---|"]
        out += [f"| `{t.name}` | {shown(t)} | [{', '.join(t.dims)}] | {t.doc} |" for t in op.inputs]
        out += ["", "| output | dtype | shape | meaning |", "|---|---|---|---|"]
        out += [f"| `{t.name}` | {shown(t)} | [{', '.join(t.dims)}] | {t.doc} |" for t in op.outputs]
        if op.attributes:
            out += ["", "| attribute | type | default | meaning |", "|---|---|---|---|"]
            for a in op.attributes:
                doc = f"{a.doc} ({a.bounds_text()})"
                default = "required" if a.default is None else f"`{a.default}`"
                out.append(f"| `{a.name}` | {a.type} | {default} | {doc} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Emit artefacts derived from the op catalogue.")
    parser.add_argument("what", choices=("header", "markdown"))
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    text = cpp_header() if args.what == "header" else markdown()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not args.output.exists() or args.output.read_text() != text:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
