"""Cross-backend comparison of hashing models: rounding flips pass, real differences fail."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bucketrt.check.codes import CodeSync, code_outputs, with_outputs
from bucketrt.ops.catalogue import LSH_CUMULATION, SIGN_HASH
from bucketrt.ops.dispatch import call, intercept
from bucketrt.ops.graph import single_op_model

# Two gaussian projections of width 2: y0 = x0 - x1 (exactly 0 for x0 == x1), y1 = x0 + x1.
PROJECTION = torch.tensor([[[1.0, 1.0], [-1.0, 1.0]]])
ATTRS = dict(num_hash=1, hash_code_len=2, transform="gaussian")


def hash_once(vector: torch.Tensor, sync: CodeSync) -> torch.Tensor:
    mask = torch.ones(vector.shape[:2], dtype=torch.int32)
    with intercept(sync):
        return call(SIGN_HASH, mask, vector, PROJECTION, **ATTRS)


def test_a_flip_at_a_zero_projection_is_rounding_and_the_reference_takes_the_backend_codes():
    vector = torch.tensor([[[1.0, 1.0], [3.0, -1.0]]])  # row 0: y0 = 0 (bit 0 clear), y1 = 2
    ours = call(SIGN_HASH, torch.ones(1, 2, dtype=torch.int32), vector, PROJECTION, **ATTRS)
    assert ours[0, :, 0].tolist() == [2, 3]
    theirs = np.array([[[3], [3]]], dtype=np.int32)  # bit 0 of row 0 flipped
    sync = CodeSync([theirs])
    got = hash_once(vector, sync)
    assert got.tolist() == theirs.tolist()
    assert (sync.total, sync.differing, sync.unexplained, sync.worst_margin) == (2, 1, 0, 0.0)
    assert sync.ok


def test_a_flip_far_from_zero_is_a_real_difference():
    vector = torch.tensor([[[1.0, 1.0], [3.0, -1.0]]])
    theirs = np.array([[[2], [1]]], dtype=np.int32)  # row 1: bit 1 flipped, y1 = 2 is far from 0
    sync = CodeSync([theirs])
    hash_once(vector, sync)
    assert sync.differing == 1 and sync.unexplained == 1 and not sync.ok
    assert sync.worst_margin == pytest.approx(2 / np.sqrt((16 + 4) / 2))


def test_codes_are_matched_by_agreement_not_order_and_non_hash_ops_pass_through():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 50, 2, generator=g), torch.randn(1, 50, 2, generator=g)
    mask = torch.ones(1, 50, dtype=torch.int32)
    q_codes = call(SIGN_HASH, mask, q, PROJECTION, **ATTRS).numpy()
    k_codes = call(SIGN_HASH, mask, k, PROJECTION, **ATTRS).numpy()
    sync = CodeSync([k_codes, q_codes])  # graph order need not be call order
    with intercept(sync):
        assert np.array_equal(call(SIGN_HASH, mask, q, PROJECTION, **ATTRS).numpy(), q_codes)
        assert np.array_equal(call(SIGN_HASH, mask, k, PROJECTION, **ATTRS).numpy(), k_codes)
        value = torch.randn(1, 50, 3, generator=g)
        out = call(
            LSH_CUMULATION,
            mask,
            torch.from_numpy(q_codes),
            mask,
            torch.from_numpy(k_codes),
            value,
            hashtable_capacity=4,
        )
    assert out.dtype == torch.float32 and sync.calls == 2 and sync.complete and sync.ok and sync.differing == 0


def test_a_missing_or_extra_hash_call_is_incomplete():
    sync = CodeSync([np.zeros((1, 2, 1), np.int32), np.zeros((1, 2, 1), np.int32)])
    hash_once(torch.ones(1, 2, 2), sync)
    assert not sync.complete and not sync.ok


def test_code_outputs_lists_the_integer_outputs_of_bucketrt_nodes():
    model = single_op_model(SIGN_HASH, {"num_hash": 4, "hash_code_len": 3})
    assert code_outputs(model) == ["hash"]
    assert code_outputs(single_op_model(LSH_CUMULATION, {"hashtable_capacity": 8})) == []
    copy = with_outputs(model, ["hash", "extra"])
    assert [o.name for o in copy.graph.output] == ["hash", "extra"] and len(model.graph.output) == 1
    assert copy.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.INT32
