"""LSG self-attention (local + sparse + global), written for export with dynamic shapes.

Per layer, with g global tokens in front of T text tokens (T a multiple of block_size b, the model
pads): the global queries attend to every key; each block of b text queries attends to the global
keys, its three neighbouring blocks (previous, own, next: "local") and 2*sparse_block_size "sparse"
tokens - a compressed view of the sequence outside those three blocks (left and right of them),
built by the config's sparsity_type. Masked keys carry finfo.min like the original.

No Python branch depends on the sequence length: for T <= 2b the original switches to full
attention; here the local window then already covers every key once, and the sparse window
falls outside the sequence (every sparse slot masked), which is exactly full attention. The
`short` guard below masks the sparse slots explicitly as well, so this holds by construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bucketrt.ops.catalogue import ARGMAX_HASH, BUCKET_SUM
from bucketrt.ops.dispatch import call

from .config import LSGSettings


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """[..., T, d] -> [..., T/size, size, d]."""
    return x.unflatten(-2, (-1, size))


def _local_windows(x: torch.Tensor, block: int, pad_value: float) -> torch.Tensor:
    """[..., T, d] -> [..., nb, 3*block, d]: for block i, positions [(i-1)*block, (i+2)*block)."""
    padded = F.pad(x.transpose(-1, -2), (block, block), value=pad_value).transpose(-1, -2)
    parts = _blocks(padded, block)  # [..., nb+2, block, d]
    nb = parts.shape[-3] - 2
    return torch.cat((parts[..., 0:nb, :, :], parts[..., 1 : nb + 1, :, :], parts[..., 2 : nb + 2, :, :]), dim=-2)


class LSGSelfAttention(nn.Module):
    """Replaces BERT/RoBERTa's self-attention; keeps its query/key/value projections (same names)."""

    def __init__(self, settings: LSGSettings, query: nn.Linear, key: nn.Linear, value: nn.Linear, projections=()):
        super().__init__()
        self.settings = settings
        self.query, self.key, self.value = query, key, value
        self.set_lsh_projections(projections)
        s = settings
        if s.has_sparse:
            # Where the sparse window of block i starts, left and right, in sparse positions relative
            # to i * stride: the original's pad-and-unfold arithmetic, reduced to two offsets.
            stride, size = s.sparse_stride, 6 * s.sparse_block_size
            odd = stride % 2
            pad = (size - stride) // 2 + odd
            centre = (size - 3 * s.block_size // s.sparsity_factor) // 2 + odd
            self.left_offset = centre - s.sparse_block_size - pad
            self.right_offset = size - (centre + odd) - pad

    def set_lsh_projections(self, projections) -> None:
        """lsh only: one [heads, head_dim, buckets // 2] projection per round, drawn once (see
        modeling.sample_lsh_projections) and stored with the model, so the export is deterministic.
        Not in the state dict: they come from the export seed, not from the checkpoint."""
        for index in range(getattr(self, "num_projections", 0)):
            delattr(self, f"lsh_projection_{index}")
        for index, projection in enumerate(projections):
            self.register_buffer(f"lsh_projection_{index}", projection, persistent=False)
        self.num_projections = len(projections)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.settings.num_heads, self.settings.head_dim)).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """hidden [n, g+T, hidden]; key_mask [n, T] additive (0 or finfo.min) over the text tokens."""
        s = self.settings
        g, block = s.num_global_tokens, s.block_size
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        scale = 1.0 / math.sqrt(s.head_dim)
        minimum = torch.finfo(q.dtype).min
        n = q.shape[0]

        # Global queries: plain attention over all keys (global keys are never masked).
        full_mask = F.pad(key_mask, (g, 0), value=0.0)[:, None, None, :]
        global_context = torch.softmax(q[:, :, :g] @ k.transpose(-1, -2) * scale + full_mask, dim=-1) @ v

        qt, kt, vt = q[:, :, g:], k[:, :, g:], v[:, :, g:]
        keys = [k[:, :, None, :g].expand(-1, -1, qt.shape[2] // block, -1, -1)]
        values = [v[:, :, None, :g].expand_as(keys[0])]
        zeros = key_mask.new_zeros(n, 1, 1, 1, 1).expand(-1, -1, keys[0].shape[2], 1, g)
        masks = [zeros]

        if s.has_sparse:
            sk, sv, sm = self.sparse_tokens(qt, kt, vt, key_mask)  # [n,h,S,d] x2, [n,h|1,S]
            sk, sv, sm = self._sparse_windows(sk, sv, sm, qt.shape[2] // block)
            keys.append(sk)
            values.append(sv)
            masks.append(sm)

        keys.append(_local_windows(kt, block, 0.0))
        values.append(_local_windows(vt, block, 0.0))
        masks.append(_local_windows(key_mask[:, None, :, None], block, minimum).transpose(-1, -2))

        keys, values = torch.cat(keys, dim=-2), torch.cat(values, dim=-2)
        heads = s.num_heads
        mask = torch.cat([m.expand(-1, heads, -1, -1, -1) for m in masks], dim=-1)
        scores = _blocks(qt, block) @ keys.transpose(-1, -2) * scale + mask
        context = (torch.softmax(scores, dim=-1) @ values).flatten(2, 3)
        context = torch.cat((global_context, context), dim=2)
        return context.transpose(1, 2).flatten(2)

    # -- sparse tokens ----------------------------------------------------------------------------

    def _sparse_windows(self, sk, sv, sm, num_blocks):
        """Sparse tokens [.., S, d] -> per block [.., nb, 2*sparse_block_size, d] (left then right)."""
        s = self.settings
        width = s.sparse_block_size
        margin = 6 * width + s.sparse_stride  # more than any offset reaches past either end
        minimum = torch.finfo(sk.dtype).min
        sk = F.pad(sk, (0, 0, margin, margin))
        sv = F.pad(sv, (0, 0, margin, margin))
        sm = F.pad(sm, (margin, margin), value=minimum)
        starts = torch.arange(num_blocks, device=sk.device) * s.sparse_stride + margin
        span = torch.arange(width, device=sk.device)
        index = torch.cat(
            ((starts[:, None] + self.left_offset) + span, (starts[:, None] + self.right_offset) + span), dim=-1
        )  # [nb, 2*width]
        flat = index.reshape(-1)
        sk = sk.index_select(2, flat).unflatten(2, index.shape)
        sv = sv.index_select(2, flat).unflatten(2, index.shape)
        sm = sm.index_select(2, flat).unflatten(2, index.shape)[:, :, :, None, :]
        # Short sequences (<= 2 blocks): full attention in the original. The windows lie outside the
        # sequence then (see the module doc); a tensor condition, not a Python branch, states it for
        # every geometry without baking the length into an export.
        short = torch.arange(num_blocks, device=sk.device)[-1] < 2
        sm = torch.where(short, torch.full_like(sm, minimum), sm)
        return sk, sv, sm

    def sparse_tokens(self, q, k, v, key_mask):
        """The compressed sequence: keys, values [n, h, S, d] and additive mask [n, 1|h, S]."""
        s = self.settings
        mask = key_mask[:, None, :]  # [n, 1, T]
        if s.sparsity_factor == 1:
            return k, v, mask
        kind = s.sparsity_type
        if kind == "stride":
            heads = torch.arange(s.num_heads, device=k.device)
            index = torch.arange(k.shape[2] // s.sparsity_factor, device=k.device) * s.sparsity_factor
            return self._gather(k, v, mask, index[None, :] + (heads % s.sparsity_factor)[:, None])
        if kind == "block_stride":
            per = s.sparse_stride
            heads = torch.arange(s.num_heads, device=k.device)
            within = (torch.arange(per, device=k.device)[None, :] + heads[:, None] * per) % s.block_size  # [h, per]
            blocks = torch.arange(k.shape[2] // s.block_size, device=k.device) * s.block_size
            index = (blocks[None, :, None] + within[:, None, :]).flatten(1)  # [h, nb*per]
            return self._gather(k, v, mask, index)
        if kind == "norm":
            return self._norm(k, v, mask)
        if kind == "pooling":
            return self._pooling(k, v, mask)
        if kind == "lsh":
            if s.sparsity_factor == s.sparse_block_size:
                return self._bos_pooling(q, k, v, mask)  # the original's own special case
            return self._lsh(k, v, mask)
        return self._bos_pooling(q, k, v, mask)

    @staticmethod
    def _gather(k, v, mask, index):
        """Per-head token selection; index [h, S] (or [n, h, S])."""
        if index.dim() == 2:
            index = index[None].expand(k.shape[0], -1, -1)
        gather = index[..., None].expand(-1, -1, -1, k.shape[-1])
        picked_mask = mask.expand(-1, k.shape[1], -1).gather(2, index)
        return k.gather(2, gather), v.gather(2, gather), picked_mask

    def _norm(self, k, v, mask):
        """In every chunk, the block_size / sparsity_factor keys of largest norm (masked keys count 0)."""
        s = self.settings
        keep = s.chunk // s.sparsity_factor
        norm = k.norm(dim=-1) * (mask == 0)  # [n, h, T]
        chunks = _blocks(norm[..., None], s.chunk)[..., 0]  # [n, h, c, chunk]
        # The original keeps its argsort's tail, i.e. ascending norm: top-k then reversed.
        top = chunks.topk(keep, dim=-1).indices.flip(-1)
        offsets = torch.arange(chunks.shape[2], device=k.device)[:, None] * s.chunk
        return self._gather(k, v, mask, (top + offsets).flatten(2))

    def _pooling(self, k, v, mask):
        """Mean of every sparsity_factor consecutive unmasked tokens; a group with none is masked."""
        s = self.settings
        valid = (mask == 0).to(k.dtype)[..., None]  # [n, 1, T, 1]
        count = _blocks(valid, s.sparsity_factor).sum(-2)  # [n, 1, S, 1]
        pooled_k = _blocks(k * valid, s.sparsity_factor).sum(-2) / (count + 1e-6)
        pooled_v = _blocks(v * valid, s.sparsity_factor).sum(-2) / (count + 1e-6)
        pooled_mask = (1.0 - count.clamp(0, 1))[..., 0] * torch.finfo(k.dtype).min
        return pooled_k, pooled_v, pooled_mask

    def _bos_pooling(self, q, k, v, mask):
        """Groups of sparsity_factor tokens pooled by the first text query's attention over them."""
        s = self.settings
        group = s.sparsity_factor
        kb, vb = _blocks(k, group), _blocks(v, group)  # [n, h, S, f, d]
        scores = (kb @ q[:, :, :1, None, :].transpose(-1, -2))[..., 0] / math.sqrt(s.head_dim)  # [n, h, S, f]
        weights = torch.softmax(scores + _blocks(mask[..., None], group)[..., 0], dim=-1)[..., None, :]
        pooled_k, pooled_v = (weights @ kb)[..., 0, :], (weights @ vb)[..., 0, :]
        # The original averages the group's finfo.min mask values, which overflows to -inf for a
        # fully masked group and is then reset to 0 like any other: the pooled mask is all zeros.
        return pooled_k, pooled_v, torch.zeros_like(pooled_k[..., 0])

    def _lsh(self, k, v, mask):
        """Keys hashed into buckets chunk by chunk (bucketrt ops ArgmaxHash and BucketSum); each
        round merges by bucket, the last one into chunk / sparsity_factor buckets; the result is
        the mean of each bucket's keys and values, a bucket with no unmasked key is masked."""
        s = self.settings
        n, h, _, d = k.shape
        dtype = k.dtype
        # Hash and merge in float32 whatever the model's precision: sums over many keys overflow
        # half precision, and the ops are float32.
        valid = (mask == 0).float()[..., None].expand(-1, h, -1, -1)  # [n, h, T, 1]
        kv = torch.cat((k.float(), v.float()), dim=-1) * valid
        weight = valid[..., 0]
        rows = s.chunk
        kv = _blocks(kv, rows)  # [n, h, c, chunk, 2d]
        weight = weight.unflatten(-1, (-1, rows))  # [n, h, c, chunk]
        chunks = kv.shape[2]
        if self.num_projections != len(s.lsh_rounds):
            raise RuntimeError("lsh projections were not sampled: call modeling.set_lsh_projections first")
        for index, buckets in enumerate(s.lsh_rounds):
            projection = getattr(self, f"lsh_projection_{index}").float()
            keys = kv[..., :d]
            direction = F.normalize(keys, dim=-1) * weight.clamp(0, 1)[..., None]
            # ArgmaxHash (Reformer's hashing, one round, one factor of 2 * (buckets // 2) buckets).
            # No padding bucket: an empty or masked row is a zero vector, which lands in bucket 0 as
            # in the original, and adds nothing to it.
            everything = torch.ones(n, chunks * rows, dtype=torch.int32, device=k.device)
            sizes = torch.tensor([2 * (buckets // 2)], dtype=torch.int32, device=k.device)
            bucket = call(ARGMAX_HASH, everything, direction.flatten(2, 3), projection, sizes, num_hash=1)
            bucket = bucket[:, :, 0].unflatten(2, (chunks, rows))
            kv, weight = call(
                BUCKET_SUM, bucket.flatten(0, 2), weight.flatten(0, 2), kv.flatten(0, 2), num_buckets=buckets
            )
            kv = kv.unflatten(0, (n, h, chunks))
            weight = weight.unflatten(0, (n, h, chunks))
            rows = buckets
        # The original divides by (count + 1e-8). Counts are whole numbers, so that is count for a
        # count >= 1 (1e-8 is below float32's rounding there) and 0 / 1e-8 = 0 for an empty bucket:
        # clamp_min(1) is the same to the bit, and an ONNX optimiser cannot fold it away.
        kv = kv / weight.clamp_min(1.0)[..., None]
        merged_mask = (1.0 - weight.clamp(0, 1)) * torch.finfo(torch.float32).min
        kv = kv.flatten(2, 3).to(dtype)
        merged_mask = merged_mask.flatten(2).clamp_min(torch.finfo(dtype).min).to(dtype)
        return kv[..., :d], kv[..., d:], merged_mask
