// Top1Dispatch kernels: see top1_dispatch.h for the scheme.
#include "cuda/top1_dispatch.h"

#include <algorithm>

#include "cuda/device.cuh"

namespace bucketrt::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kScanThreads = 256;
constexpr int kScanWarps = kScanThreads / kWarp;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

unsigned Blocks(int64_t threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (threads + kThreads - 1) / kThreads)));
}

// The workspace, carved in a fixed order (WorkspaceBytes counts with base == nullptr).
struct Workspace {
  int32_t* expert0 = nullptr;  // [B * S] every token's first choice, kept or not
  int32_t* kept = nullptr;     // [B, E] tokens each sequence keeps per expert
  int32_t* base = nullptr;     // [B, E] first slot in `order` of each sequence's kept tokens per expert
  int32_t* total = nullptr;    // [1] kept tokens in all
  size_t bytes = 0;
};

Workspace Carve(const cpu::Top1DispatchShape& s, void* base) {
  WorkspaceLayout layout(base);
  Workspace w;
  w.expert0 = layout.Take<int32_t>(static_cast<size_t>(s.batch * s.length));
  w.kept = layout.Take<int32_t>(static_cast<size_t>(s.batch * s.num_experts));
  w.base = layout.Take<int32_t>(static_cast<size_t>(s.batch * s.num_experts));
  w.total = layout.Take<int32_t>(1);
  w.bytes = layout.bytes();
  return w;
}

// 1. Thread per token: the first maximum, or the first NaN (the CPU kernel's loop), and its
// probability, copied as is.
template <class T>
__global__ void ChooseKernel(const T* probs, int64_t tokens, int64_t experts, int32_t* expert0, T* gate) {
  for (int64_t t = GlobalThread(); t < tokens; t += GridThreads()) {
    const T* p = probs + t * experts;
    int64_t best = 0;
    float best_value = LoadFloat(p, 0);
    if (!isnan(best_value)) {
      for (int64_t e = 1; e < experts; ++e) {
        const float v = LoadFloat(p, e);
        if (isnan(v)) {
          best = e;
          break;
        }
        if (v > best_value) {
          best = e;
          best_value = v;
        }
      }
    }
    expert0[t] = static_cast<int32_t>(best);
    gate[t] = p[best];
  }
}

// 2. Thread per (sequence b, expert e): e's tokens of the sequence in order, each one's priority
// (1-based running count) and whether it stays within capacity.
__global__ void PriorityKernel(const int32_t* expert0, int64_t batch, int64_t length, int64_t experts,
                               int64_t capacity, int32_t* expert, int32_t* priority, int32_t* kept) {
  for (int64_t i = GlobalThread(); i < batch * experts; i += GridThreads()) {
    const int64_t b = i / experts, e = i % experts;
    const int32_t* chosen = expert0 + b * length;
    int64_t count = 0;
    for (int64_t s = 0; s < length; ++s) {
      if (chosen[s] != e) continue;
      ++count;
      const int64_t t = b * length + s;
      priority[t] = static_cast<int32_t>(count);
      expert[t] = count <= capacity ? static_cast<int32_t>(e) : -1;
    }
    kept[i] = static_cast<int32_t>(count < capacity ? count : capacity);
  }
}

// The sum of v over the block's threads before this one (thread order), and in *total the block's
// sum. Every thread of the (kScanThreads-thread) block calls it: it synchronises.
__device__ long long BlockExclusiveSum(long long v, long long* total) {
  __shared__ long long warp_sums[kScanWarps];
  const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1), warp = static_cast<int>(threadIdx.x) / kWarp;
  long long inclusive = v;  // within the warp
#pragma unroll
  for (int offset = 1; offset < kWarp; offset <<= 1) {
    const long long up = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += up;
  }
  if (lane == kWarp - 1) warp_sums[warp] = inclusive;
  __syncthreads();
  long long before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < kScanWarps; ++w) {
    if (w < warp) before += warp_sums[w];
    sum += warp_sums[w];
  }
  __syncthreads();  // warp_sums is read everywhere before the next call rewrites it
  *total = sum;
  return before + inclusive - v;
}

// 3. One block: counts per expert, then each (b, e)'s first slot in `order`, expert-major, sequence
// by sequence within an expert; and the number of kept tokens.
__global__ void __launch_bounds__(kScanThreads) SlotsKernel(const int32_t* kept, int64_t batch, int64_t experts,
                                                            int32_t* counts, int32_t* base, int32_t* total) {
  long long carry = 0;  // kept tokens of the experts before this chunk (the same in every thread)
  for (int64_t e0 = 0; e0 < experts; e0 += kScanThreads) {
    const int64_t e = e0 + threadIdx.x;
    long long count = 0;
    if (e < experts) {
      for (int64_t b = 0; b < batch; ++b) count += kept[b * experts + e];
      counts[e] = static_cast<int32_t>(count);
    }
    long long chunk = 0;
    const long long before = BlockExclusiveSum(count, &chunk);
    if (e < experts) {
      long long slot = carry + before;
      for (int64_t b = 0; b < batch; ++b) {
        base[b * experts + e] = static_cast<int32_t>(slot);
        slot += kept[b * experts + e];
      }
    }
    carry += chunk;
  }
  if (threadIdx.x == 0) *total = static_cast<int32_t>(carry);
}

// 4. Thread per token t: -1 into slot t past the kept tokens; a kept token into its slot.
__global__ void OrderKernel(const int32_t* expert, const int32_t* priority, const int32_t* base, const int32_t* total,
                            int64_t tokens, int64_t length, int64_t experts, int32_t* order) {
  const int64_t kept_tokens = *total;
  for (int64_t t = GlobalThread(); t < tokens; t += GridThreads()) {
    if (t >= kept_tokens) order[t] = -1;
    const int32_t e = expert[t];
    if (e >= 0) {
      const int64_t slot = static_cast<int64_t>(base[(t / length) * experts + e]) + priority[t] - 1;
      order[slot] = static_cast<int32_t>(t);
    }
  }
}

template <class T>
cudaError_t Run(const cpu::Top1DispatchShape& s, const Workspace& w, const T* probs, int32_t* expert, T* gate,
                int32_t* priority, int32_t* counts, int32_t* order, cudaStream_t stream) {
  const int64_t tokens = s.batch * s.length;
  ChooseKernel<T><<<Blocks(tokens), kThreads, 0, stream>>>(probs, tokens, s.num_experts, w.expert0, gate);
  PriorityKernel<<<Blocks(s.batch * s.num_experts), kThreads, 0, stream>>>(
      w.expert0, s.batch, s.length, s.num_experts, s.capacity, expert, priority, w.kept);
  SlotsKernel<<<1, kScanThreads, 0, stream>>>(w.kept, s.batch, s.num_experts, counts, w.base, w.total);
  OrderKernel<<<Blocks(tokens), kThreads, 0, stream>>>(expert, priority, w.base, w.total, tokens, s.length,
                                                       s.num_experts, order);
  return cudaGetLastError();
}

}  // namespace

size_t Top1DispatchWorkspaceBytes(const cpu::Top1DispatchShape& shape) { return Carve(shape, nullptr).bytes; }

cudaError_t Top1Dispatch(const cpu::Top1DispatchShape& shape, FloatType type, const void* probs, int32_t* expert,
                         void* gate, int32_t* priority, int32_t* counts, int32_t* order, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  const Workspace w = Carve(shape, workspace);
  if (workspace == nullptr || workspace_bytes < w.bytes) return cudaErrorInvalidValue;
  if (shape.batch * shape.length * shape.num_experts == 0) return cudaSuccess;
  if (type == FloatType::kFloat16) {
    return Run<__half>(shape, w, static_cast<const __half*>(probs), expert, static_cast<__half*>(gate), priority,
                       counts, order, stream);
  }
  return Run<float>(shape, w, static_cast<const float*>(probs), expert, static_cast<float*>(gate), priority, counts,
                    order, stream);
}

}  // namespace bucketrt::cuda
