// LSHCumulation on the GPU: plain launchers (device pointers, the shape, a caller-provided
// workspace, a stream). Semantics: src/bucketrt/ops/reference.py `lsh_cumulation`:
//
//   out[b,q,:] = qmask[b,q] * (1/m) * sum_h table_h[b][qh[b,q,h]],
//   table_h[b][c] = sum_k kmask[b,k] * [kh[b,k,h] == c] * value[b,k,:]
//
// Two ways, both accumulating in float32 (float16 values widened exactly, the output rounded once):
//  * dense (the fast default): per pass over a slice of batch rows, the m hash tables of each row
//    ([m, capacity, D] floats in the workspace) are cleared, every live key adds its value to its
//    bucket in each table with atomics (float4 atomics on sm_90 when D % 4 == 0), and every query
//    sums its m buckets in hash order. Atomics add in whatever order the hardware takes them, so
//    bucket sums may differ in the last bits from run to run. Taken while one batch row's tables
//    fit kDenseRowBytes (e.g. m = 64, capacity 512, D = 64: 8 MiB).
//  * sorted (deterministic = 1, or tables too large for the dense way): per slice of (b, h)
//    segments, the live keys' (segment, code) pairs are radix-sorted (stable: key order kept within
//    a bucket), each bucket's values are summed in key order by one thread per column, and each
//    query finds its bucket by binary search. No atomics on floats: the results are bitwise the
//    same from run to run. Memory grows with the keys, not the capacity.
// Codes of live rows outside [0, capacity) are an input error: the kernels clamp every code into
// their tables (no out-of-bounds access whatever the input) and the launch records the first bad
// code in the workspace, which LshCumulationReport copies out and LshCumulationReportError words as the CPU kernel does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/lsh_cumulation.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

struct LshCumulationCudaPlan {
  bool sorted = false;          // the sort-based way (deterministic, or tables too large)
  int64_t slice_rows = 0;       // dense: batch rows per pass
  size_t table_bytes = 0;       // dense: the tables' budget (slice_rows rows of m tables fit)
  int64_t slice_segments = 0;   // sorted: (b, h) segments per pass
  int64_t slice_entries = 0;    // sorted: entries the buffers hold (slice_segments * Nk fit)
  size_t entry_region_bytes = 0;  // sorted: the entry buffers' region
  int code_bits = 0;            // sorted: bits of a code in a sort key (log2 capacity, at most 31)
  int key_bits = 0;             // sorted: bits of a whole sort key
  size_t sort_temp_bytes = 0;   // sorted: the radix sort's temporary storage
  size_t workspace_bytes = 0;   // what the caller allocates (device memory, any content)
};

// Plans a launch: the way, its slices and the workspace size, from the shape alone. The sorted way
// asks the radix sort for its temporary storage, which needs a current CUDA device. Returns "" or
// the error (the CPU kernel's words for shared checks; the attributes are ResolveAttributes').
std::string PlanLshCumulationCuda(const cpu::LshCumulationShape& shape, bool deterministic,
                                  LshCumulationCudaPlan* plan);

// The workspace bytes PlanLshCumulationCuda gives for `shape` (0 if planning fails).
size_t LshCumulationWorkspaceBytes(const cpu::LshCumulationShape& shape, bool deterministic);

// The most workspace any shape with every dim at most `high`'s and D at least `low_dim` needs
// (every deterministic mode; dense or sorted when not): TensorRT's getWorkspaceSize for an
// optimisation profile. "" or the error of planning `high`. Needs a current CUDA device, as the
// plan does.
std::string LshCumulationWorkspaceBound(const cpu::LshCumulationShape& high, int64_t low_dim, bool deterministic,
                                        size_t* bytes);

// Enqueues LSHCumulation on `stream`. `value` and `out` are T (`type`) tensors; all tensors dense
// row-major on the device; `workspace` holds at least plan.workspace_bytes. Returns the first
// launch error, if any.
cudaError_t LshCumulation(const cpu::LshCumulationShape& shape, const LshCumulationCudaPlan& plan, FloatType type,
                          const int32_t* query_mask, const int32_t* query_hash, const int32_t* key_mask,
                          const int32_t* key_hash, const void* value, void* out, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream);

// The code check's report (cuda/ops.h: Report): the first bad live code's flat index (query_hash
// codes first, then key_hash's; ~0 when none) and the code itself.
struct LshCumulationReport {
  unsigned long long first_bad;
  int32_t code;
  int32_t unused;
};

// After LshCumulation on `stream` with the same workspace: enqueues (one thread) the copy of the
// check into `report`, host memory the device can write (pinned). Never waits.
cudaError_t EnqueueLshCumulationReport(const cpu::LshCumulationShape& shape, const int32_t* query_hash,
                                       const int32_t* key_hash, const void* workspace, LshCumulationReport* report,
                                       cudaStream_t stream);

// Host only, once the report has landed: "" when every live code was in [0, capacity), else the
// first bad one as the CPU kernel reports it (query_hash before key_hash, then flat order).
std::string LshCumulationReportError(const cpu::LshCumulationShape& shape, const LshCumulationReport& report);

}  // namespace bucketrt::cuda
