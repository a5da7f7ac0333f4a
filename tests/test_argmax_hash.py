"""ArgmaxHash (angular LSH, Reformer's hashing): the native kernel against the PyTorch reference,
the reference against Hugging Face's own hashing, bad input, and the cross-backend flip audit."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from op_inputs import ARGMAX_CASES, argmax_inputs

from bucketrt.check.codes import CodeSync
from bucketrt.library import run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import ARGMAX_HASH
from bucketrt.ops.dispatch import call, intercept

hash_inputs = argmax_inputs  # the grid and inputs the CUDA tests share (op_inputs.py)


def ref(inputs, **attrs) -> np.ndarray:
    return reference.argmax_hash(*(torch.from_numpy(a) for a in inputs.values()), **attrs).numpy()


@pytest.mark.parametrize("batch,heads,length,dim,num_hash,sizes", ARGMAX_CASES)
def test_kernel_matches_reference(batch, heads, length, dim, num_hash, sizes):
    rng = np.random.default_rng(batch * 1000 + length + dim)
    inputs = hash_inputs(rng, batch, heads, length, dim, num_hash, sizes)
    inputs["mask"][0, 0] = 1  # at least one live row
    (out,) = run_op(ARGMAX_HASH, inputs, {"num_hash": num_hash})
    expected = ref(inputs, num_hash=num_hash)
    assert out.shape == (batch, heads, num_hash, length) and out.dtype == np.int32
    # Rounding may flip a bucket only where two candidates tie to within float error: audit each.
    differing = out != expected
    assert differing.mean() < 0.01
    if differing.any():
        sync = CodeSync([out])
        with intercept(sync):
            call(ARGMAX_HASH, *(torch.from_numpy(a) for a in inputs.values()), num_hash=num_hash)
        assert sync.ok and sync.worst_margin < 1e-4
    total = int(np.prod(sizes))
    live = np.broadcast_to(inputs["mask"][:, None, None, :] != 0, out.shape)
    assert (out[~live] == total).all()
    assert ((out[live] >= 0) & (out[live] < total)).all()


def test_ties_take_the_first_maximum_and_negatives_follow_positives():
    # Projections [1, -1]: y = (x, -x); candidates (x, -x, -x, x). x > 0 -> 0; x < 0 -> 1; x == 0 -> 0.
    inputs = {
        "mask": np.ones((1, 3), np.int32),
        "vector": np.array([[[[2.0], [-2.0], [0.0]]]], np.float32),
        "projection": np.array([[[1.0, -1.0]]], np.float32),
        "bucket_sizes": np.array([4], np.int32),
    }
    (out,) = run_op(ARGMAX_HASH, inputs, {"num_hash": 1})
    assert out[0, 0, 0].tolist() == ref(inputs, num_hash=1)[0, 0, 0].tolist() == [0, 1, 0]


def test_nan_is_the_maximum_like_torch_argmax():
    # A NaN projection column (NaN rotations) makes y NaN there for every row: the first NaN column
    # of a factor is its digit, as torch.argmax over concat(y, -y) takes it; the other factor is
    # unaffected.
    rng = np.random.default_rng(5)
    inputs = hash_inputs(rng, 2, 2, 9, 8, 2, [6, 8], masked=0.0)
    inputs["projection"][0, :, [1, 2]] = np.nan  # head 0, round 0: factor 0's columns 1 and 2
    inputs["projection"][1, 3, 7 + 3 + 3] = np.nan  # head 1, round 1 (7 columns a round): factor 1's column 3
    (out,) = run_op(ARGMAX_HASH, inputs, {"num_hash": 2})
    expected = ref(inputs, num_hash=2)
    np.testing.assert_array_equal(out, expected)
    assert (out[:, 0, 0] % 6 == 1).all() and (out[:, 1, 1] // 6 == 3).all()


def test_float16_buckets_are_the_widened_inputs_buckets():
    # float16 vectors and projections are widened exactly and hashed in float32: the buckets of the
    # float32 copies, bit for bit.
    rng = np.random.default_rng(6)
    inputs = hash_inputs(rng, 2, 3, 40, 16, 3, [4, 6])
    half = {
        **inputs,
        "vector": inputs["vector"].astype(np.float16),
        "projection": inputs["projection"].astype(np.float16),
    }
    widened = {**half, "vector": half["vector"].astype(np.float32), "projection": half["projection"].astype(np.float32)}
    (out16,) = run_op(ARGMAX_HASH, half, {"num_hash": 3})
    (out32,) = run_op(ARGMAX_HASH, widened, {"num_hash": 3})
    np.testing.assert_array_equal(out16, out32)
    assert (out16 == ref(half, num_hash=3)).mean() > 0.99


def test_reference_is_hugging_face_hashing():
    """The reference on HF's rotations gives HF's own buckets (LSHSelfAttention._hash_vectors)."""
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    for num_buckets, num_hashes in ((8, 3), ([4, 6], 2)):
        config = ReformerConfig(
            num_attention_heads=2,
            attention_head_size=16,
            hidden_size=32,
            num_buckets=num_buckets,
            num_hashes=num_hashes,
            hash_seed=7,
            lsh_attn_chunk_length=4,
        )
        attn = LSHSelfAttention(config).eval()
        g = torch.Generator().manual_seed(0)
        vectors = torch.randn(3, 2, 20, 16, generator=g)
        mask = torch.ones(3, 20, dtype=torch.long)
        mask[1, 15:] = 0
        hf = attn._hash_vectors(vectors, num_hashes, mask)  # offset per round, flattened
        sizes = num_buckets if isinstance(num_buckets, list) else [num_buckets]
        stride = int(np.prod(sizes)) + 1
        torch.manual_seed(7)
        rotations = torch.randn(2, 16, num_hashes, sum(sizes) // 2)
        ours = call(
            ARGMAX_HASH,
            mask.int(),
            vectors,
            rotations.reshape(2, 16, -1),
            torch.tensor(sizes, dtype=torch.int32),
            num_hash=num_hashes,
        )
        offsets = torch.arange(num_hashes)[None, None, :, None] * stride
        assert torch.equal((ours.long() + offsets).flatten(2), hf)


def test_flip_audit_tells_rounding_from_real_differences():
    inputs = {
        "mask": np.ones((1, 2), np.int32),
        "vector": np.array([[[[1.0, 1.0], [3.0, 0.0]]]], np.float32),
        "projection": np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32),  # y = x; row 0 ties 0 and 1
        "bucket_sizes": np.array([4], np.int32),
    }
    tensors = [torch.from_numpy(a) for a in inputs.values()]
    assert call(ARGMAX_HASH, *tensors, num_hash=1)[0, 0, 0].tolist() == [0, 0]
    sync = CodeSync([np.array([[[[1, 0]]]], np.int32)])  # row 0 took the other tied candidate
    with intercept(sync):
        call(ARGMAX_HASH, *tensors, num_hash=1)
    assert sync.ok and sync.differing == 1 and sync.worst_margin == 0.0
    sync = CodeSync([np.array([[[[0, 1]]]], np.int32)])  # row 1: candidate 3 vs 0, far apart
    with intercept(sync):
        call(ARGMAX_HASH, *tensors, num_hash=1)
    assert not sync.ok and sync.unexplained == 1
    sync = CodeSync([np.array([[[[4, 0]]]], np.int32)])  # the padding bucket for a live row
    with intercept(sync):
        call(ARGMAX_HASH, *tensors, num_hash=1)
    assert not sync.ok


def _bad(**changes):
    rng = np.random.default_rng(0)
    inputs = hash_inputs(rng, 2, 2, 5, 4, 2, [4, 6])
    return {**inputs, **changes}


BAD = [
    ("vector-rank", _bad(vector=np.zeros((2, 5, 4), np.float32)), {"num_hash": 2}, "vector"),
    ("vector-dtype", _bad(vector=np.zeros((2, 2, 5, 4), np.float64)), {"num_hash": 2}, "vector"),
    ("mask-length", _bad(mask=np.ones((2, 6), np.int32)), {"num_hash": 2}, "mask"),
    ("projection-heads", _bad(projection=np.zeros((3, 4, 10), np.float32)), {"num_hash": 2}, "projection"),
    ("projection-columns", _bad(projection=np.zeros((2, 4, 9), np.float32)), {"num_hash": 2}, "projection"),
    ("sizes-odd", _bad(bucket_sizes=np.array([5, 5], np.int32)), {"num_hash": 2}, "bucket_sizes"),
    ("sizes-dtype", _bad(bucket_sizes=np.array([4, 6], np.int64)), {"num_hash": 2}, "bucket_sizes"),
    (
        "sizes-overflow",
        _bad(bucket_sizes=np.array([65536, 65536], np.int32), projection=np.zeros((2, 4, 131072), np.float32)),
        {"num_hash": 2},
        "bucket_sizes",
    ),
    ("num-hash-zero", _bad(), {"num_hash": 0}, "num_hash"),
    ("num-hash-mismatch", _bad(), {"num_hash": 3}, "projection"),
]


@pytest.mark.parametrize("inputs,attrs,culprit", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named(inputs, attrs, culprit):
    with pytest.raises(Exception) as ort_error:
        run_op(ARGMAX_HASH, inputs, attrs)
    with pytest.raises(ValueError) as ref_error:
        ref(inputs, **attrs)
    for message in (str(ort_error.value), str(ref_error.value)):
        assert "ArgmaxHash" in message and re.search(rf"\b{culprit}\b", message), message
