"""The standard-op lowerings of the mixture-of-experts ops (Top1Dispatch, ExpertFFN, TopKExperts) and
of their models' attention (MaskedAttention; bucketrt.ops.lowering) against their PyTorch references: eagerly on the shared per-op cases (the one
table's small calls, the kernel tests' shape grids, the shared non-finite cases) in float32 and
float16, and exported (torch.onnx.export of a module that calls the lowering) and run in ONNX Runtime
with no bucketrt library registered, at two sizes of every dynamic dim, with no bucketrt node and
every dynamic dim left dynamic in the graph.

Integer outputs (Top1Dispatch's experts, priorities, counts, order) must be the reference's exactly;
float outputs within float32 tolerances (the lowerings' matmuls and ReduceSum sum in the runtime's
order), float16 within its rounding.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from kernel_cases import NONFINITE_CASES, NONFINITE_RTOL, assert_nonfinite_close, nonfinite_inputs
from op_inputs import (
    EXPERT_FFN_CASES,
    MASKED_ATTENTION_CASES,
    TABLE,
    TOP1_CASES,
    TOPK_CASES,
    attention_attrs,
    expert_ffn_inputs,
    in_float_type,
    masked_attention_inputs,
    top1_probs,
    topk_attrs,
    topk_experts_inputs,
)

from bucketrt.ops import lowering, reference
from bucketrt.ops.catalogue import ACTIVATION_FUNCTIONS, BY_NAME, EXPERT_ACTIVATIONS, EXPERT_GATINGS
from bucketrt.ops.lowering import LOWERINGS
from bucketrt.ops.schema import DOMAIN

MOE_OPS = ("Top1Dispatch", "ExpertFFN", "TopKExperts", "MaskedAttention")
# float32: the lowerings' matmuls against the reference's, relative to max(1, max |reference|).
RTOL = {"float32": 2e-5, "float16": 2e-3}
# One transformers name per activation function (ExpertFFN and TopKExperts take them all).
ONE_NAME_PER_FUNCTION = {function: name for name, function in reversed(EXPERT_ACTIVATIONS.items())}


def _tensors(op: str, inputs: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in BY_NAME[op].inputs]


def _outputs(result) -> list[np.ndarray]:
    return [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]


def assert_like_reference(op: str, inputs: dict, attrs: dict, dtype: str, name: str) -> None:
    tensors = _tensors(op, in_float_type(op, inputs, dtype))
    resolved = BY_NAME[op].resolve_attributes(attrs)
    want = _outputs(reference.REFERENCES[op](*tensors, **resolved))
    got = _outputs(LOWERINGS[op](*tensors, **resolved))
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert_nonfinite_close(a, b, RTOL[dtype], name=f"{name} ({dtype}) output {i}")


# -- eager, on the shared cases -----------------------------------------------------------------


def _grid_calls():
    for case in TOP1_CASES:
        batch, length, experts, capacity, skew = case
        yield (
            f"top1-{case}",
            "Top1Dispatch",
            lambda rng, c=case: {"probs": top1_probs(rng, *c[:3], c[4])},
            {"expert_capacity": capacity},
        )
    activations = list(ONE_NAME_PER_FUNCTION.values())
    for i, case in enumerate(EXPERT_FFN_CASES):
        activation = activations[i % len(activations)]
        yield (
            f"expert-ffn-{case}-{activation}",
            "ExpertFFN",
            lambda rng, c=case: expert_ffn_inputs(rng, *c, shuffled=True),
            {"activation": activation},
        )
    for i, case in enumerate(TOPK_CASES):
        tokens, picks, dim, ff, experts, gating, none = case
        activation = activations[i % len(activations)]
        yield (
            f"topk-{case}-{activation}",
            "TopKExperts",
            lambda rng, c=case: topk_experts_inputs(rng, *c[:6], c[6]),
            topk_attrs(gating, activation),
        )
    for case in MASKED_ATTENTION_CASES:
        yield (
            f"attention-{case}",
            "MaskedAttention",
            lambda rng, c=case: masked_attention_inputs(rng, *c),
            attention_attrs(case[5]),
        )
    for op in MOE_OPS:
        for base, make in TABLE[op].small.items():
            call = make(np.random.default_rng(0))
            yield f"small-{base}", op, lambda rng, c=call: c.inputs, call.attrs


GRID = list(_grid_calls())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", GRID, ids=[c[0] for c in GRID])
def test_lowering_matches_reference_on_the_shared_cases(case, dtype):
    name, op, make, attrs = case
    assert_like_reference(op, make(np.random.default_rng(sum(map(ord, name)))), attrs, dtype, name)


FORMULATION_GRID = [c for c in GRID if c[1] in ("ExpertFFN", "TopKExperts")]


@pytest.mark.parametrize("formulation", ["gathered", "dense"])
@pytest.mark.parametrize("case", FORMULATION_GRID, ids=[c[0] for c in FORMULATION_GRID])
def test_both_expert_formulations_match_the_reference(case, formulation, monkeypatch):
    # The lowerings pick per-token gathered weights or every expert by the token count at run time:
    # each formulation on every case, whichever the count would pick.
    def choose(pairs, experts, gathered, dense, operands):
        return (gathered if formulation == "gathered" else dense)(*operands)

    monkeypatch.setattr(lowering, "_choose", choose)
    name, op, make, attrs = case
    assert_like_reference(op, make(np.random.default_rng(sum(map(ord, name)))), attrs, "float32", name)


@pytest.mark.parametrize("function", ACTIVATION_FUNCTIONS)
@pytest.mark.parametrize("gating", list(EXPERT_GATINGS))
def test_topk_experts_lowers_every_gating_and_activation(gating, function):
    # GPT-OSS's glu_clamped_offset (clamp, alpha 1.702 in quick_gelu) among them; unscaled weights,
    # so that the clamps bite.
    inputs = topk_experts_inputs(np.random.default_rng(3), 9, 3, 8, 6, 4, gating, none=0.2, scaled=False)
    attrs = topk_attrs(gating, ONE_NAME_PER_FUNCTION[function])
    assert_like_reference("TopKExperts", inputs, attrs, "float32", f"{gating}-{function}")


def _nonfinite_params():
    for case in NONFINITE_CASES:
        if case[1] in MOE_OPS:
            for dtype in ("float32", "float16"):
                yield pytest.param(case, dtype, id=f"{case[0]}-{dtype}")


@pytest.mark.parametrize("case,dtype", list(_nonfinite_params()))
def test_lowering_keeps_the_nonfinite_rules(case, dtype):
    case_id, op, _, attrs, checks = case
    inputs = nonfinite_inputs(case, dtype)
    tensors = _tensors(op, inputs)
    resolved = BY_NAME[op].resolve_attributes(attrs)
    want = _outputs(reference.REFERENCES[op](*tensors, **resolved))
    got = _outputs(LOWERINGS[op](*tensors, **resolved))
    checks(inputs, attrs, got)
    for i, (a, b) in enumerate(zip(got, want)):
        assert_nonfinite_close(a, b, NONFINITE_RTOL[dtype], name=f"{case_id} ({dtype}) output {i}")


# -- exported, run without bucketrt's library ---------------------------------------------------


class _Lowered(torch.nn.Module):
    """Calls op's lowering once per attribute set: one graph covers several activations or gatings."""

    def __init__(self, op: str, attr_sets: list[dict]):
        super().__init__()
        self.op, self.attr_sets = op, [BY_NAME[op].resolve_attributes(a) for a in attr_sets]

    def forward(self, *inputs):
        outs = []
        for attrs in self.attr_sets:
            result = LOWERINGS[self.op](*inputs, **attrs)
            outs += list(result) if isinstance(result, tuple) else [result]
        return tuple(outs)


def _export(op: str, attr_sets: list[dict], example: dict[str, np.ndarray], dynamic: dict[str, dict[int, str]]):
    from torch.export import Dim

    dims = {name: Dim(name, min=1) for name in {d for axes in dynamic.values() for d in axes.values()}}
    names = [t.name for t in BY_NAME[op].inputs]
    shapes = tuple({axis: dims[d] for axis, d in dynamic.get(n, {}).items()} or None for n in names)
    program = torch.onnx.export(
        _Lowered(op, attr_sets).eval(),
        tuple(_tensors(op, example)),
        dynamo=True,
        dynamic_shapes=(shapes,),  # forward(*inputs): one entry, the inputs' tuple
        input_names=names,
        opset_version=20,
        optimize=True,
        verbose=False,
    )
    model = program.model_proto
    model.ir_version = min(model.ir_version, 10)  # ONNX Runtime refuses IR 14
    return model


def _dynamic_dims(model) -> dict[str, list]:
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


def _run(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in inputs.items() if k in wanted})


# Per op: the attribute sets one graph computes, the inputs at two sizes of the dynamic dims, and
# those dims by input and axis.
def _top1(rng, batch, length):
    return {"probs": top1_probs(rng, batch, length, 4, skew=1.0)}


def _ffn(rng, batch, length):
    return expert_ffn_inputs(rng, batch, length, 6, 10, 3, capacity=3, shuffled=True, scaled=False)


def _topk_gating(gating):
    def make(rng, tokens, _):
        return topk_experts_inputs(rng, tokens, 2, 6, 5, 4, gating, none=0.2, scaled=False)

    return make


# One attribute set per graph (a graph of several, each with its If, exports in super-linear time):
# every gating with an activation its family uses, float16 on Top1Dispatch, ExpertFFN and GPT-OSS's
# gating (the float16 path is one cast in and one out). Every activation function: the next test.
_FFN_DYNAMIC = {n: {0: "B", 1: "S"} for n in ("hidden", "order", "gate")}
_TOPK_DYNAMIC = {n: {0: "T"} for n in ("hidden", "expert_index", "expert_weight")}
_TOPK_EXPORTS = {"none": "relu", "glu": "silu", "glu_clamped": "silu", "glu_clamped_after": "silu"}


def _attention(rng, batch, length):
    # GQA (H = 2N) with sinks, left padding, a KV cache of 3 keys before the `length` queries.
    return masked_attention_inputs(rng, batch, 4, 2, length, length + 3, 8, 6, "left")


_ATTENTION_DYNAMIC = {
    "query": {0: "B", 2: "S"},
    "key": {0: "B", 2: "T"},
    "value": {0: "B", 2: "T"},
    "mask": {0: "B", 1: "S", 2: "T"},
}
EXPORTS = {
    "Top1Dispatch": ([{"expert_capacity": 3}], _top1, {"probs": {0: "B", 1: "S"}}, ("float32", "float16")),
    "MaskedAttention": ([attention_attrs(8)], _attention, _ATTENTION_DYNAMIC, ("float32", "float16")),
    "ExpertFFN-relu": ([{"activation": "relu"}], _ffn, _FFN_DYNAMIC, ("float32",)),
    "ExpertFFN-gelu_new": ([{"activation": "gelu_new"}], _ffn, _FFN_DYNAMIC, ("float16",)),
    **{
        f"TopKExperts-{gating}": ([topk_attrs(gating, act)], _topk_gating(gating), _TOPK_DYNAMIC, ("float32",))
        for gating, act in _TOPK_EXPORTS.items()
    },
    "TopKExperts-glu_clamped_offset": (  # GPT-OSS
        [topk_attrs("glu_clamped_offset", "quick_gelu")],
        _topk_gating("glu_clamped_offset"),
        _TOPK_DYNAMIC,
        ("float32", "float16"),
    ),
}
EXPORT_PARAMS = [pytest.param(what, dtype, id=f"{what}-{dtype}") for what, e in EXPORTS.items() for dtype in e[3]]


@pytest.mark.slow
@pytest.mark.parametrize("what,dtype", EXPORT_PARAMS)
def test_exported_lowering_runs_without_bucketrt(what, dtype):
    op = what.split("-")[0]
    attr_sets, make, dynamic, _ = EXPORTS[what]
    example = in_float_type(op, make(np.random.default_rng(0), 2, 5), dtype)
    model = _export(op, attr_sets, example, dynamic)
    assert not [n.op_type for n in model.graph.node if n.domain == DOMAIN], "a bucketrt node in the graph"
    assert not [o.domain for o in model.opset_import if o.domain == DOMAIN]
    for name, axes in dynamic.items():
        shape = _dynamic_dims(model)[name]
        assert all(isinstance(shape[axis], str) for axis in axes), f"{name}: dims {shape} narrowed"
    for size in ((3, 7), (1, 2)):  # two sizes of the dynamic dims, neither the example's
        inputs = in_float_type(op, make(np.random.default_rng(sum(size)), *size), dtype)
        tensors = _tensors(op, inputs)
        got = _run(model, inputs)
        want = []
        for attrs in attr_sets:
            want += _outputs(reference.REFERENCES[op](*tensors, **BY_NAME[op].resolve_attributes(attrs)))
        assert len(got) == len(want)
        for i, (a, b) in enumerate(zip(got, want)):
            assert_nonfinite_close(a, b, RTOL[dtype], name=f"{what} {size} ({dtype}) output {i}")


class _Activations(torch.nn.Module):
    def forward(self, x):
        return tuple(lowering._ACTIVATIONS[f](x) for f in ACTIVATION_FUNCTIONS)


@pytest.mark.slow
def test_every_activation_function_exports_and_runs_without_bucketrt():
    # The lowerings' activation functions (the reference's, clamps as comparisons) in one graph, on
    # values across their ranges, NaN and +-Inf included: ONNX Runtime's ops give the reference's.
    x = torch.tensor([float("nan"), float("inf"), float("-inf"), -30.0, -6.5, -3.0, -0.7, 0.0, 0.3, 2.9, 6.2, 40.0])
    program = torch.onnx.export(
        _Activations().eval(),
        (x[None].expand(3, -1).contiguous(),),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("N", min=1)},),
        opset_version=20,
        verbose=False,
    )
    model = program.model_proto
    model.ir_version = min(model.ir_version, 10)
    assert not [n for n in model.graph.node if n.domain == DOMAIN]
    got = _run(model, {model.graph.input[0].name: x[None].expand(5, -1).numpy().copy()})
    for function, out in zip(ACTIVATION_FUNCTIONS, got):
        want = reference.ACTIVATION_FUNCTIONS[function](x).numpy()
        assert_nonfinite_close(out[4], want, 1e-5, name=function)


# The non-finite rules through ONNX Runtime's own ops (ArgMax, comparisons, Where, ReduceSum): NaN
# as Top1Dispatch's maximum, NaN through relu6's and GPT-OSS's clamps (which ONNX Clip, Relu and Max
# would leave to the runtime), ignored picks' NaN weights.
EXPORTED_NONFINITE = (
    "top1/nan-inf",
    "expert/relu6-nan",
    "topk/glu_clamped_offset-relu-nan",
    "attention/masked-keys",
    "attention/live-keys",
    "attention/zero-weights",
)
DYNAMIC = {
    "MaskedAttention": _ATTENTION_DYNAMIC,
    "Top1Dispatch": {"probs": {0: "B", 1: "S"}},
    "ExpertFFN": {n: {0: "B", 1: "S"} for n in ("hidden", "order", "gate")},
    "TopKExperts": {n: {0: "T"} for n in ("hidden", "expert_index", "expert_weight")},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in NONFINITE_CASES if c[0] in EXPORTED_NONFINITE], ids=lambda c: c[0])
def test_exported_lowering_keeps_the_nonfinite_rules(case):
    case_id, op, _, attrs, checks = case
    inputs = nonfinite_inputs(case)
    got = _run(_export(op, [attrs], inputs, DYNAMIC[op]), inputs)
    want = _outputs(reference.REFERENCES[op](*_tensors(op, inputs), **BY_NAME[op].resolve_attributes(attrs)))
    checks(inputs, attrs, got)
    for i, (a, b) in enumerate(zip(got, want)):
        assert_nonfinite_close(a, b, NONFINITE_RTOL["float32"], name=f"{case_id} output {i}")
