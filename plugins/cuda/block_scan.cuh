// A block-wide exclusive prefix sum (included by .cu files only). Hand-written rather than
// cub::BlockScan, whose headers cost each .cu file several seconds of compile time per architecture.
#pragma once

#include "cuda/device.cuh"

namespace bucketrt::cuda {

// Returns the sum of `value` over the threads before this one (threadIdx.x order) and sets *total to
// the sum over the block. Every thread of the block must call it; kThreads == blockDim.x, a multiple
// of 32 up to 1024. `warp_sums` is shared memory for kThreads / 32 values. Synchronises the block
// (also before returning, so that warp_sums may be reused at once).
template <int kThreads, class T>
__device__ __forceinline__ T BlockExclusiveSum(T value, T* total, T* warp_sums) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32 of them");
  constexpr int kWarps = kThreads / kWarp;
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  T inclusive = value;  // within the warp
  for (int offset = 1; offset < 32; offset <<= 1) {
    const T other = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {  // the warps' sums, scanned (inclusive) in place by the first warp
    T sum = lane < kWarps ? warp_sums[lane] : T(0);
    for (int offset = 1; offset < 32; offset <<= 1) {
      const T other = __shfl_up_sync(kFullMask, sum, offset);
      if (lane >= offset) sum += other;
    }
    if (lane < kWarps) warp_sums[lane] = sum;
  }
  __syncthreads();
  const T before = (warp == 0 ? T(0) : warp_sums[warp - 1]) + inclusive - value;
  *total = warp_sums[kWarps - 1];
  __syncthreads();
  return before;
}

}  // namespace bucketrt::cuda
