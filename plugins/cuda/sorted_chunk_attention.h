// SortedChunkAttention on the GPU: a plain launcher (device pointers, the shape, a caller-provided
// workspace, a stream). Semantics: src/bucketrt/ops/reference.py `sorted_chunk_attention`; the
// checks are the CPU kernel's (cpu::PlanChunkAttention), whose plan
// (plain or not, rounds, chunk, window, chunks per head) the launcher takes. Three kernels:
//
//  1. sort (not for plain attention): one block per (b, h, round) sorts the N positions by bucket
//     with a stable LSD radix sort of 8-bit digits, as many passes as the segment's largest bucket
//     needs (Reformer's few hundred buckets: 1 or 2). Each warp owns a contiguous range of the
//     segment: per-warp digit counts, a block scan, then each warp scatters its range in order, 32
//     entries at a time, ranking equal digits with __match_any_sync. A negative bucket is an input
//     error: it sorts as 0 and is recorded in the workspace (EnqueueChunkAttentionReport).
//  2. attend: one block per (b, h, chunk of the sorted order, tile of 32 of its queries) streams
//     the chunk's window (chunks c - before .. c + after, wrapping across rounds; tiles of 64 keys,
//     D in chunks of 64) twice. Pass one keeps each query's running max and sum of exp(score - max)
//     (l = max + log(sum), the log-sum-exp); pass two recomputes the scores (the same operations in
//     the same order, so the same floats) and accumulates exp(score - l) · value, Reformer's
//     weights: a query whose every key is masked (-1e9) has l == -1e9 in float32 and gives each key
//     weight 1, as the reference does. One round: the output goes straight to `out` (unsorted by
//     the query's position); several: o_r and l_r to the workspace.
//  3. combine (several rounds): per position, sum_r exp(l_r - logsumexp_r l_r) · o_r.
// All arithmetic in float32: float16 query/key/value widened exactly, `out` rounded once. No
// floating-point atomics anywhere: results are bitwise reproducible run to run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/sorted_chunk_attention.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

// cpu::PlanChunkAttention's checks and plan (one worker), plus the CUDA kernel's own limit
// (positions are int32: N < 2^31). "" or the error.
std::string PlanChunkAttentionCuda(const cpu::ChunkAttentionShape& shape, int64_t max_length,
                                   cpu::ChunkAttentionPlan* plan);

// Workspace bytes the launch needs (shape and plan only): the bucket flag, the sorted positions and
// the radix sort's second buffer (unless plain), per-round outputs and log-sum-exps (rounds > 1).
size_t ChunkAttentionWorkspaceBytes(const cpu::ChunkAttentionShape& shape, const cpu::ChunkAttentionPlan& plan);

// Enqueues SortedChunkAttention on `stream`. `query`, `key`, `value` and `out` are T (`type`)
// tensors [B, H, N, D]; mask [B, N]; buckets [B, H, R, N]; all dense row-major on the device.
// Returns the first launch error, if any.
cudaError_t ChunkAttention(const cpu::ChunkAttentionShape& shape, const cpu::ChunkAttentionPlan& plan, FloatType type,
                           const void* query, const void* key, const void* value, const int32_t* mask,
                           const int32_t* buckets, void* out, void* workspace, size_t workspace_bytes,
                           cudaStream_t stream);

// The bucket check's report (cuda/ops.h: Report): the launch's negative-bucket flag, one int32;
// none for plain attention, which reads no bucket.
inline size_t ChunkAttentionReportBytes(const cpu::ChunkAttentionPlan& plan) { return plan.plain ? 0 : sizeof(int32_t); }

// After ChunkAttention on `stream` with the same workspace: enqueues the copy of the flag into
// `report` (pinned host memory). Never waits.
cudaError_t EnqueueChunkAttentionReport(const cpu::ChunkAttentionPlan& plan, const void* workspace, void* report,
                                        cudaStream_t stream);

// Host only, once the report has landed: "" or the CPU kernel's error for a negative bucket.
std::string ChunkAttentionReportError(const cpu::ChunkAttentionPlan& plan, const void* report);

}  // namespace bucketrt::cuda
