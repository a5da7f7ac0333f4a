// MaskedAttention on the GPU: a plain launcher (device pointers, the shape, a caller-provided
// workspace, a stream). Semantics: src/bucketrt/ops/reference.py `masked_attention`; the shape checks
// are the CPU kernel's (cpu::CheckMaskedAttentionShape). Two kernels:
//
//  1. survey: one warp per (b, s) finds the first and last key the query attends (scanning the mask
//     row from each end, so a causal or sliding-window row reads little of it) into the workspace.
//  2. attend: one block per (b, key/value head n, tile of 32 rows), a row being one (query s, head of
//     n's group) pair in (s, head) order: the group's heads share every key and value tile, and a
//     decode step (S = 1) fills a tile with its heads. The block reads only its span, the keys from
//     its rows' first attended key to their last, in tiles of 32 keys (D in chunks of 128, the
//     queries kept in shared memory when D <= 128) and goes over them twice. Pass one: each row's
//     running max of the attended logits (q · k) * scale, starting from the sink, and its sum of
//     exp(logit - max) rescaled as the max grows (a warp per row, a lane per key). Pass two
//     recomputes the logits (the same operations in the same order, so the same floats) and adds
//     p · value for the attended keys with p = exp(logit - max) / (sum + exp(sink - max)) != 0
//     (a key not attended or of weight exactly 0 is skipped, never multiplied: no 0 * Inf), value
//     dims in chunks of 128. A row whose max is NaN, +Inf or -Inf (a NaN or +Inf logit or sink, or
//     every attended logit and the sink -Inf) is NaN, as the reference's arithmetic makes it; a row
//     with no attended key is 0.
// All arithmetic in float32: float16 inputs widened exactly, `out` rounded once. No atomics: results
// are bitwise reproducible run to run.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/masked_attention.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

// Workspace bytes the launch needs (shape only): each (b, s)'s first and last attended key, int32.
size_t MaskedAttentionWorkspaceBytes(const cpu::MaskedAttentionShape& shape);

// Enqueues MaskedAttention on `stream`. `shape` must have passed cpu::CheckMaskedAttentionShape.
// `query` [B, H, S, D], `key` [B, N, T, D], `value` [B, N, T, Dv], `sinks` [H] and `out` [B, S, H, Dv]
// are T (`type`) tensors, `mask` [B, S, T] int32; all dense row-major on the device. Returns the
// first launch error, if any.
cudaError_t MaskedAttention(const cpu::MaskedAttentionShape& shape, FloatType type, const void* query, const void* key,
                            const void* value, const int32_t* mask, const void* sinks, void* out, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream);

}  // namespace bucketrt::cuda
