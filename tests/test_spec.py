"""The op catalogue: its generated artefacts stay current and its checks say what is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bucketrt.ops import catalogue, codegen, schema

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ops.md"


def test_docs_ops_md_is_generated_from_the_catalogue():
    assert DOCS.read_text() == codegen.markdown(), "run `make docs` to regenerate docs/ops.md"


def test_cpp_header_declares_every_op_input_and_attribute():
    header = codegen.cpp_header()
    for op in catalogue.OPS:
        assert f'inline constexpr OpSpec k{op.name} = {{"{op.name}"' in header
        for tensor in op.inputs + op.outputs:
            assert f'{{"{tensor.name}", DType::' in header
        for attr in op.attributes:
            assert f'{{"{attr.name}", AttrType::' in header


def test_bind_reports_the_first_disagreeing_input():
    with pytest.raises(
        ValueError, match=r"LSHCumulation: input 'key_hash' dim 2 \(m\) is 5, but input 'query_hash' says m=4"
    ):
        catalogue.LSH_CUMULATION.bind(
            [(2, 3), (2, 3, 4), (2, 6), (2, 6, 5), (2, 6, 8)],
            ["int32", "int32", "int32", "int32", "float32"],
            {"hashtable_capacity": 16},
        )


def test_bind_takes_symbols_named_like_attributes_from_the_attribute():
    env = catalogue.SIGN_HASH.bind(
        [(4, 7), (4, 7, 32), (2, 6, 32)], ["int32", "float32", "float32"], {"num_hash": 3, "hash_code_len": 4}
    )
    assert env["num_hash"] == 3 and catalogue.SIGN_HASH.output_shapes(env) == [(4, 7, 3)]


@pytest.mark.parametrize(
    "attrs,message",
    [
        ({"hashtable_capacity": 12}, "must be a power of two"),
        ({"hashtable_capacity": 0}, "must be >= 1"),
        ({}, "is required"),
        ({"hashtable_capacity": 8, "bits": 3}, "unknown attribute"),
    ],
)
def test_attribute_errors_name_the_op_and_attribute(attrs, message):
    with pytest.raises(ValueError, match=f"LSHCumulation: .*{message}"):
        catalogue.LSH_CUMULATION.resolve_attributes(attrs)


def test_string_attribute_choices_and_defaults():
    assert catalogue.SIGN_HASH.resolve_attributes({"num_hash": 1, "hash_code_len": 1})["transform"] == "hadamard"
    with pytest.raises(ValueError, match="SignHash: attribute 'transform' must be one of"):
        catalogue.SIGN_HASH.resolve_attributes({"num_hash": 1, "hash_code_len": 1, "transform": "fft"})


@pytest.mark.parametrize("dim,num_hash,bits,parts", [(64, 64, 9, 10), (32, 16, 9, 6), (32, 1, 32, 1), (16, 3, 1, 1)])
def test_hadamard_parts_follows_yoso(dim, num_hash, bits, parts):
    assert catalogue.hadamard_parts(dim, num_hash, bits) == parts


# -- routing attributes (TensorRT's plugin lookup) ----------------------------------------------


def test_routing_attributes_come_from_the_catalogue():
    for op in catalogue.OPS:
        routing = op.routing_attributes()
        assert routing == {"plugin_version": str(op.version), "plugin_namespace": "bucketrt"}
        assert set(routing) == set(schema.ROUTING_ATTRIBUTES)
        assert all(isinstance(v, str) for v in routing.values())  # the parser reads string attributes
        # Never confused with an op's own attributes.
        assert not set(routing) & {a.name for a in op.attributes}
    assert catalogue.SIGN_HASH.node_attributes({"num_hash": 2}) == {
        "num_hash": 2,
        "plugin_version": "1",
        "plugin_namespace": "bucketrt",
    }


def test_validation_accepts_and_drops_exactly_the_routing_attributes():
    attrs = catalogue.LSH_CUMULATION.node_attributes({"hashtable_capacity": 8})
    assert catalogue.LSH_CUMULATION.resolve_attributes(attrs) == {"hashtable_capacity": 8, "deterministic": 0}
    with pytest.raises(ValueError, match=r"LSHCumulation: unknown attribute\(s\) \['plugin_name'\]"):
        catalogue.LSH_CUMULATION.resolve_attributes({**attrs, "plugin_name": "x"})


def test_cpp_header_and_docs_name_the_routing_attributes():
    header = codegen.cpp_header()
    assert 'kPluginNamespace = "bucketrt"' in header
    assert 'kPluginVersionAttribute = "plugin_version"' in header
    assert 'kPluginNamespaceAttribute = "plugin_namespace"' in header
    assert "`plugin_version`" in codegen.markdown() and "`plugin_namespace`" in codegen.markdown()


def test_float_type_is_one_per_node():
    # T is float32 or float16 for LSHCumulation and SignHash, and all of a node's float tensors share it.
    ints = ["int32"] * 4
    shapes = [(2, 3), (2, 3, 4), (2, 6), (2, 6, 4), (2, 6, 8)]
    catalogue.LSH_CUMULATION.bind(shapes, ints + ["float16"], {"hashtable_capacity": 16})
    assert catalogue.LSH_CUMULATION.output_dtypes(ints + ["float16"]) == ["float16"]
    assert catalogue.LSH_CUMULATION.output_dtypes(ints + ["float32"]) == ["float32"]
    with pytest.raises(ValueError, match=r"LSHCumulation: input 'value' must be float32 or float16, got float64"):
        catalogue.LSH_CUMULATION.bind(shapes, ints + ["float64"], {"hashtable_capacity": 16})
    with pytest.raises(
        ValueError, match=r"SignHash: input 'projection' must be float16 like input 'vector', got float32"
    ):
        catalogue.SIGN_HASH.bind(
            [(4, 7), (4, 7, 32), (2, 6, 32)], ["int32", "float16", "float32"], {"num_hash": 3, "hash_code_len": 4}
        )
    assert "inline constexpr DType kSignHashFloatTypes[] = {DType::kFloat32, DType::kFloat16};" in codegen.cpp_header()


@pytest.mark.parametrize("op", catalogue.OPS, ids=[op.name for op in catalogue.OPS])
def test_an_op_with_float32_alone_rejects_float16_with_the_float32_words(op):
    # An op that allows float32 alone (ExpertFFNInt8, a CPU op for quantized models; one added
    # before its float16 kernels) must reject float16 naming its first float input. Each op is
    # restricted to float32 here, so that this runs for every op.
    only32 = dataclasses.replace(op, float_types=("float32",))
    float_input = next(t for t in op.inputs if t.dtype == schema.FLOAT)
    dtypes = ["float16" if t.dtype == schema.FLOAT else t.dtype for t in op.inputs]
    shapes = [(2,) * len(t.dims) for t in op.inputs]
    attrs = only32.resolve_attributes(
        {
            a.name: a.minimum if a.minimum else (2.0 if a.type == "float" else 2)
            for a in op.attributes
            if a.default is None
        }
    )
    with pytest.raises(ValueError, match=rf"^{op.name}: input '{float_input.name}' must be float32, got float16$"):
        only32.bind(shapes, dtypes, attrs)
    # The same dtypes are T = float16 for an op that takes it (so the restriction is what rejects them).
    if "float16" in op.float_types:
        op.bind(shapes, dtypes, attrs)
    else:
        with pytest.raises(ValueError, match=rf"^{op.name}: input '{float_input.name}' must be float32, got float16$"):
            op.bind(shapes, dtypes, attrs)
    assert only32.output_dtypes(dtypes) == [t.concrete_dtype("float32") for t in op.outputs]


# -- attribute bounds: one definition, every backend ------------------------------------------


def test_every_int_attribute_has_a_maximum_or_allowed_values():
    for op in catalogue.OPS:
        for a in op.attributes:
            if a.type == "int":
                assert a.allowed or (a.minimum is not None and a.maximum is not None), (op.name, a.name)
                # Sizes derived from one attribute times an int32-sized dim stay far inside int64.
                assert max(a.allowed or (a.maximum,)) <= schema.MAX_INT32 + 1, (op.name, a.name)
            elif a.type == "float":
                # Finite bounds within float32's range: an ONNX FLOAT attribute is a float32.
                assert -3.4e38 < a.minimum <= a.maximum < 3.4e38, (op.name, a.name)
            else:
                assert a.choices, (op.name, a.name)
    with pytest.raises(AssertionError, match="needs a minimum and a maximum"):
        schema.Attribute("x", "int", "unbounded", minimum=0)
    with pytest.raises(AssertionError, match="needs finite float bounds"):
        schema.Attribute("x", "float", "unbounded", minimum=0.0)
    with pytest.raises(AssertionError, match="needs finite float bounds"):
        schema.Attribute("x", "float", "int bounds", minimum=0, maximum=1)


@pytest.mark.parametrize(
    "op,attrs,message",
    [
        (catalogue.SIGN_HASH, {"num_hash": 1, "hash_code_len": 31}, "attribute 'hash_code_len' must be <= 30, got 31"),
        (
            catalogue.SIGN_HASH,
            {"num_hash": 2**31, "hash_code_len": 4},
            "attribute 'num_hash' must be <= 1024, got 2147483648",
        ),
        (
            catalogue.SIGN_HASH,
            {"num_hash": [1], "hash_code_len": 4},
            "attribute 'num_hash' must be an int, got \\[1\\]",
        ),
        (
            catalogue.SIGN_HASH,
            {"num_hash": 1, "hash_code_len": 4, "transform": 3},
            "attribute 'transform' must be a string, got 3",
        ),
        (
            catalogue.LSH_CUMULATION,
            {"hashtable_capacity": 8, "deterministic": 2},
            "attribute 'deterministic' must be one of \\[0, 1\\], got 2",
        ),
        (
            catalogue.LSH_CUMULATION,
            {"hashtable_capacity": 2**31},
            "attribute 'hashtable_capacity' must be <= 1073741824",
        ),
        (
            catalogue.SORTED_CHUNK_ATTENTION,
            {"chunk_length": 4, "chunks_before": 2**61},
            "attribute 'chunks_before' must be <= 64",
        ),
        (
            catalogue.SORTED_CHUNK_ATTENTION,
            {"chunk_length": 4, "causal": -1},
            "attribute 'causal' must be one of \\[0, 1\\], got -1",
        ),
        (
            catalogue.SORTED_CHUNK_ATTENTION,
            {"chunk_length": 4, "mask_self": True},
            "attribute 'mask_self' must be an int, got True",
        ),
        (catalogue.EXPERT_FFN, {"activation": "gelu2"}, "attribute 'activation' must be one of \\['relu', "),
    ],
)
def test_bounds_are_the_specs(op, attrs, message):
    with pytest.raises(ValueError, match=rf"^{op.name}: {message}"):
        op.resolve_attributes(attrs)


def test_cpp_header_carries_every_bound():
    header = codegen.cpp_header()
    assert '{"hash_code_len", AttrType::kInt, nullptr, 1, 30, false, "", nullptr, 0},' in header
    assert "inline constexpr long long kSortedChunkAttention_causal_allowed[] = {0, 1};" in header
    assert (
        '{"causal", AttrType::kInt, "0", kNoMinimum, kNoMaximum, false, "", '
        "kSortedChunkAttention_causal_allowed, 2}," in header
    )
    assert '{"chunks_before", AttrType::kInt, "1", 0, 64, false, "", nullptr, 0},' in header
    for op in catalogue.OPS:
        for a in op.attributes:
            if a.maximum is not None and a.type == "int":
                assert f'{{"{a.name}", AttrType::kInt, ' in header and f", {a.maximum}, " in header
            elif a.type == "float":  # its default's repr (nullptr: none), its bounds last, as C++ reads them back
                default = "nullptr" if a.default is None else f'"{a.default!r}"'
                assert (
                    f'{{"{a.name}", AttrType::kFloat, {default}, kNoMinimum, kNoMaximum, false, "", nullptr, 0, '
                    f"{a.minimum!r}, {a.maximum!r}}}," in header
                )
    assert '{"limit", AttrType::kFloat, "0.0", kNoMinimum, kNoMaximum, false, "", nullptr, 0, 0.0, 65504.0},' in header
    assert '{"glu_clamped", Gating::kGluClamped, true},' in header and '{"glu", Gating::kGlu, false},' in header


@pytest.mark.parametrize(
    "value,message",
    [
        (7, "must be a float, got 7"),
        ("1.5", "must be a float, got '1.5'"),
        ([1.5], "must be a float, got \\[1.5\\]"),
        (float("nan"), "must be finite, got nan"),
        (float("inf"), "must be finite, got inf"),
        (float("-inf"), "must be finite, got -inf"),
        (-0.5, "must be >= 0, got -0.5"),
        (1e31, "must be <= 65504, got 1e\\+31"),
    ],
)
def test_float_attribute_bounds_and_type(value, message):
    # A float attribute takes a finite float within its bounds, never an int (an ONNX node keeps the
    # two apart); the C++ ResolveAttributes words each case alike (tests/test_bad_input.py).
    attrs = {"gating": "glu_clamped", "limit": value}
    with pytest.raises(ValueError, match=rf"^TopKExperts: attribute 'limit' {message}$"):
        catalogue.TOPK_EXPERTS.resolve_attributes(attrs)
    assert catalogue.TOPK_EXPERTS.resolve_attributes({"gating": "glu_clamped", "limit": 7.0})["limit"] == 7.0
    assert catalogue.TOPK_EXPERTS.resolve_attributes({})["limit"] == 0.0
    assert "| `limit` | float | `0.0` |" in codegen.markdown() and "(a float, 0 .. 65504)" in codegen.markdown()


def test_activations_are_defined_once():
    from bucketrt.ops import reference

    # The spec names them and says which function each computes; the reference has one formula
    # per function; the C++ kernels get the enum and the names from the generated header.
    assert catalogue.EXPERT_FFN.attribute("activation").choices == tuple(catalogue.EXPERT_ACTIVATIONS)
    assert tuple(reference.ACTIVATION_FUNCTIONS) == catalogue.ACTIVATION_FUNCTIONS
    assert set(reference.EXPERT_ACTIVATIONS) == set(catalogue.EXPERT_ACTIVATIONS)
    header = codegen.cpp_header()
    assert f"inline constexpr int kNumActivations = {len(catalogue.ACTIVATION_FUNCTIONS)};" in header
    assert '{"gelu_fast", Activation::kGeluTanh},' in header and '{"swish", Activation::kSilu},' in header
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(
        reference.EXPERT_ACTIVATIONS["gelu_new"](x), reference.ACTIVATION_FUNCTIONS["gelu_tanh"](x)
    )


def test_every_output_dim_is_an_int_attribute_or_an_input_dim():
    """TensorRT asks a plugin for its output shapes as expressions over its input dims before any
    data exists (trt_plugins/output_dims.h): an output whose size depends on the data cannot be a
    bucketrt plugin, and an op that adds one must be designed otherwise."""
    for op in catalogue.OPS:
        int_attributes = {a.name for a in op.attributes if a.type == "int"}
        input_dims = {d for t in op.inputs for d in t.dims}
        for out in op.outputs:
            for dim in out.dims:
                assert dim in int_attributes or dim in input_dims, (op.name, out.name, dim)
