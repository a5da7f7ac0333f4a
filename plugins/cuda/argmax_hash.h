// ArgmaxHash on the GPU: a plain launcher (device pointers, the shape, a stream). Semantics:
// src/bucketrt/ops/reference.py `argmax_hash`; the arithmetic is the CPU kernel's (cpu/argmax_hash.cc).
//
// A block takes 16 rows of one (b, h) and, round by round, tiles of 128 columns of the round, one
// column per thread: y = x . projection[h] summed over d in order, multiply and add rounded
// separately (the CPU kernel's float operations in its order, so the buckets equal the CPU
// kernel's bit for bit, and the reference's except where two candidates lie within rounding of
// each other). Each column j of factor f (half size h_f) offers its better candidate, y_j (index
// i) or -y_j (index h_f + i), as a 64-bit key (value, then the lower index) whose maximum is the
// reference's argmax: the first maximum, a NaN above every number (the first NaN). Keys meet in
// shared memory with warp reductions and atomicMax, an order-free reduction, so the result is
// deterministic.
//
// bucket_sizes lives on the device like every input: each block reads and checks it (the checks of
// cpu::CheckBucketSizes). When they fail the kernel writes bucket 0 everywhere and
// ArgmaxHashReportError, over the sizes EnqueueArgmaxHashReport copied out, reports the CPU kernel's error.
// float16 inputs are widened exactly and hashed in float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/argmax_hash.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

// Workspace bytes the launch needs (none).
size_t ArgmaxHashWorkspaceBytes(const cpu::ArgmaxHashShape& shape);

// Enqueues ArgmaxHash on `stream`. `vector` and `projection` are T (`type`) tensors, `bucket_sizes`
// holds shape.factors int32 on the device; all tensors dense row-major on the device. Returns the
// launch error, if any (cudaSuccess otherwise).
cudaError_t ArgmaxHash(const cpu::ArgmaxHashShape& shape, FloatType type, const int32_t* mask, const void* vector,
                       const void* projection, const int32_t* bucket_sizes, int32_t* buckets, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream);

// The data check's report (cuda/ops.h: Report): bucket_sizes, shape.factors int32.
inline size_t ArgmaxHashReportBytes(const cpu::ArgmaxHashShape& shape) {
  return static_cast<size_t>(shape.factors) * sizeof(int32_t);
}

// Enqueues the copy of bucket_sizes into `report` (pinned host memory). Never waits.
cudaError_t EnqueueArgmaxHashReport(const cpu::ArgmaxHashShape& shape, const int32_t* bucket_sizes, void* report,
                                    cudaStream_t stream);

// Host only, once the report has landed: "" when the sizes pass cpu::CheckBucketSizes, else its error.
std::string ArgmaxHashReportError(const cpu::ArgmaxHashShape& shape, const void* report);

}  // namespace bucketrt::cuda
