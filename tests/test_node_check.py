"""bucketrt.ort_session checks every bucketrt node's attributes against the spec first: the names
ONNX Runtime cannot show a custom op (docs/ops.md) are rejected there, in the reference's words."""

import numpy as np
import onnx
import pytest
from onnx import helper

import bucketrt
from bucketrt.ops.catalogue import EXPERT_FFN, SIGN_HASH, SORTED_CHUNK_ATTENTION
from bucketrt.ops.graph import single_op_model
from bucketrt.ops.node_check import check_nodes

SIGN = {"num_hash": 2, "hash_code_len": 4}


def _saved(tmp_path, model: onnx.ModelProto):
    path = tmp_path / "model.onnx"
    model.graph.node[0].name = "hash0"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        ({**SIGN, "bits": 3}, r"node 'hash0': SignHash: unknown attribute\(s\) \['bits'\]"),
        (
            {**SIGN, "transform": "fourier"},
            r"SignHash: attribute 'transform' must be one of \['hadamard', 'gaussian'\]",
        ),
        ({"num_hash": [1, 2], "hash_code_len": 4}, r"SignHash: attribute 'num_hash' must be an int, got \[1, 2\]"),
        ({"num_hash": 2.0, "hash_code_len": 4}, r"SignHash: attribute 'num_hash' must be an int, got 2.0"),
        ({"num_hash": 2, "hash_code_len": 31}, r"SignHash: attribute 'hash_code_len' must be <= 30, got 31"),
        ({"num_hash": 2}, r"SignHash: attribute 'hash_code_len' is required"),
    ],
)
def test_ort_session_rejects_what_the_reference_rejects(tmp_path, attrs, words):
    path = _saved(tmp_path, single_op_model(SIGN_HASH, attrs))
    with pytest.raises(ValueError, match=words):
        bucketrt.ort_session(path)


def test_a_tensor_attribute_is_named_as_such(tmp_path):
    model = single_op_model(EXPERT_FFN, {})
    model.graph.node[0].attribute.append(helper.make_attribute("activation", helper.make_tensor("t", 1, [1], [0.0])))
    with pytest.raises(ValueError, match=r"ExpertFFN: attribute 'activation' must be a string, got a tensor"):
        check_nodes(model)


def test_nodes_inside_subgraphs_are_checked():
    inner = single_op_model(SORTED_CHUNK_ATTENTION, {"chunk_length": 4, "chunks_befor": 0}).graph
    cond = helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=inner, else_branch=inner)
    outer = helper.make_graph([node], "outer", [cond], [helper.make_tensor_value_info("out", 1, None)])
    with pytest.raises(ValueError, match=r"SortedChunkAttention: unknown attribute\(s\) \['chunks_befor'\]"):
        check_nodes(helper.make_model(outer))


def test_an_unknown_op_of_the_domain_is_named():
    model = single_op_model(SIGN_HASH, SIGN)
    model.graph.node[0].op_type = "SignHashes"
    with pytest.raises(ValueError, match=r"bucketrt has no op 'SignHashes'"):
        check_nodes(model)


def test_a_valid_model_runs(tmp_path):
    path = _saved(tmp_path, single_op_model(SIGN_HASH, SIGN))
    rng = np.random.default_rng(0)
    feeds = {
        "mask": np.ones((1, 3), np.int32),
        "vector": rng.standard_normal((1, 3, 8)).astype(np.float32),
        "projection": rng.choice([-1.0, 1.0], (1, 3, 8)).astype(np.float32),
    }
    (codes,) = bucketrt.ort_session(path).run(None, feeds)
    assert codes.shape == (1, 3, 2) and codes.min() >= 0 and codes.max() < 16


def test_the_check_can_be_skipped_for_a_model_already_checked(tmp_path):
    # The kernels cannot see a name this far from the op's own (docs/ops.md): unchecked, it runs.
    path = _saved(tmp_path, single_op_model(SIGN_HASH, {**SIGN, "bits": 3}))
    with pytest.raises(ValueError, match="unknown attribute"):
        bucketrt.ort_session(path)
    assert bucketrt.ort_session(path, check_attributes=False).get_inputs()[0].name == "mask"
