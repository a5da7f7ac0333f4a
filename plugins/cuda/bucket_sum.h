// BucketSum on the GPU: a plain launcher (device pointers, the shape, a caller-provided workspace,
// a stream). Semantics: src/bucketrt/ops/reference.py `bucket_sum`: per group g, sum[g, c, :] adds
// the rows n with bucket[g, n] == c in order n = 0, 1, ..., weight_sum[g, c] likewise.
//
// Order-exact, without atomics on floats: the rows' (group, bucket) keys are radix-sorted (stable,
// so rows keep their order n within a bucket); then one thread per (g, c, column), the weights being
// one more column, finds its bucket's run by binary search in the group's sorted rows and sums them
// in that order, starting from 0: the CPU kernel's and the reference's additions, so float32 sums
// are identical to theirs bit for bit (float16: widened exactly, summed in float32, rounded once).
// Deterministic from run to run. Work is the input's size plus a binary search per output element.
//
// Ids outside [0, num_buckets) are an input error: such rows join no bucket (no out-of-bounds
// access whatever the ids), and the launch records the ids' minimum and maximum in the workspace,
// which EnqueueBucketSumReport copies out and BucketSumReportError words as the CPU kernel does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/bucket_sum.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

struct BucketSumCudaPlan {
  int bucket_bits = 0;          // bits of a key's bucket field (ids 0 .. min(C, 2^31), the last for bad ids)
  int key_bits = 0;             // bits of a whole key: group bits + bucket bits
  size_t sort_temp_bytes = 0;   // the radix sort's temporary storage
  size_t workspace_bytes = 0;   // what the caller allocates (device memory, any content)
};

// Plans a launch from the shape alone; the radix sort's temporary storage needs a current CUDA
// device. Returns "" or the error.
std::string PlanBucketSumCuda(const cpu::BucketSumShape& shape, BucketSumCudaPlan* plan);

// The workspace bytes PlanBucketSumCuda gives for `shape` (0 if planning fails).
size_t BucketSumWorkspaceBytes(const cpu::BucketSumShape& shape);

// Enqueues BucketSum on `stream`. `weight`, `vector`, `sum` and `weight_sum` are T (`type`)
// tensors; all tensors dense row-major on the device; `workspace` holds plan.workspace_bytes.
// Returns the first launch error, if any.
cudaError_t BucketSum(const cpu::BucketSumShape& shape, const BucketSumCudaPlan& plan, FloatType type,
                      const int32_t* bucket, const void* weight, const void* vector, void* sum, void* weight_sum,
                      void* workspace, size_t workspace_bytes, cudaStream_t stream);

// The id check's report (cuda/ops.h: Report): the ids' range as the launch records it, two uint32.
inline constexpr size_t kBucketSumReportBytes = 2 * sizeof(uint32_t);

// After BucketSum on `stream` with the same workspace: enqueues the copy of the id range into
// `report` (pinned host memory; nothing for an empty input). Never waits.
cudaError_t EnqueueBucketSumReport(const cpu::BucketSumShape& shape, const void* workspace, void* report,
                                   cudaStream_t stream);

// Host only, once the report has landed: "" when every id was in [0, num_buckets), else
// cpu::BucketRangeError's words.
std::string BucketSumReportError(const cpu::BucketSumShape& shape, const void* report);

}  // namespace bucketrt::cuda
