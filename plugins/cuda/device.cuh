// Device helpers shared by the kernels (included by .cu files only).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace bucketrt::cuda {

inline constexpr int kWarp = 32;
inline constexpr unsigned kFullMask = 0xffffffffu;  // every lane of a warp, for the *_sync intrinsics

// Loads element i of a T tensor as float32 (float16 widens exactly).
__device__ __forceinline__ float LoadFloat(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float LoadFloat(const __half* p, int64_t i) { return __half2float(p[i]); }

// Stores a float32 result into a T tensor (float16: rounded to nearest even).
__device__ __forceinline__ void StoreFloat(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void StoreFloat(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }

// A grid-stride loop's first index and stride, in 64 bits (sizes may pass 2^31 elements).
__device__ __forceinline__ int64_t GlobalThread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridThreads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__host__ __device__ __forceinline__ int64_t Min64(int64_t a, int64_t b) { return a < b ? a : b; }

}  // namespace bucketrt::cuda
