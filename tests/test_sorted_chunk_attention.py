"""SortedChunkAttention: the native kernel against the PyTorch reference, the reference against
Hugging Face's own LSHSelfAttention / LocalSelfAttention, and bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from child_process import run_op_in_child
from op_inputs import CHUNK_ATTENTION_CASES, chunk_attention_seed
from op_inputs import chunk_attention_inputs as attn_inputs

from bucketrt.library import run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import ARGMAX_HASH, SORTED_CHUNK_ATTENTION
from bucketrt.ops.dispatch import call


def ref(inputs, **attrs) -> np.ndarray:
    return reference.sorted_chunk_attention(*(torch.from_numpy(a) for a in inputs.values()), **attrs).numpy()


@pytest.mark.parametrize("batch,heads,length,dim,rounds,buckets,attrs", CHUNK_ATTENTION_CASES)
def test_kernel_matches_reference(batch, heads, length, dim, rounds, buckets, attrs):
    rng = np.random.default_rng(chunk_attention_seed(batch, heads, length, dim, rounds))
    inputs = attn_inputs(rng, batch, heads, length, dim, rounds, buckets)
    inputs["mask"][0, 0] = 1
    (out,) = run_op(SORTED_CHUNK_ATTENTION, inputs, attrs)
    expected = ref(inputs, **attrs)
    assert out.shape == (batch, heads, length, dim)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("batch,heads,length,dim,rounds,buckets,attrs", CHUNK_ATTENTION_CASES)
def test_kernel_float16(batch, heads, length, dim, rounds, buckets, attrs):
    # float16 query/key/value: the float32 kernel on the widened inputs, its output rounded once,
    # so exactly the float32 kernel's output of those inputs, rounded; and the reference's to 2e-3.
    rng = np.random.default_rng(chunk_attention_seed(batch, heads, length, dim, rounds))
    inputs = attn_inputs(rng, batch, heads, length, dim, rounds, buckets)
    inputs["mask"][0, 0] = 1
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in inputs.items()}
    (out,) = run_op(SORTED_CHUNK_ATTENTION, half, attrs)
    assert out.dtype == np.float16
    widened = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in half.items()}
    (out32,) = run_op(SORTED_CHUNK_ATTENTION, widened, attrs)
    np.testing.assert_array_equal(out, out32.astype(np.float16))
    expected = reference.sorted_chunk_attention(*(torch.from_numpy(a) for a in half.values()), **attrs)
    assert expected.dtype == torch.float16
    expected = expected.float().numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(out.astype(np.float32) - expected).max()) <= 2e-3 * scale


def _config(**kw):
    from transformers import ReformerConfig

    base = dict(
        num_attention_heads=2,
        attention_head_size=8,
        hidden_size=16,
        hash_seed=3,
        num_hashes=2,
        num_buckets=4,
        lsh_attn_chunk_length=4,
        local_attn_chunk_length=4,
        lsh_num_chunks_before=1,
        lsh_num_chunks_after=0,
        local_num_chunks_before=1,
        local_num_chunks_after=0,
        is_decoder=False,
        attn_layers=["lsh"],
    )
    return ReformerConfig(**{**base, **kw})


def _projections(module, hidden, names):
    heads, size = module.num_attention_heads, module.attention_head_size
    return [getattr(module, n)(hidden).reshape(hidden.shape[0], -1, heads, size).transpose(1, 2) for n in names]


@pytest.mark.parametrize("length", [3, 4, 16, 24])
@pytest.mark.parametrize(
    "num_hashes,num_buckets,causal,padded",
    [
        (1, 4, False, False),
        (4, 4, True, True),
        (2, [2, 4], False, True),
        (1, [4, 2], True, False),
    ],
)
def test_reference_is_hugging_face_lsh_attention(length, num_hashes, num_buckets, causal, padded):
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    config = _config(num_hashes=num_hashes, num_buckets=num_buckets, is_decoder=causal)
    attn = LSHSelfAttention(config, layer_idx=0).eval()
    g = torch.Generator().manual_seed(length)
    hidden = torch.randn(3, length, 16, generator=g)
    mask = torch.ones(3, length, dtype=torch.long)
    if padded:
        mask[1, length // 2 :] = 0
        mask[2, 0] = 0
    with torch.no_grad():
        expected = attn(hidden, attention_mask=mask if padded else None).hidden_states
        (qk, v) = _projections(attn, hidden, ["query_key", "value"])
        key = qk * torch.rsqrt(qk.pow(2).mean(-1, keepdim=True) + 1e-6) / np.sqrt(8)
        sizes = num_buckets if isinstance(num_buckets, list) else [num_buckets]
        torch.manual_seed(3)
        rotations = torch.randn(2, 8, num_hashes, sum(sizes) // 2).reshape(2, 8, -1)
        mask32 = mask.int()
        buckets = call(ARGMAX_HASH, mask32, qk, rotations, torch.tensor(sizes, dtype=torch.int32), num_hash=num_hashes)
        out = call(
            SORTED_CHUNK_ATTENTION,
            qk,
            key,
            v,
            mask32,
            buckets,
            chunk_length=4,
            chunks_before=1,
            chunks_after=0,
            causal=int(causal),
            mask_self=1,
        )
    got = out.transpose(1, 2).reshape(3, length, 16)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [3, 4, 16])
@pytest.mark.parametrize("causal,padded,after", [(False, False, 1), (True, True, 0), (False, True, 0)])
def test_reference_is_hugging_face_local_attention(length, causal, padded, after):
    from transformers.models.reformer.modeling_reformer import LocalSelfAttention

    config = _config(attn_layers=["local"], is_decoder=causal, local_num_chunks_after=after)
    attn = LocalSelfAttention(config, layer_idx=0).eval()
    g = torch.Generator().manual_seed(length)
    hidden = torch.randn(3, length, 16, generator=g)
    mask = torch.ones(3, length, dtype=torch.long)
    if padded:
        mask[1, length // 2 :] = 0
    with torch.no_grad():
        expected = attn(hidden, attention_mask=mask if padded else None).hidden_states
        q, k, v = _projections(attn, hidden, ["query", "key", "value"])
        zeros = torch.zeros(3, 2, 1, length, dtype=torch.int32)
        out = call(
            SORTED_CHUNK_ATTENTION,
            q,
            k / np.sqrt(8),
            v,
            mask.int(),
            zeros,
            chunk_length=4,
            chunks_before=1,
            chunks_after=after,
            causal=int(causal),
        )
    torch.testing.assert_close(out.transpose(1, 2).reshape(3, length, 16), expected, rtol=0, atol=1e-5)


def _bad(**changes):
    rng = np.random.default_rng(0)
    return {**attn_inputs(rng, 2, 2, 16, 4, 2, 4), **changes}


A = dict(chunk_length=4)
BAD = [
    ("query-rank", _bad(query=np.zeros((2, 16, 4), np.float32)), A, "query"),
    ("key-length", _bad(key=np.zeros((2, 2, 15, 4), np.float32)), A, "key"),
    ("value-dtype", _bad(value=np.zeros((2, 2, 16, 4), np.float64)), A, "value"),
    ("mask-batch", _bad(mask=np.ones((3, 16), np.int32)), A, "mask"),
    ("buckets-dtype", _bad(buckets=np.zeros((2, 2, 2, 16), np.int64)), A, "buckets"),
    ("buckets-negative", _bad(buckets=np.full((2, 2, 2, 16), -1, np.int32)), A, "buckets"),
    ("length-not-multiple", _bad(**attn_inputs(np.random.default_rng(1), 1, 1, 10, 4, 1, 2)), A, "chunk_length"),
    ("beyond-max-length", _bad(), dict(chunk_length=4, max_length=8), "max_length"),
    ("causal-2", _bad(), dict(chunk_length=4, causal=2), "causal"),
    ("chunk-zero", _bad(), dict(chunk_length=0), "chunk_length"),
    ("chunk-missing", _bad(), {}, "chunk_length"),
]


@pytest.mark.parametrize("inputs,attrs,culprit", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named(inputs, attrs, culprit):
    with pytest.raises(Exception) as ort_error:
        run_op(SORTED_CHUNK_ATTENTION, inputs, attrs)
    with pytest.raises(ValueError) as ref_error:
        ref(inputs, **attrs)
    for message in (str(ort_error.value), str(ref_error.value)):
        assert "SortedChunkAttention" in message and re.search(rf"\b{culprit}\b", message), message


@pytest.mark.parametrize("op", ["hash", "attention"])
def test_simd_variants_agree(op):
    # BUCKETRT_SIMD=generic forces the baseline copy where the CPU has AVX2: both do the same float
    # operations in the same order, so their outputs are identical. The library reads the switch
    # once per process: the generic run is a child process's.
    rng = np.random.default_rng(23)
    if op == "hash":
        spec, attrs = ARGMAX_HASH, {"num_hash": 2}
        inputs = {
            "mask": np.ones((2, 70), np.int32),
            "vector": rng.standard_normal((2, 2, 70, 24)).astype(np.float32),
            "projection": rng.standard_normal((2, 24, 2 * 21)).astype(np.float32),
            "bucket_sizes": np.array([6, 36], np.int32),
        }  # 21 columns a round: a partial tile
    else:
        spec, attrs = SORTED_CHUNK_ATTENTION, {"chunk_length": 6, "chunks_after": 1, "causal": 1, "mask_self": 1}
        inputs = attn_inputs(rng, 2, 2, 42, 20, 3, 5)  # D=20, window 18: partial tiles
    (default,) = run_op(spec, inputs, attrs)
    (generic,) = run_op_in_child(spec.name, inputs, attrs, env={"BUCKETRT_SIMD": "generic"})
    np.testing.assert_array_equal(default, generic)
