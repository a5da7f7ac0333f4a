// ArgmaxHash kernel: see argmax_hash.h for the scheme.
#include "cuda/argmax_hash.h"

#include <algorithm>

#include "cuda/device.cuh"

namespace bucketrt::cuda {

namespace {

constexpr int kRows = 16;      // rows of one (b, h) per tile
constexpr int kThreads = 128;  // one column of the round per thread
constexpr int kChunk = 128;    // elements of d staged in shared memory at a time
// Valid sizes are each >= 2 and multiply to less than 2^31 - 1: at most 30 factors.
constexpr int kMaxFactors = 30;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

struct Args {
  const int32_t* mask;
  const void* vector;
  const void* projection;
  const int32_t* sizes;
  int32_t* buckets;
  int64_t heads;      // H
  int64_t length;     // N
  int64_t dim;        // D
  int64_t columns;    // C
  int64_t num_hash;   // rounds
  int64_t factors;    // F
  int64_t row_tiles;  // ceil(N / kRows)
  int64_t tiles;      // B * H * row_tiles
};

// The key of column y's better candidate: y at index i, or -y at index half + i when strictly
// larger (y < 0). Keys order as the reference's argmax prefers: a NaN above every number, then the
// larger value, then the lower index (+0 and -0 tie). 0 is below every key.
__device__ __forceinline__ unsigned long long CandidateKey(float y, int64_t i, int64_t half) {
  float v = y;
  int64_t index = i;
  if (y < 0.0f) {
    v = -y;
    index = half + i;
  }
  uint32_t ordered;
  if (isnan(v)) {
    ordered = 0xffffffffu;
  } else if (v == 0.0f) {
    ordered = 0x80000000u;
  } else {
    ordered = __float_as_uint(v) | 0x80000000u;  // v > 0: its bits order as its value
  }
  return (static_cast<unsigned long long>(ordered) << 32) | (0xffffffffu - static_cast<uint32_t>(index));
}

__device__ __forceinline__ unsigned long long WarpMax(unsigned long long v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    const unsigned long long other = __shfl_xor_sync(kFullMask, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

// The factor whose columns [first[f], first[f + 1]) of the round hold column j (j < first[F]).
__device__ __forceinline__ int FactorOf(const int64_t* first, int64_t factors, int64_t j) {
  int f = 0;
  while (f + 1 < factors && j >= first[f + 1]) ++f;
  return f;
}

template <class T>
__global__ void __launch_bounds__(kThreads) ArgmaxHashKernel(Args a) {
  __shared__ float xs[kRows][kChunk];
  __shared__ unsigned long long best[kRows][kMaxFactors];  // per row and factor: the best key
  __shared__ int64_t first[kMaxFactors + 1];                // first column of each factor in a round
  __shared__ int64_t stride[kMaxFactors];                   // prod of the sizes before each factor
  __shared__ int64_t padding;
  __shared__ int valid;
  // docs/ops.md (catalogue.NONFINITE_PROJECTION_RULE): a row or column holding a NaN or an Inf makes
  // y NaN (the argmax's maximum), whatever the sum. Rows are flagged as staged, columns as read.
  __shared__ int row_nonfinite[kRows];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & (kWarp - 1);
  const T* vector = static_cast<const T*>(a.vector);
  const T* projection = static_cast<const T*>(a.projection);

  // The sizes, checked as cpu::CheckBucketSizes checks them (its words come from the host later).
  if (tid == 0) {
    bool ok = a.factors >= 1 && a.factors <= kMaxFactors;
    int64_t total = 1, sum = 0;
    for (int f = 0; ok && f < a.factors; ++f) {
      const int64_t size = a.sizes[f];
      if (size < 2 || size % 2 != 0) {
        ok = false;
        break;
      }
      first[f] = sum / 2;
      stride[f] = total;
      total *= size;  // both below 2^31: no overflow
      if (total >= (int64_t{1} << 31) - 1) {
        ok = false;
        break;
      }
      sum += size;
    }
    if (ok) {
      first[a.factors] = sum / 2;
      ok = a.columns == a.num_hash * (sum / 2);
    }
    padding = total;
    valid = ok ? 1 : 0;
  }
  __syncthreads();
  const int64_t F = a.factors;
  const int64_t S = valid ? first[F] : 0;  // columns per round

  for (int64_t tile = blockIdx.x; tile < a.tiles; tile += gridDim.x) {
    const int64_t bh = tile / a.row_tiles;  // b * H + h
    const int64_t n0 = (tile % a.row_tiles) * kRows;
    const int64_t b = bh / a.heads, h = bh % a.heads;
    int32_t* out = a.buckets + bh * a.num_hash * a.length;  // [round, n]
    if (!valid) {  // bad sizes (reported by ArgmaxHashReportError): bucket 0 everywhere
      for (int64_t i = tid; i < a.num_hash * kRows; i += kThreads) {
        const int64_t n = n0 + i % kRows;
        if (n < a.length) out[(i / kRows) * a.length + n] = 0;
      }
      continue;
    }
    const T* x = vector + bh * a.length * a.dim;
    const T* proj = projection + h * a.dim * a.columns;
    // Cleared after the previous tile's last barrier; staging sets it after the next one.
    if (tid < kRows) row_nonfinite[tid] = 0;

    for (int64_t k = 0; k < a.num_hash; ++k) {
      for (int i = tid; i < kRows * kMaxFactors; i += kThreads) (&best[0][0])[i] = 0ull;
      for (int64_t j0 = 0; j0 < S; j0 += kThreads) {
        const int64_t j = j0 + tid;  // this thread's column of the round
        const bool active = j < S;
        const int64_t col = k * S + (active ? j : 0);
        float acc[kRows];
        bool column_nonfinite = false;
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
        for (int64_t d0 = 0; d0 < a.dim; d0 += kChunk) {
          const int dn = static_cast<int>(Min64(kChunk, a.dim - d0));
          __syncthreads();  // the previous chunk is read (and best cleared) everywhere
          for (int i = tid; i < kRows * kChunk; i += kThreads) {
            const int r = i / kChunk, dd = i % kChunk;
            const int64_t n = n0 + r;
            xs[r][dd] = (n < a.length && dd < dn) ? LoadFloat(x, n * a.dim + d0 + dd) : 0.0f;
            if (!isfinite(xs[r][dd])) row_nonfinite[r] = 1;  // every writer writes 1
          }
          __syncthreads();
          if (active) {
            // y = sum_d x[d] * p[d], d in order, multiply and add rounded separately (no FMA): the
            // CPU kernel's arithmetic.
            for (int dd = 0; dd < dn; ++dd) {
              const float p = LoadFloat(proj, (d0 + dd) * a.columns + col);
              column_nonfinite |= !isfinite(p);
#pragma unroll
              for (int r = 0; r < kRows; ++r) acc[r] = __fadd_rn(acc[r], __fmul_rn(xs[r][dd], p));
            }
          }
        }
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (column_nonfinite || row_nonfinite[r]) acc[r] = __int_as_float(0x7fc00000);  // NaN
        }
        // Offer each row's candidate to its factor's best: reduced across the warp when the warp's
        // live columns all belong to one factor (the common case), else lane by lane.
        const int64_t w0 = j0 + (tid & ~(kWarp - 1));  // the warp's first column (uniform)
        if (w0 < S) {
          const int64_t w1 = Min64(w0 + kWarp - 1, S - 1);
          const int f0 = FactorOf(first, F, w0);
          const int f = active ? FactorOf(first, F, j) : f0;
          const int64_t half = first[f + 1] - first[f];
          if (f0 == FactorOf(first, F, w1)) {
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
              const unsigned long long key = WarpMax(active ? CandidateKey(acc[r], j - first[f], half) : 0ull);
              if (lane == 0) atomicMax(&best[r][f0], key);
            }
          } else if (active) {
#pragma unroll
            for (int r = 0; r < kRows; ++r) atomicMax(&best[r][f], CandidateKey(acc[r], j - first[f], half));
          }
        }
      }
      __syncthreads();  // every candidate is in
      if (tid < kRows) {
        const int64_t n = n0 + tid;
        if (n < a.length) {
          int64_t bucket = padding;
          if (a.mask[b * a.length + n] != 0) {
            bucket = 0;
            for (int f = 0; f < F; ++f) {
              const uint32_t digit = 0xffffffffu - static_cast<uint32_t>(best[tid][f] & 0xffffffffull);
              bucket += stride[f] * digit;
            }
          }
          out[k * a.length + n] = static_cast<int32_t>(bucket);
        }
      }
      __syncthreads();  // best is read before the next round clears it
    }
  }
}

}  // namespace

size_t ArgmaxHashWorkspaceBytes(const cpu::ArgmaxHashShape& /*shape*/) { return 0; }

cudaError_t ArgmaxHash(const cpu::ArgmaxHashShape& shape, FloatType type, const int32_t* mask, const void* vector,
                       const void* projection, const int32_t* bucket_sizes, int32_t* buckets, void* /*workspace*/,
                       size_t /*workspace_bytes*/, cudaStream_t stream) {
  Args a{mask,          vector,         projection, bucket_sizes, buckets,       shape.heads, shape.length,
         shape.dim,     shape.columns,  shape.num_hash, shape.factors, 0, 0};
  a.row_tiles = (shape.length + kRows - 1) / kRows;
  a.tiles = shape.batch * shape.heads * a.row_tiles;
  if (a.tiles == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(std::min(a.tiles, kMaxBlocks))), block(kThreads);
  if (type == FloatType::kFloat16) {
    ArgmaxHashKernel<__half><<<grid, block, 0, stream>>>(a);
  } else {
    ArgmaxHashKernel<float><<<grid, block, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

cudaError_t EnqueueArgmaxHashReport(const cpu::ArgmaxHashShape& shape, const int32_t* bucket_sizes, void* report,
                                    cudaStream_t stream) {
  const size_t bytes = ArgmaxHashReportBytes(shape);
  return bytes == 0 ? cudaSuccess : cudaMemcpyAsync(report, bucket_sizes, bytes, cudaMemcpyDeviceToHost, stream);
}

std::string ArgmaxHashReportError(const cpu::ArgmaxHashShape& shape, const void* report) {
  return cpu::CheckBucketSizes(static_cast<const int32_t*>(report), shape.factors, shape.num_hash, shape.columns);
}

}  // namespace bucketrt::cuda
