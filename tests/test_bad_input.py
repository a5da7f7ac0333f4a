"""Bad models and inputs reach each op through ONNX Runtime: every one must raise a Python
exception naming the op and the offending input or attribute (no crash: this process surviving all
of them is part of the test), and the PyTorch reference must reject the same call with ValueError.

Every op gets the mechanical cases (`mechanical_cases`), made from the one table's first small call
of the op (tests/op_inputs.py) and the spec: each input one rank higher, each dim two inputs share
one larger in the later input, each attribute just outside its bounds, a required one missing, a
name one letter short. The hand-written cases below add what is particular to an op.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from onnx import numpy_helper
from op_inputs import TABLE

from bucketrt.library import run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import (
    ARGMAX_HASH,
    BUCKET_SUM,
    BY_NAME,
    LSH_CUMULATION,
    MAX_NUM_BUCKETS,
    MAX_NUM_HASH,
    SIGN_HASH,
    SORTED_CHUNK_ATTENTION,
)
from bucketrt.ops.schema import OpSpec


@dataclass
class Case:
    id: str
    spec: OpSpec
    inputs: dict[str, np.ndarray]
    attrs: dict
    culprit: str  # the input or attribute the message must name
    # The kernel's message is the reference's, word for word (not where ORT's own graph checks
    # reject a dtype first, nor for codes, where the reference reports their range).
    same_text: bool = True
    # ORT's own type inference rejects float inputs of different types (T is one type per node)
    # before any kernel runs, naming the op only; the reference names the input.
    kernel_names_culprit: bool = True


def lsh_inputs(batch=2, num_query=3, num_key=4, num_hash=2, dim=8, capacity=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "query_mask": np.ones((batch, num_query), np.int32),
        "query_hash": rng.integers(0, capacity, (batch, num_query, num_hash), dtype=np.int32),
        "key_mask": np.ones((batch, num_key), np.int32),
        "key_hash": rng.integers(0, capacity, (batch, num_key, num_hash), dtype=np.int32),
        "value": rng.standard_normal((batch, num_key, dim)).astype(np.float32),
    }


def sign_inputs(batch=3, length=5, dim=16, proj=(1, 3, 16), seed=0):
    rng = np.random.default_rng(seed)
    return {
        "mask": np.ones((batch, length), np.int32),
        "vector": rng.standard_normal((batch, length, dim)).astype(np.float32),
        "projection": np.sign(rng.standard_normal(proj)).astype(np.float32),
    }


def with_(inputs: dict, **changes) -> dict:
    return {**inputs, **changes}


def with_code(name: str, index: tuple, code: int) -> dict:
    inputs = lsh_inputs()
    inputs[name] = inputs[name].copy()
    inputs[name][index] = code
    return inputs


def chunk_inputs(length=8, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    qkv = {n: rng.standard_normal((1, 1, length, dim)).astype(np.float32) for n in ("query", "key", "value")}
    return {
        **qkv,
        "mask": np.ones((1, length), np.int32),
        "buckets": rng.integers(0, 4, (1, 1, 1, length), dtype=np.int32),
    }


CAP = {"hashtable_capacity": 8}
L = lsh_inputs()
SIGN = {"num_hash": 4, "hash_code_len": 4}
S = sign_inputs()
GAUSS = {"num_hash": 4, "hash_code_len": 4, "transform": "gaussian"}
C = chunk_inputs()
CHUNK = {"chunk_length": 2}
# BucketSum on 9 tokens (the fuzz's case), ArgmaxHash on the one table's small call.
BS = {
    "bucket": np.zeros((1, 9), np.int32),
    "weight": np.ones((1, 9), np.float32),
    "vector": np.ones((1, 9, 4), np.float32),
}
A = TABLE["ArgmaxHash"].small["argmax"](np.random.default_rng(0)).inputs

CASES = [
    # LSHCumulation: ranks and dtypes
    Case("lsh-query_mask-rank3", LSH_CUMULATION, with_(L, query_mask=L["query_mask"][..., None]), CAP, "query_mask"),
    Case("lsh-key_hash-rank2", LSH_CUMULATION, with_(L, key_hash=L["key_hash"][..., 0]), CAP, "key_hash"),
    Case("lsh-value-rank4", LSH_CUMULATION, with_(L, value=L["value"][None]), CAP, "value"),
    Case(
        "lsh-query_mask-int64",
        LSH_CUMULATION,
        with_(L, query_mask=L["query_mask"].astype(np.int64)),
        CAP,
        "query_mask",
        same_text=False,
    ),
    Case(
        "lsh-key_hash-int64",
        LSH_CUMULATION,
        with_(L, key_hash=L["key_hash"].astype(np.int64)),
        CAP,
        "key_hash",
        same_text=False,
    ),
    Case("lsh-value-int32", LSH_CUMULATION, with_(L, value=L["value"].astype(np.int32)), CAP, "value", same_text=False),
    Case(
        "lsh-value-float64",
        LSH_CUMULATION,
        with_(L, value=L["value"].astype(np.float64)),
        CAP,
        "value",
        same_text=False,
    ),
    # LSHCumulation: dims that disagree
    Case("lsh-key_mask-batch", LSH_CUMULATION, with_(L, key_mask=L["key_mask"][:1]), CAP, "key_mask"),
    Case("lsh-value-batch", LSH_CUMULATION, with_(L, value=L["value"][:1]), CAP, "value"),
    Case("lsh-query_hash-Nq", LSH_CUMULATION, with_(L, query_hash=L["query_hash"][:, :2]), CAP, "query_hash"),
    Case("lsh-key_hash-Nk", LSH_CUMULATION, with_(L, key_hash=lsh_inputs(num_key=5)["key_hash"]), CAP, "key_hash"),
    Case("lsh-value-Nk", LSH_CUMULATION, with_(L, value=lsh_inputs(num_key=5)["value"]), CAP, "value"),
    Case("lsh-key_hash-m", LSH_CUMULATION, with_(L, key_hash=lsh_inputs(num_hash=3)["key_hash"]), CAP, "key_hash"),
    Case("lsh-value-D0", LSH_CUMULATION, with_(L, value=np.zeros((2, 4, 0), np.float32)), CAP, "value"),
    Case("lsh-query-N0", LSH_CUMULATION, lsh_inputs(num_query=0), CAP, "query_mask"),
    # LSHCumulation: attributes (rejected when the session is created)
    Case("lsh-capacity-not-pow2", LSH_CUMULATION, L, {"hashtable_capacity": 12}, "hashtable_capacity"),
    Case("lsh-capacity-zero", LSH_CUMULATION, L, {"hashtable_capacity": 0}, "hashtable_capacity"),
    Case("lsh-capacity-negative", LSH_CUMULATION, L, {"hashtable_capacity": -8}, "hashtable_capacity"),
    Case("lsh-capacity-missing", LSH_CUMULATION, L, {}, "hashtable_capacity"),
    Case("lsh-capacity-float", LSH_CUMULATION, L, {"hashtable_capacity": 8.0}, "hashtable_capacity"),
    Case("lsh-deterministic-2", LSH_CUMULATION, L, {**CAP, "deterministic": 2}, "deterministic"),
    Case("lsh-deterministic-negative", LSH_CUMULATION, L, {**CAP, "deterministic": -1}, "deterministic"),
    # LSHCumulation: codes of live rows outside [0, capacity)
    Case("lsh-key-code-700", LSH_CUMULATION, with_code("key_hash", (1, 2, 1), 700), CAP, "key_hash", same_text=False),
    Case(
        "lsh-key-code-capacity", LSH_CUMULATION, with_code("key_hash", (0, 0, 0), 8), CAP, "key_hash", same_text=False
    ),
    Case(
        "lsh-query-code-negative",
        LSH_CUMULATION,
        with_code("query_hash", (1, 0, 1), -1),
        CAP,
        "query_hash",
        same_text=False,
    ),
    Case(
        "lsh-query-code-int-min",
        LSH_CUMULATION,
        with_code("query_hash", (0, 2, 0), -(2**31)),
        CAP,
        "query_hash",
        same_text=False,
    ),
    # SignHash: ranks and dtypes
    Case("sign-mask-rank3", SIGN_HASH, with_(S, mask=S["mask"][..., None]), SIGN, "mask"),
    Case("sign-vector-rank2", SIGN_HASH, with_(S, vector=S["vector"][0]), SIGN, "vector"),
    Case("sign-projection-rank2", SIGN_HASH, with_(S, projection=S["projection"][0]), SIGN, "projection"),
    Case("sign-mask-int64", SIGN_HASH, with_(S, mask=S["mask"].astype(np.int64)), SIGN, "mask", same_text=False),
    Case(
        "sign-vector-int32", SIGN_HASH, with_(S, vector=S["vector"].astype(np.int32)), SIGN, "vector", same_text=False
    ),
    Case(
        "sign-projection-float16-vector-float32",
        SIGN_HASH,
        with_(S, projection=S["projection"].astype(np.float16)),
        SIGN,
        "projection",
        same_text=False,
        kernel_names_culprit=False,
    ),
    Case(
        "sign-vector-float16-projection-float32",
        SIGN_HASH,
        with_(S, vector=S["vector"].astype(np.float16)),
        SIGN,
        "projection",
        same_text=False,
        kernel_names_culprit=False,
    ),
    Case(
        "sign-projection-float64",
        SIGN_HASH,
        with_(S, projection=S["projection"].astype(np.float64)),
        SIGN,
        "projection",
        same_text=False,
    ),
    # SignHash: dims that disagree
    Case("sign-vector-batch", SIGN_HASH, with_(S, vector=S["vector"][:2]), SIGN, "vector"),
    Case("sign-vector-N", SIGN_HASH, with_(S, vector=S["vector"][:, :4]), SIGN, "vector"),
    Case("sign-mask-N0", SIGN_HASH, sign_inputs(length=0), SIGN, "mask"),
    Case("sign-groups-not-dividing-batch", SIGN_HASH, sign_inputs(proj=(2, 3, 16)), SIGN, "projection"),
    # SignHash: hadamard constraints
    Case("sign-hadamard-D-not-pow2", SIGN_HASH, sign_inputs(dim=24, proj=(1, 3, 24)), SIGN, "vector"),
    Case(
        "sign-hadamard-L-above-D",
        SIGN_HASH,
        sign_inputs(dim=8, proj=(1, 3, 8)),
        {"num_hash": 1, "hash_code_len": 9},
        "hash_code_len",
    ),
    Case("sign-hadamard-projection-rows", SIGN_HASH, sign_inputs(proj=(1, 2, 16)), SIGN, "projection"),
    Case("sign-hadamard-projection-D", SIGN_HASH, sign_inputs(proj=(1, 3, 32)), SIGN, "projection"),
    Case("sign-hadamard-projection-parts", SIGN_HASH, S, {"num_hash": 5, "hash_code_len": 4}, "projection"),
    # SignHash: gaussian constraints
    Case("sign-gaussian-projection-cols", SIGN_HASH, sign_inputs(proj=(1, 16, 15)), GAUSS, "projection"),
    Case("sign-gaussian-projection-D", SIGN_HASH, sign_inputs(proj=(1, 8, 16)), GAUSS, "projection"),
    # SignHash: attributes (rejected when the session is created)
    Case("sign-transform-unknown", SIGN_HASH, S, {**SIGN, "transform": "fourier"}, "transform"),
    Case("sign-transform-int", SIGN_HASH, S, {**SIGN, "transform": 3}, "transform"),
    Case("sign-code-len-31", SIGN_HASH, S, {"num_hash": 4, "hash_code_len": 31}, "hash_code_len"),
    Case("sign-code-len-zero", SIGN_HASH, S, {"num_hash": 4, "hash_code_len": 0}, "hash_code_len"),
    Case("sign-num-hash-zero", SIGN_HASH, S, {"num_hash": 0, "hash_code_len": 4}, "num_hash"),
    Case("sign-num-hash-missing", SIGN_HASH, S, {"hash_code_len": 4}, "num_hash"),
    Case("sign-num-hash-float", SIGN_HASH, S, {"num_hash": 2.5, "hash_code_len": 4}, "num_hash"),
    # The spec's bounds (maximum, allowed values) and types, every one rejected when the session is
    # created, in the reference's words.
    Case("lsh-capacity-2^32", LSH_CUMULATION, L, {"hashtable_capacity": 2**32}, "hashtable_capacity"),
    Case("lsh-deterministic-2", LSH_CUMULATION, L, {**CAP, "deterministic": 2}, "deterministic"),
    Case("lsh-deterministic-negative", LSH_CUMULATION, L, {**CAP, "deterministic": -1}, "deterministic"),
    Case("sign-num-hash-2^31", SIGN_HASH, S, {"num_hash": 2**31, "hash_code_len": 4}, "num_hash"),
    Case("sign-num-hash-list", SIGN_HASH, S, {"num_hash": [1, 2], "hash_code_len": 4}, "num_hash"),
    Case("sign-num-hash-string", SIGN_HASH, S, {"num_hash": "4", "hash_code_len": 4}, "num_hash"),
    Case("sign-code-len-floats", SIGN_HASH, S, {"num_hash": 4, "hash_code_len": [1.5, 2.0]}, "hash_code_len"),
    Case("sign-transform-list", SIGN_HASH, S, {**SIGN, "transform": [1, 2]}, "transform"),
    # A tensor attribute (the reference prints the TensorProto, the kernels "a tensor").
    Case(
        "sign-num-hash-tensor",
        SIGN_HASH,
        S,
        {"num_hash": numpy_helper.from_array(np.array([4], np.int64)), "hash_code_len": 4},
        "num_hash",
        same_text=False,
    ),
    Case("chunk-before-2^61", SORTED_CHUNK_ATTENTION, C, {**CHUNK, "chunks_before": 2**61}, "chunks_before"),
    Case("chunk-after-65", SORTED_CHUNK_ATTENTION, C, {**CHUNK, "chunks_after": 65}, "chunks_after"),
    Case("chunk-length-2^31", SORTED_CHUNK_ATTENTION, C, {"chunk_length": 2**31}, "chunk_length"),
    Case("chunk-causal-2", SORTED_CHUNK_ATTENTION, C, {**CHUNK, "causal": 2}, "causal"),
    Case("chunk-mask-self-float", SORTED_CHUNK_ATTENTION, C, {**CHUNK, "mask_self": 1.0}, "mask_self"),
    Case("chunk-max-length-2^31", SORTED_CHUNK_ATTENTION, C, {**CHUNK, "max_length": 2**31}, "max_length"),
    # Attributes that size an output are bounded by what the models need (catalogue.MAX_NUM_HASH,
    # MAX_NUM_BUCKETS): the fuzz's BucketSum of 9 tokens with num_buckets 2^31 - 1 (86 GB) is refused
    # when the session is created, as is each bound's first value past it.
    Case("bucket-sum-num-buckets-2^31-1", BUCKET_SUM, BS, {"num_buckets": 2**31 - 1}, "num_buckets"),
    Case("bucket-sum-num-buckets-past-bound", BUCKET_SUM, BS, {"num_buckets": MAX_NUM_BUCKETS + 1}, "num_buckets"),
    Case("sign-num-hash-past-bound", SIGN_HASH, S, {"num_hash": MAX_NUM_HASH + 1, "hash_code_len": 4}, "num_hash"),
    Case("argmax-num-hash-past-bound", ARGMAX_HASH, A, {"num_hash": MAX_NUM_HASH + 1}, "num_hash"),
    Case("argmax-num-hash-2^31-1", ARGMAX_HASH, A, {"num_hash": 2**31 - 1}, "num_hash"),
    # Misspelt attributes: an unknown name, never the default run silently.
    Case("sign-transfrom", SIGN_HASH, S, {**SIGN, "transfrom": "gaussian"}, "transfrom"),
    Case("chunk-chunks_befor", SORTED_CHUNK_ATTENTION, C, {**CHUNK, "chunks_befor": 0}, "chunks_befor"),
    Case("chunk-Causal", SORTED_CHUNK_ATTENTION, C, {**CHUNK, "Causal": 1}, "Causal"),
    Case("lsh-deterministc", LSH_CUMULATION, L, {**CAP, "deterministc": 1}, "deterministc"),
]


def _grown(array: np.ndarray, axis: int) -> np.ndarray:
    return np.concatenate([array, array.take([0], axis=axis)], axis=axis)


def _bad_values(a) -> list:
    """Values of attribute `a` just outside the spec's bounds."""
    if a.type == "string":
        return ["bogus"]
    if a.type == "float":
        # Beyond each bound (in float32 too: an ONNX FLOAT is one), an int, and the non-finite values.
        step = max(1.0, abs(a.maximum))
        return [a.minimum - 1.0, a.maximum + step, 7, math.nan, math.inf, -math.inf]
    values = [max(a.allowed) + 1] if a.allowed else []
    values += [a.minimum - 1] if a.minimum is not None else []
    values += [a.maximum + 1] if a.maximum is not None else []
    if a.power_of_two:
        values.append(next(v for v in range(max(3, a.minimum), a.maximum) if v & (v - 1)))
    return values


def mechanical_cases() -> list[Case]:
    """Every op's cases that follow from its spec, on the table's first small call of the op."""
    cases = []
    for row in TABLE.values():
        spec = BY_NAME[row.op]
        call = next(iter(row.small.values()))(np.random.default_rng(0))
        inputs, attrs = call.inputs, call.attrs
        for t in spec.inputs:
            cases.append(
                Case(
                    f"{spec.name}-{t.name}-rank-up",
                    spec,
                    with_(inputs, **{t.name: inputs[t.name][None]}),
                    attrs,
                    t.name,
                )
            )
        int_attributes = {a.name for a in spec.attributes if a.type == "int"}
        symbols = dict.fromkeys(d for t in spec.inputs for d in t.dims if d.isidentifier() and d not in int_attributes)
        for symbol in symbols:
            carriers = [t for t in spec.inputs if symbol in t.dims]
            if len(carriers) < 2:
                continue
            last = carriers[-1]  # the first to disagree with the inputs before it
            grown = _grown(inputs[last.name], last.dims.index(symbol))
            cases.append(
                Case(
                    f"{spec.name}-{last.name}-{symbol}-disagrees",
                    spec,
                    with_(inputs, **{last.name: grown}),
                    attrs,
                    last.name,
                )
            )
        resolved = spec.resolve_attributes(attrs)
        for a in spec.attributes:
            for value in _bad_values(a):
                cases.append(Case(f"{spec.name}-{a.name}={value}", spec, inputs, {**attrs, a.name: value}, a.name))
            others = {k: v for k, v in attrs.items() if k != a.name}
            if a.default is None:
                cases.append(Case(f"{spec.name}-{a.name}-missing", spec, inputs, others, a.name))
            cases.append(
                Case(
                    f"{spec.name}-{a.name}-misspelt",
                    spec,
                    inputs,
                    {**others, a.name[:-1]: resolved[a.name]},
                    a.name[:-1],
                )
            )
    return cases


CASES += mechanical_cases()


# The most times an input's size an output may be, through an attribute that sizes it.
MAX_OUTPUT_DIM_ATTRIBUTE = 4096


def test_every_attribute_that_sizes_an_output_is_bounded_by_the_models_needs():
    # An int attribute named as an output dim multiplies the output's size by its value whatever the
    # inputs: its maximum is what the models need, never an int32's range (issue 24's 86 GB BucketSum).
    sizing = {
        (op.name, a.name): a.maximum
        for op in BY_NAME.values()
        for a in op.attributes
        if a.type == "int" and any(a.name in t.dims for t in op.outputs)
    }
    assert set(sizing) == {("SignHash", "num_hash"), ("ArgmaxHash", "num_hash"), ("BucketSum", "num_buckets")}
    assert all(maximum <= MAX_OUTPUT_DIM_ATTRIBUTE for maximum in sizing.values()), sizing


def names(message: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", message) is not None


def run_reference(case: Case):
    fn: Callable = reference.REFERENCES[case.spec.name]
    tensors = [torch.from_numpy(np.ascontiguousarray(case.inputs[t.name])) for t in case.spec.inputs]
    return fn(*tensors, **case.attrs)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel_rejects(case: Case):
    with pytest.raises(Exception) as info:
        run_op(case.spec, case.inputs, case.attrs)
    message = str(info.value)
    assert names(message, case.spec.name), message
    assert names(message, case.culprit) or not case.kernel_names_culprit, message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reference_rejects(case: Case):
    with pytest.raises(ValueError) as info:
        run_reference(case)
    message = str(info.value)
    assert names(message, case.spec.name), message
    assert names(message, case.culprit), message


def test_kernel_and_reference_say_the_same():
    # Where both sides produce the message themselves (not ORT's own type checks), it is the same text.
    for case in (c for c in CASES if c.same_text):
        with pytest.raises(ValueError) as ref:
            run_reference(case)
        with pytest.raises(Exception) as ort:
            run_op(case.spec, case.inputs, case.attrs)
        assert str(ref.value) in str(ort.value), case.id


def test_valid_calls_still_work_after_errors():
    for case in CASES:
        with pytest.raises(Exception, match=case.spec.name):
            run_op(case.spec, case.inputs, case.attrs)
    (out,) = run_op(LSH_CUMULATION, L, CAP)
    expected = reference.lsh_cumulation(*(torch.from_numpy(a) for a in L.values()), **CAP).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    (codes,) = run_op(SIGN_HASH, S, SIGN)
    np.testing.assert_array_equal(
        codes, reference.sign_hash(*(torch.from_numpy(a) for a in S.values()), **SIGN).numpy()
    )


def test_bucket_sum_rejects_out_of_range_buckets():
    import numpy as np

    from bucketrt.library import run_op
    from bucketrt.ops import reference
    from bucketrt.ops.catalogue import BUCKET_SUM

    inputs = {
        "bucket": np.array([[0, 5]], dtype=np.int32),
        "weight": np.ones((1, 2), dtype=np.float32),
        "vector": np.ones((1, 2, 3), dtype=np.float32),
    }
    with pytest.raises(Exception, match=r"BucketSum: input 'bucket' has ids in \[0, 5\]"):
        run_op(BUCKET_SUM, inputs, {"num_buckets": 4})
    with pytest.raises(ValueError, match=r"BucketSum: input 'bucket' has ids in \[0, 5\]"):
        reference.bucket_sum(*[torch.from_numpy(v) for v in inputs.values()], num_buckets=4)
    inputs["weight"] = np.ones((1, 3), dtype=np.float32)
    with pytest.raises(Exception, match="BucketSum: input 'weight' dim 1"):
        run_op(BUCKET_SUM, inputs, {"num_buckets": 8})


def test_a_far_unknown_name_is_rejected_where_the_runtime_shows_it():
    # ONNX Runtime lists no node attributes to a custom op: the kernel sees names one edit away from
    # the op's own (above); the reference, the exporter and TensorRT see every name.
    with pytest.raises(ValueError, match=r"SignHash: unknown attribute\(s\) \['bits'\]"):
        run_reference(Case("far", SIGN_HASH, S, {**SIGN, "bits": 3}, "bits"))
    (codes,) = run_op(SIGN_HASH, S, {**SIGN, "bits": 3})
    np.testing.assert_array_equal(
        codes, reference.sign_hash(*(torch.from_numpy(a) for a in S.values()), **SIGN).numpy()
    )


def test_sorted_chunk_attention_runs_at_the_largest_window():
    # chunks_before = chunks_after = 64 (the spec's maximum) on 4 chunks: every chunk's window wraps
    # many times (the reference counts a key once per appearance); the kernel agrees and is quick.
    attrs = {**CHUNK, "chunks_before": 64, "chunks_after": 64}
    (out,) = run_op(SORTED_CHUNK_ATTENTION, C, attrs)
    expected = reference.sorted_chunk_attention(
        *(torch.from_numpy(C[t.name]) for t in SORTED_CHUNK_ATTENTION.inputs), **attrs
    )
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_a_misspelt_activation_is_an_error_not_relu():
    # The audit's case: `activatio='gelu'` ran relu (the default) without a word.
    from op_inputs import expert_ffn_inputs

    from bucketrt.ops.catalogue import EXPERT_FFN

    inputs = expert_ffn_inputs(np.random.default_rng(0), 2, 4, 8, 16, 3, 2)
    with pytest.raises(Exception, match=r"ExpertFFN: unknown attribute\(s\) \['activatio'\]"):
        run_op(EXPERT_FFN, inputs, {"activatio": "gelu"})
    with pytest.raises(ValueError, match=r"ExpertFFN: unknown attribute\(s\) \['activatio'\]"):
        reference.expert_ffn(*(torch.from_numpy(inputs[t.name]) for t in EXPERT_FFN.inputs), activatio="gelu")
    (gelu,) = run_op(EXPERT_FFN, inputs, {"activation": "gelu"})
    expected = reference.expert_ffn(*(torch.from_numpy(inputs[t.name]) for t in EXPERT_FFN.inputs), activation="gelu")
    np.testing.assert_allclose(gelu, expected.numpy(), rtol=1e-4, atol=1e-5)
