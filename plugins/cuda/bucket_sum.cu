// BucketSum kernels: see bucket_sum.h for the scheme.
#include "cuda/bucket_sum.h"

#include <cstring>

#include <algorithm>
#include <climits>

#include "bucketrt/validate.h"
#include "cuda/device.cuh"
#include "cuda/radix_sort.h"

namespace bucketrt::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;
constexpr int64_t kIdLimit = int64_t{1} << 31;  // ids are int32: buckets from 2^31 on stay empty

unsigned Blocks(int64_t threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (threads + kThreads - 1) / kThreads)));
}

// The bucket field of a row whose id is outside [0, num_buckets): above every bucket looked up.
__host__ __device__ __forceinline__ int64_t BadIdField(int64_t num_buckets) {
  return num_buckets < kIdLimit ? num_buckets : kIdLimit;
}

// The workspace, carved in a fixed order (Plan counts with base == nullptr).
struct Workspace {
  uint32_t* range = nullptr;  // [0]: min of the ids as ordered unsigned (id ^ 2^31); [1]: min of their complements
  uint64_t* keys_in = nullptr;   // per row: (group, bucket field)
  uint64_t* keys_out = nullptr;  // sorted
  int32_t* rows_in = nullptr;    // per row: n, its index in the group
  int32_t* rows_out = nullptr;   // sorted along
  void* sort_temp = nullptr;
  size_t bytes = 0;
};

Workspace Carve(const cpu::BucketSumShape& s, const BucketSumCudaPlan& p, void* base) {
  WorkspaceLayout layout(base);
  Workspace w;
  const size_t entries = static_cast<size_t>(s.groups * s.rows);
  w.range = layout.Take<uint32_t>(2);
  w.keys_in = layout.Take<uint64_t>(entries);
  w.keys_out = layout.Take<uint64_t>(entries);
  w.rows_in = layout.Take<int32_t>(entries);
  w.rows_out = layout.Take<int32_t>(entries);
  w.sort_temp = layout.Take<unsigned char>(p.sort_temp_bytes);
  w.bytes = layout.bytes();
  return w;
}

// Row i = (g, n): key (g, bucket field), value n; the ids' minimum and maximum into range.
__global__ void MakeKeysKernel(const int32_t* bucket, int64_t rows, int64_t entries, int64_t num_buckets,
                               int bucket_bits, uint64_t* keys, int32_t* row_ids, uint32_t* range) {
  uint32_t lo = 0xffffffffu, lo_complement = 0xffffffffu;
  const uint64_t bad = static_cast<uint64_t>(BadIdField(num_buckets));
  for (int64_t i = GlobalThread(); i < entries; i += GridThreads()) {
    const int32_t id = bucket[i];
    const uint32_t ordered = static_cast<uint32_t>(id) ^ 0x80000000u;  // monotonic in id
    lo = min(lo, ordered);
    lo_complement = min(lo_complement, ~ordered);
    const int64_t g = i / rows;
    const uint64_t field = (id >= 0 && id < num_buckets) ? static_cast<uint64_t>(id) : bad;
    keys[i] = (static_cast<uint64_t>(g) << bucket_bits) | field;
    row_ids[i] = static_cast<int32_t>(i - g * rows);
  }
  // Every lane of the warp gets here (blocks are whole warps): reduce, then one atomic per warp.
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    lo = min(lo, __shfl_xor_sync(kFullMask, lo, offset));
    lo_complement = min(lo_complement, __shfl_xor_sync(kFullMask, lo_complement, offset));
  }
  if ((threadIdx.x & (kWarp - 1)) == 0) {
    atomicMin(&range[0], lo);
    atomicMin(&range[1], lo_complement);
  }
}

struct SumArgs {
  int64_t groups, rows, dim, num_buckets;  // G, N, D, C
  int bucket_bits;
};

// Thread (g, c, column), column D being the weight: sums bucket c's rows of group g in sorted order,
// which is order n (a stable sort), from 0. Group g's rows are the sorted entries g * N .. g * N + N
// (the group is the key's high field).
template <class T>
__global__ void SumsKernel(SumArgs a, const uint64_t* keys, const int32_t* row_ids, const T* weight,
                           const T* vector, T* sum, T* weight_sum) {
  const int64_t columns = a.dim + 1;
  const int64_t total = a.groups * a.num_buckets * columns;
  for (int64_t i = GlobalThread(); i < total; i += GridThreads()) {
    const int64_t gc = i / columns, col = i % columns;  // gc = g * C + c
    const int64_t g = gc / a.num_buckets, c = gc % a.num_buckets;
    float acc = 0.0f;
    if (c < kIdLimit) {
      const uint64_t target = (static_cast<uint64_t>(g) << a.bucket_bits) | static_cast<uint64_t>(c);
      const uint64_t* k = keys + g * a.rows;
      const int32_t* n = row_ids + g * a.rows;
      int64_t p = 0, hi = a.rows;  // p: the first of the group's entries with key >= target
      while (p < hi) {
        const int64_t mid = p + (hi - p) / 2;
        if (k[mid] < target) {
          p = mid + 1;
        } else {
          hi = mid;
        }
      }
      if (col < a.dim) {
        const T* v = vector + g * a.rows * a.dim + col;
        for (; p < a.rows && k[p] == target; ++p) acc = __fadd_rn(acc, LoadFloat(v, static_cast<int64_t>(n[p]) * a.dim));
      } else {
        const T* w = weight + g * a.rows;
        for (; p < a.rows && k[p] == target; ++p) acc = __fadd_rn(acc, LoadFloat(w, static_cast<int64_t>(n[p])));
      }
    }
    if (col < a.dim) {
      StoreFloat(sum, gc * a.dim + col, acc);
    } else {
      StoreFloat(weight_sum, gc, acc);
    }
  }
}

template <class T>
cudaError_t Run(const cpu::BucketSumShape& s, const BucketSumCudaPlan& p, const Workspace& w, const int32_t* bucket,
                const T* weight, const T* vector, T* sum, T* weight_sum, cudaStream_t stream) {
  const int64_t entries = s.groups * s.rows;
  cudaError_t error = cudaMemsetAsync(w.range, 0xff, 2 * sizeof(uint32_t), stream);
  if (error != cudaSuccess) return error;
  MakeKeysKernel<<<Blocks(entries), kThreads, 0, stream>>>(bucket, s.rows, entries, s.num_buckets, p.bucket_bits,
                                                           w.keys_in, w.rows_in, w.range);
  error = cudaGetLastError();
  if (error != cudaSuccess) return error;
  error = RadixSortPairs(w.sort_temp, p.sort_temp_bytes, w.keys_in, w.keys_out, w.rows_in, w.rows_out, entries,
                         p.key_bits, stream);
  if (error != cudaSuccess) return error;
  const SumArgs a{s.groups, s.rows, s.dim, s.num_buckets, p.bucket_bits};
  SumsKernel<T><<<Blocks(s.groups * s.num_buckets * (s.dim + 1)), kThreads, 0, stream>>>(
      a, w.keys_out, w.rows_out, weight, vector, sum, weight_sum);
  return cudaGetLastError();
}

}  // namespace

std::string PlanBucketSumCuda(const cpu::BucketSumShape& s, BucketSumCudaPlan* plan) {
  BucketSumCudaPlan p;
  if (s.rows > INT32_MAX) {
    return Format("BucketSum: input 'bucket' has %lld rows per group; the CUDA kernel indexes rows in 32 bits",
                  static_cast<long long>(s.rows));
  }
  const int64_t bad = BadIdField(s.num_buckets);  // the largest bucket field
  while ((int64_t{1} << p.bucket_bits) <= bad) ++p.bucket_bits;
  int group_bits = 0;
  while (group_bits < 63 && (int64_t{1} << group_bits) < s.groups) ++group_bits;
  p.key_bits = p.bucket_bits + group_bits;
  if (p.key_bits > 64) {
    return Format("BucketSum: input 'bucket' has %lld groups; the CUDA kernel's sort keys hold fewer",
                  static_cast<long long>(s.groups));
  }
  const cudaError_t error = RadixSortPairsTempBytes(s.groups * s.rows, p.key_bits, &p.sort_temp_bytes);
  if (error != cudaSuccess) return CudaErrorText("BucketSum", "planning the row sort", error);
  p.workspace_bytes = Carve(s, p, nullptr).bytes;
  *plan = p;
  return {};
}

size_t BucketSumWorkspaceBytes(const cpu::BucketSumShape& shape) {
  BucketSumCudaPlan plan;
  return PlanBucketSumCuda(shape, &plan).empty() ? plan.workspace_bytes : 0;
}

cudaError_t BucketSum(const cpu::BucketSumShape& shape, const BucketSumCudaPlan& plan, FloatType type,
                      const int32_t* bucket, const void* weight, const void* vector, void* sum, void* weight_sum,
                      void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const Workspace w = Carve(shape, plan, workspace);
  if (workspace == nullptr || workspace_bytes < w.bytes) return cudaErrorInvalidValue;
  if (shape.groups * shape.rows == 0) return cudaSuccess;
  if (type == FloatType::kFloat16) {
    return Run<__half>(shape, plan, w, bucket, static_cast<const __half*>(weight), static_cast<const __half*>(vector),
                       static_cast<__half*>(sum), static_cast<__half*>(weight_sum), stream);
  }
  return Run<float>(shape, plan, w, bucket, static_cast<const float*>(weight), static_cast<const float*>(vector),
                    static_cast<float*>(sum), static_cast<float*>(weight_sum), stream);
}

cudaError_t EnqueueBucketSumReport(const cpu::BucketSumShape& shape, const void* workspace, void* report,
                                   cudaStream_t stream) {
  if (shape.groups * shape.rows == 0) return cudaSuccess;  // no id, no range: ReportError reads nothing
  return cudaMemcpyAsync(report, workspace, kBucketSumReportBytes, cudaMemcpyDeviceToHost, stream);
}

std::string BucketSumReportError(const cpu::BucketSumShape& shape, const void* report) {
  if (shape.groups * shape.rows == 0) return {};
  uint32_t range[2];
  std::memcpy(range, report, sizeof range);
  const int32_t lo = static_cast<int32_t>(range[0] ^ 0x80000000u);
  const int32_t hi = static_cast<int32_t>(~range[1] ^ 0x80000000u);
  return cpu::BucketRangeError(shape, lo, hi);
}

}  // namespace bucketrt::cuda
