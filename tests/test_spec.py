"""The op catalogue: its generated artefacts stay current and its checks say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from bucketrt.ops import spec

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ops.md"


def test_docs_ops_md_is_generated_from_the_catalogue():
    assert DOCS.read_text() == spec.markdown(), "run `make docs` to regenerate docs/ops.md"


def test_cpp_header_declares_every_op_input_and_attribute():
    header = spec.cpp_header()
    for op in spec.OPS:
        assert f'inline constexpr OpSpec k{op.name} = {{"{op.name}"' in header
        for tensor in op.inputs + op.outputs:
            assert f'{{"{tensor.name}", DType::' in header
        for attr in op.attributes:
            assert f'{{"{attr.name}", AttrType::' in header


def test_bind_reports_the_first_disagreeing_input():
    with pytest.raises(ValueError, match=r"LSHCumulation: input 'key_hash' dim 2 \(m\) is 5, but input 'query_hash' says m=4"):
        spec.LSH_CUMULATION.bind(
            [(2, 3), (2, 3, 4), (2, 6), (2, 6, 5), (2, 6, 8)],
            ["int32", "int32", "int32", "int32", "float32"],
            {"hashtable_capacity": 16},
        )


def test_bind_takes_symbols_named_like_attributes_from_the_attribute():
    env = spec.SIGN_HASH.bind([(4, 7), (4, 7, 32), (2, 6, 32)], ["int32", "float32", "float32"], {"num_hash": 3, "hash_code_len": 4})
    assert env["num_hash"] == 3 and spec.SIGN_HASH.output_shapes(env) == [(4, 7, 3)]


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
        spec.LSH_CUMULATION.resolve_attributes(attrs)


def test_string_attribute_choices_and_defaults():
    assert spec.SIGN_HASH.resolve_attributes({"num_hash": 1, "hash_code_len": 1})["transform"] == "hadamard"
    with pytest.raises(ValueError, match="SignHash: attribute 'transform' must be one of"):
        spec.SIGN_HASH.resolve_attributes({"num_hash": 1, "hash_code_len": 1, "transform": "fft"})


@pytest.mark.parametrize("dim,num_hash,bits,parts", [(64, 64, 9, 10), (32, 16, 9, 6), (32, 1, 32, 1), (16, 3, 1, 1)])
def test_hadamard_parts_follows_yoso(dim, num_hash, bits, parts):
    assert spec.hadamard_parts(dim, num_hash, bits) == parts


# -- routing attributes (TensorRT's plugin lookup) ----------------------------------------------


def test_routing_attributes_come_from_the_catalogue():
    for op in spec.OPS:
        routing = op.routing_attributes()
        assert routing == {"plugin_version": str(op.version), "plugin_namespace": "bucketrt"}
        assert set(routing) == set(spec.ROUTING_ATTRIBUTES)
        assert all(isinstance(v, str) for v in routing.values())  # the parser reads string attributes
        # Never confused with an op's own attributes.
        assert not set(routing) & {a.name for a in op.attributes}
    assert spec.SIGN_HASH.node_attributes({"num_hash": 2}) == {
        "num_hash": 2, "plugin_version": "1", "plugin_namespace": "bucketrt"
    }


def test_validation_accepts_and_drops_exactly_the_routing_attributes():
    attrs = spec.LSH_CUMULATION.node_attributes({"hashtable_capacity": 8})
    assert spec.LSH_CUMULATION.resolve_attributes(attrs) == {"hashtable_capacity": 8, "deterministic": 0}
    with pytest.raises(ValueError, match=r"LSHCumulation: unknown attribute\(s\) \['plugin_name'\]"):
        spec.LSH_CUMULATION.resolve_attributes({**attrs, "plugin_name": "x"})


def test_cpp_header_and_docs_name_the_routing_attributes():
    header = spec.cpp_header()
    assert 'kPluginNamespace = "bucketrt"' in header
    assert 'kPluginVersionAttribute = "plugin_version"' in header
    assert 'kPluginNamespaceAttribute = "plugin_namespace"' in header
    assert "`plugin_version`" in spec.markdown() and "`plugin_namespace`" in spec.markdown()


def test_float_type_is_one_per_node():
    # T is float32 or float16 for LSHCumulation and SignHash, and all of a node's float tensors share it.
    ints = ["int32"] * 4
    shapes = [(2, 3), (2, 3, 4), (2, 6), (2, 6, 4), (2, 6, 8)]
    spec.LSH_CUMULATION.bind(shapes, ints + ["float16"], {"hashtable_capacity": 16})
    assert spec.LSH_CUMULATION.output_dtypes(ints + ["float16"]) == ["float16"]
    assert spec.LSH_CUMULATION.output_dtypes(ints + ["float32"]) == ["float32"]
    with pytest.raises(ValueError, match=r"LSHCumulation: input 'value' must be float32 or float16, got float64"):
        spec.LSH_CUMULATION.bind(shapes, ints + ["float64"], {"hashtable_capacity": 16})
    with pytest.raises(ValueError, match=r"SignHash: input 'projection' must be float16 like input 'vector', got float32"):
        spec.SIGN_HASH.bind([(4, 7), (4, 7, 32), (2, 6, 32)], ["int32", "float16", "float32"], {"num_hash": 3, "hash_code_len": 4})
    # Ops without float16 kernels yet keep float32 alone, with the old words.
    for op in (op for op in spec.OPS if op.float_types == ("float32",)):
        float_input = next(t for t in op.inputs if t.dtype == spec.FLOAT)
        dtypes = ["float16" if t.dtype == spec.FLOAT else t.dtype for t in op.inputs]
        shapes = [(2,) * len(t.dims) for t in op.inputs]
        with pytest.raises(ValueError, match=rf"{op.name}: input '{float_input.name}' must be float32, got float16"):
            op.bind(shapes, dtypes, {a.name: 1 for a in op.attributes if a.type == "int"})
    assert 'inline constexpr DType kSignHashFloatTypes[] = {DType::kFloat32, DType::kFloat16};' in spec.cpp_header()


def test_every_output_dim_is_an_int_attribute_or_an_input_dim():
    """TensorRT asks a plugin for its output shapes as expressions over its input dims before any
    data exists (trt_plugins/output_dims.h): an output whose size depends on the data cannot be a
    bucketrt plugin, and an op that adds one must be designed otherwise."""
    for op in spec.OPS:
        int_attributes = {a.name for a in op.attributes if a.type == "int"}
        input_dims = {d for t in op.inputs for d in t.dims}
        for out in op.outputs:
            for dim in out.dims:
                assert dim in int_attributes or dim in input_dims, (op.name, out.name, dim)
