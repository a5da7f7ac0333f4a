// TopKExperts on the GPU: a plain launcher (device pointers, the shape, a caller-provided workspace,
// a stream). Semantics: src/bucketrt/ops/reference.py `topk_experts`:
//
//   out[t] = sum over the picks j = 0 .. K-1, in that order, of expert_weight[t, j] * y_j, where
//   y_j = down[e] · gating(gate_up[e] · hidden[t] + gate_up_bias[e]) + down_bias[e] for
//   e = expert_index[t, j] < E; a pick of expert E (no expert) adds nothing.
//
// expert_index stays on the device (the host never reads it: no synchronisation). The tokens are
// taken in passes of plan.block_tokens (all of them in one pass unless their intermediates pass
// about 256 MiB); per pass, over its P = tokens x K (token, pick) pairs:
//   1. keys: each pair's expert (an index outside [0, E] counts as E and is recorded, below), and
//      its position in the pass;
//   2. a stable radix sort of the pairs by expert (CUB, cuda/radix_sort.h): each expert's pairs in
//      (token, pick) order, the pairs without an expert last;
//   3. a one-block schedule: each expert's run of sorted pairs (binary searches) cut into row tiles
//      of 64, numbered by a prefix sum; and each pair's sorted row (-1: no expert);
//   4. two grouped GEMMs whose blocks find their (expert, row tile) by binary search over the tiles'
//      prefix sums (grid sized for the worst case, ceil(P / 64) + E row tiles; blocks past the work
//      exit), so the cost follows the pairs, never E:
//        a[i] = gating(hidden[token(i)] · gate_up[e]^T + gate_up_bias[e]) into a [P, F] float32
//        buffer (gate column c and up column F + c of one output in one thread, the gating fused),
//        y[i] = a[i] · down[e]^T + down_bias[e] into a [P, D] float32 buffer;
//   5. per (token, column): out = sum over j in order of weight * y (each product and sum rounded on
//      its own, from 0), rounded once to T.
// The GEMMs are ExpertFFN's tiles: 64 x 64 outputs, 16 of the inner dim at a time through shared
// memory, 4 x 4 outputs per thread, float32 fused multiply-adds in inner-dim order (no TF32, no
// tensor cores); float16 inputs are widened exactly as they are loaded. Each element has one thread
// and one order of operations, whatever the row's place in its tile: no floating-point atomics,
// bitwise reproducible run to run. The gating and activation are reference.py's formulas in
// float32, their clamps by comparisons (a NaN stays NaN, as in torch.clamp).
//
// An expert_index outside [0, E] never makes an access out of bounds: its pair is taken as having
// no expert. The launch records the first such pair (row-major) in the workspace, which
// EnqueueTopKExpertsReport copies out and TopKExpertsReportError words as the CPU kernel does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/top_k_experts.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

struct TopKExpertsCudaPlan {
  int key_bits = 0;              // bits of a sort key: experts 0 .. E (E: no expert)
  int64_t block_tokens = 0;      // tokens per pass
  int64_t buffer_floats = 0;     // the [pairs, F] and [pairs, D] float32 buffers of a pass
  int64_t sort_pairs = 0;        // the pairs the sort's buffers hold: at least a pass's
  size_t sort_temp_bytes = 0;    // the radix sort's temporary storage for sort_pairs
  size_t workspace_bytes = 0;    // what the caller allocates (device memory, any content)
};

// Plans a launch from the shape alone (the op's shape checks first, in the CPU kernel's words); the
// radix sort's temporary storage needs a current CUDA device. The workspace never shrinks when a
// dim grows (the buffers' budget grows with the dims; the passes are cut from it). "" or the error.
std::string PlanTopKExpertsCuda(const cpu::TopKExpertsShape& shape, const cpu::TopKExpertsConfig& config,
                                TopKExpertsCudaPlan* plan);

// Enqueues TopKExperts on `stream`. hidden [T, D], expert_weight [T, K], gate_up [E, G, D],
// gate_up_bias [E, G], down [E, D, F], down_bias [E, D] and out [T, D] are T (`type`) tensors;
// expert_index [T, K] int32; all dense row-major on the device; `workspace` holds
// plan.workspace_bytes. Returns the first launch error, if any.
cudaError_t TopKExperts(const cpu::TopKExpertsShape& shape, const TopKExpertsCudaPlan& plan,
                        const cpu::TopKExpertsConfig& config, FloatType type, const void* hidden,
                        const int32_t* expert_index, const void* expert_weight, const void* gate_up,
                        const void* gate_up_bias, const void* down, const void* down_bias, void* out, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream);

// The index check's report (cuda/ops.h: Report): the first pair whose expert_index is outside
// [0, E], as a flat index into [T, K] (~0 when none), and that index itself.
struct TopKExpertsReport {
  unsigned long long first_bad;
  int32_t index;
  int32_t unused;
};

// After TopKExperts on `stream` with the same workspace: enqueues (one thread) the copy of the check
// into `report`, host memory the device can write (pinned). Never waits.
cudaError_t EnqueueTopKExpertsReport(const int32_t* expert_index, const void* workspace, TopKExpertsReport* report,
                                     cudaStream_t stream);

// Host only, once the report has landed: "" when every expert_index was in [0, E], else the first
// bad one as the CPU kernel reports it (cpu::TopKExpertsIndexError).
std::string TopKExpertsReportError(const cpu::TopKExpertsShape& shape, const TopKExpertsReport& report);

}  // namespace bucketrt::cuda
