"""The PyTorch references against independent dense formulas and against YOSO's expectation."""

from __future__ import annotations

import math

import pytest
import torch

from bucketrt.ops import reference
from bucketrt.ops.catalogue import hadamard_parts


def dense_hadamard(dim: int) -> torch.Tensor:
    """Sylvester's construction, H_2n = [[H, H], [H, -H]], as an explicit matrix."""
    h = torch.ones(1, 1)
    while h.shape[0] < dim:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def dense_sign_hash_hadamard(mask, vector, projection, num_hash, code_len):
    """Loop-by-loop restatement of YOSO's fast_hash with an explicit Hadamard matrix."""
    batch, length, dim = vector.shape
    groups = projection.shape[0]
    parts = hadamard_parts(dim, num_hash, code_len)
    per_part = dim // code_len
    hmat = dense_hadamard(dim).double()
    out = torch.zeros(batch, length, num_hash, dtype=torch.int32)
    for b in range(batch):
        diag = projection[b % groups].double().reshape(3, parts, dim)
        for n in range(length):
            if mask[b, n] == 0:
                continue
            for p in range(parts):
                y = vector[b, n].double()
                for r in range(3):
                    y = hmat @ (diag[r, p] * y)
                for j in range(per_part):
                    f = p * per_part + j
                    if f < num_hash:
                        out[b, n, f] = sum(int(y[j * code_len + i] > 0) << i for i in range(code_len))
    return out


@pytest.mark.parametrize("dim", [1, 2, 8, 32, 64])
def test_hadamard_transform_matches_dense_matrix(dim):
    x = torch.randn(3, 5, dim, dtype=torch.float64)
    torch.testing.assert_close(reference.hadamard_transform(x), x @ dense_hadamard(dim).double(), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "batch,groups,length,dim,num_hash,code_len",
    [(1, 1, 7, 32, 5, 4), (6, 3, 9, 32, 16, 9), (2, 2, 4, 64, 64, 9), (4, 1, 3, 16, 3, 1), (2, 1, 5, 8, 8, 8)],
)
def test_sign_hash_hadamard_matches_dense_formula(batch, groups, length, dim, num_hash, code_len):
    g = torch.Generator().manual_seed(0)
    vector = torch.randn(batch, length, dim, generator=g, dtype=torch.float64).float()
    mask = (torch.rand(batch, length, generator=g) > 0.2).int()
    parts = hadamard_parts(dim, num_hash, code_len)
    projection = torch.randint(0, 2, (groups, 3 * parts, dim), generator=g).float() * 2 - 1
    got = reference.sign_hash(mask, vector, projection, num_hash=num_hash, hash_code_len=code_len)
    want = dense_sign_hash_hadamard(mask, vector, projection, num_hash, code_len)
    assert got.dtype == torch.int32 and got.shape == (batch, length, num_hash)
    assert torch.equal(got, want)
    assert int(got.max()) < 2**code_len and int(got.min()) >= 0
    assert torch.all(got[mask == 0] == 0)


def test_sign_hash_gaussian_matches_dense_formula():
    g = torch.Generator().manual_seed(1)
    batch, groups, length, dim, num_hash, code_len = 4, 2, 6, 24, 5, 3
    vector = torch.randn(batch, length, dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.int32)
    mask[1, -2:] = 0
    projection = torch.randn(groups, dim, num_hash * code_len, generator=g)
    got = reference.sign_hash(mask, vector, projection, num_hash=num_hash, hash_code_len=code_len, transform="gaussian")
    for b in range(batch):
        for n in range(length):
            y = vector[b, n].double() @ projection[b % groups].double()
            for h in range(num_hash):
                code = sum(int(y[h * code_len + i] > 0) << i for i in range(code_len)) if mask[b, n] else 0
                assert int(got[b, n, h]) == code


def dense_lsh_cumulation(query_mask, query_hash, key_mask, key_hash, value):
    """The op's formula with an explicit [Nq, Nk] collision matrix per hash."""
    m = query_hash.shape[-1]
    collide = (query_hash[:, :, None, :] == key_hash[:, None, :, :]).double().sum(-1) / m  # [B, Nq, Nk]
    collide = collide * key_mask[:, None, :].double() * query_mask[:, :, None].double()
    return (collide @ value.double()).float()


@pytest.mark.parametrize(
    "batch,nq,nk,dim,m,bits", [(1, 1, 1, 1, 1, 1), (3, 33, 17, 16, 5, 4), (2, 100, 100, 96, 32, 9)]
)
def test_lsh_cumulation_matches_dense_formula(batch, nq, nk, dim, m, bits):
    g = torch.Generator().manual_seed(2)
    cap = 2**bits
    qh = torch.randint(0, cap, (batch, nq, m), generator=g, dtype=torch.int32)
    kh = torch.randint(0, cap, (batch, nk, m), generator=g, dtype=torch.int32)
    qm = (torch.rand(batch, nq, generator=g) > 0.3).int()
    km = (torch.rand(batch, nk, generator=g) > 0.3).int()
    v = torch.randn(batch, nk, dim, generator=g)
    got = reference.lsh_cumulation(qm, qh, km, kh, v, hashtable_capacity=cap)
    torch.testing.assert_close(got, dense_lsh_cumulation(qm, qh, km, kh, v), rtol=1e-5, atol=1e-5)


def test_lsh_cumulation_ignores_codes_of_masked_rows():
    qh = torch.tensor([[[1], [999]]], dtype=torch.int32)
    kh = torch.tensor([[[1], [-5]]], dtype=torch.int32)
    out = reference.lsh_cumulation(
        torch.tensor([[1, 0]], dtype=torch.int32),
        qh,
        torch.tensor([[1, 0]], dtype=torch.int32),
        kh,
        torch.tensor([[[2.0], [7.0]]]),
        hashtable_capacity=2,
    )
    assert out.tolist() == [[[2.0], [0.0]]]


def yoso_expectation(q, k, v, code_len):
    """YOSO-E: the collision probability of an L-bit sign-random-projection code, exactly."""
    q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    prob = (1 - torch.acos((q @ k.transpose(-1, -2)).clamp(-1, 1)) / math.pi) ** code_len
    return prob @ v


@pytest.mark.parametrize("transform", ["gaussian", "hadamard"])
def test_lsh_cumulation_converges_to_yoso_expectation(transform):
    """The LSH estimate is unbiased for the expectation; its error falls like 1/sqrt(m).

    Measured with this seed (max over the batch of the relative Frobenius error): gaussian
    0.98, 0.49, 0.25, 0.127 and hadamard 0.92, 0.45, 0.22, 0.120 at m = 16, 64, 256, 1024.
    The bounds leave ~20% headroom.
    """
    g = torch.Generator().manual_seed(3)
    batch, length, dim, code_len = 2, 64, 32, 4
    # Correlated queries and keys, so the attention is far from uniform.
    base = torch.randn(batch, length, dim, generator=g)
    q = base + 0.5 * torch.randn(batch, length, dim, generator=g)
    k = base + 0.5 * torch.randn(batch, length, dim, generator=g)
    v = torch.randn(batch, length, 16, generator=g)
    want = yoso_expectation(q, k, v, code_len)
    mask = torch.ones(batch, length, dtype=torch.int32)
    errors = []
    for m in (16, 64, 256, 1024):
        if transform == "gaussian":
            proj = torch.randn(batch, dim, m * code_len, generator=g)
        else:
            proj = torch.randint(0, 2, (batch, 3 * hadamard_parts(dim, m, code_len), dim), generator=g).float() * 2 - 1
        qh = reference.sign_hash(mask, q, proj, num_hash=m, hash_code_len=code_len, transform=transform)
        kh = reference.sign_hash(mask, k, proj, num_hash=m, hash_code_len=code_len, transform=transform)
        got = reference.lsh_cumulation(mask, qh, mask, kh, v, hashtable_capacity=2**code_len)
        errors.append(float(((got - want).norm(dim=(1, 2)) / want.norm(dim=(1, 2))).max()))
    bounds = [1.2, 0.6, 0.3, 0.15]
    assert all(e <= b for e, b in zip(errors, bounds)), errors
    # Quadrupling m halves the error (1/sqrt(m)), within noise.
    assert all(0.35 < errors[i + 1] / errors[i] < 0.65 for i in range(3)), errors


# -- the spec's attribute bounds, as the reference and the exporter enforce them ----------------


def _chunk_tensors():
    g = torch.Generator().manual_seed(0)
    qkv = [torch.randn(1, 1, 8, 4, generator=g) for _ in range(3)]
    return (*qkv, torch.ones(1, 8, dtype=torch.int32), torch.zeros(1, 1, 1, 8, dtype=torch.int32))


@pytest.mark.parametrize("exporting", [False, True], ids=["eager", "exporting"])
@pytest.mark.parametrize(
    "attrs,message",
    [
        (
            {"chunk_length": 2, "chunks_before": 2**61},
            r"attribute 'chunks_before' must be <= 64, got 2305843009213693952",
        ),
        ({"chunk_length": 2, "causal": 2}, r"attribute 'causal' must be one of \[0, 1\], got 2"),
        ({"chunk_length": 2, "mask_self": [1]}, r"attribute 'mask_self' must be an int, got \[1\]"),
        ({"chunk_length": "2"}, r"attribute 'chunk_length' must be an int, got '2'"),
        ({"chunk_length": 2, "chunks_befor": 0}, r"unknown attribute\(s\) \['chunks_befor'\]"),
    ],
)
def test_reference_and_exporter_enforce_the_spec_bounds(monkeypatch, exporting, attrs, message):
    from bucketrt.ops.catalogue import SORTED_CHUNK_ATTENTION
    from bucketrt.ops.dispatch import call

    tensors = _chunk_tensors()
    with pytest.raises(ValueError, match=rf"^SortedChunkAttention: {message}$"):
        reference.sorted_chunk_attention(*tensors, **attrs)
    # bucketrt.ops.call is the exporter's only way to an op: it checks before emitting a node.
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: exporting)
    with pytest.raises(ValueError, match=rf"^SortedChunkAttention: {message}$"):
        call(SORTED_CHUNK_ATTENTION, *tensors, **attrs)


def test_a_window_wider_than_the_chunks_counts_keys_once_per_appearance():
    # 1 + before + after = 7 windows over K = 4 chunks: chunk offsets -3..3 mod 4 meet offset 1 (= -3)
    # twice; the reference (Reformer's concatenation of rolled chunks) counts such keys twice.
    tensors = _chunk_tensors()
    wide = reference.sorted_chunk_attention(*tensors, chunk_length=2, chunks_before=3, chunks_after=3)
    once = reference.sorted_chunk_attention(*tensors, chunk_length=2, chunks_before=2, chunks_after=1)
    assert not torch.allclose(wide, once)
