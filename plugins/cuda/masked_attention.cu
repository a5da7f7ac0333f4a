// MaskedAttention kernels: see masked_attention.h for the scheme.
#include "cuda/masked_attention.h"

#include <algorithm>
#include <climits>

#include "cuda/device.cuh"

namespace bucketrt::cuda {

namespace {

constexpr int64_t kMaxGrid = 0x7fffffff;  // gridDim.x; kernels loop over their items beyond it
constexpr int64_t kMaxFlatBlocks = int64_t{1} << 20;

unsigned Grid(int64_t blocks) { return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxGrid))); }

struct Workspace {
  int32_t* first = nullptr;  // [B * S]: the first attended key
  int32_t* last = nullptr;   // [B * S]: past the last attended key (last <= first: none)
  size_t bytes = 0;
};

Workspace Carve(const cpu::MaskedAttentionShape& s, void* base) {
  WorkspaceLayout layout(base);
  Workspace w;
  const size_t rows = static_cast<size_t>(s.batch * s.queries);
  w.first = layout.Take<int32_t>(rows);
  w.last = layout.Take<int32_t>(rows);
  w.bytes = layout.bytes();
  return w;
}

// ---- 1. survey ------------------------------------------------------------------------------------

constexpr int kSurveyThreads = 256;
constexpr int kSurveyWarps = kSurveyThreads / kWarp;

// A warp per mask row: the first attended key from the front, the last from the back, 32 keys at a
// time (a causal or sliding-window row stops early); first = last = 0 for a row without any.
__global__ void __launch_bounds__(kSurveyThreads)
    SurveyKernel(const int32_t* mask, int64_t rows, int64_t keys, int32_t* first, int32_t* last) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kSurveyWarps;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kSurveyWarps + threadIdx.x / kWarp; row < rows;
       row += warps) {
    const int32_t* m = mask + row * keys;
    int64_t lo = keys, hi = 0;
    for (int64_t base = 0; base < keys; base += kWarp) {
      const int64_t k = base + lane;
      const unsigned on = __ballot_sync(kFullMask, k < keys && m[k] != 0);
      if (on != 0) {
        lo = base + __ffs(static_cast<int>(on)) - 1;
        break;
      }
    }
    if (lo < keys) {
      for (int64_t top = keys - 1; top >= lo; top -= kWarp) {
        const int64_t k = top - lane;
        const unsigned on = __ballot_sync(kFullMask, k >= lo && m[k] != 0);
        if (on != 0) {  // the lowest lane holds the highest key
          hi = top - (__ffs(static_cast<int>(on)) - 1) + 1;
          break;
        }
      }
    } else {
      lo = 0;
    }
    if (lane == 0) {
      first[row] = static_cast<int32_t>(lo);
      last[row] = static_cast<int32_t>(hi);
    }
  }
}

// ---- 2. attend ------------------------------------------------------------------------------------

constexpr int kAttendThreads = 128;
constexpr int kAttendWarps = kAttendThreads / kWarp;
constexpr int kRows = 32;                          // (query, head) rows per block
constexpr int kRowsPerWarp = kRows / kAttendWarps;  // a warp's rows: warp, warp + 4, ...
constexpr int kKeys = kWarp;                        // keys per tile: a lane per key
constexpr int kDims = 128;                          // D per chunk of the logits' products
constexpr int kValueDims = 128;                     // Dv per chunk of the outputs
constexpr int kValueCols = kValueDims / kWarp;
static_assert(kRows == kWarp, "one warp reads the rows' spans");

struct AttendArgs {
  const void* query;
  const void* key;
  const void* value;
  const void* sinks;
  const int32_t* mask;
  const int32_t* first;
  const int32_t* last;
  void* out;
  int64_t heads, kv_heads, group, queries, keys, dim, value_dim;
  int64_t tiles;  // row tiles per (b, n): ceil(S * group / kRows)
  int64_t items;  // B * N * tiles
  float scale;
};

struct AttendShared {
  float q[kRows][kDims + 1];  // the rows' queries (a chunk of D); + 1: no bank conflicts
  union {
    float k[kKeys][kDims + 1];   // a key tile (a chunk of D)
    float v[kKeys][kValueDims];  // a value tile (a chunk of Dv)
  } kv;
  float p[kRows][kKeys + 1];  // the tile's weights
  int64_t qrow[kRows];        // offset of the row's query in `query`; -1: past the last row
  int64_t mrow[kRows];        // b * S + s: the row's mask row; -1: past the last row
  int32_t head[kRows];        // h
  int32_t has[kRows];         // attends some key
  int32_t span_lo, span_hi;   // the keys the block's rows attend between them
};

template <class T>
__device__ __forceinline__ void LoadQueries(const AttendArgs& a, AttendShared& sh, int64_t d0, int count) {
  const T* q = static_cast<const T*>(a.query);
  for (int e = static_cast<int>(threadIdx.x); e < kRows * count; e += kAttendThreads) {
    const int r = e / count, d = e % count;
    sh.q[r][d] = sh.qrow[r] >= 0 ? LoadFloat(q, sh.qrow[r] + d0 + d) : 0.0f;
  }
}

// The logits of the block's rows (warp + 4 i) against keys key0 + lane, (q · k) * scale; 0 past the span.
template <class T>
__device__ __forceinline__ void ScoreTile(const AttendArgs& a, AttendShared& sh, const T* k_head, int64_t key0,
                                          int64_t span_hi, bool q_resident, float (&acc)[kRowsPerWarp]) {
  const int tid = static_cast<int>(threadIdx.x), lane = tid % kWarp, warp = tid / kWarp;
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) acc[i] = 0.0f;
  __syncthreads();  // the previous tile's keys, values and weights are no longer read
  for (int64_t d0 = 0; d0 < a.dim; d0 += kDims) {
    const int count = static_cast<int>(Min64(kDims, a.dim - d0));
    if (d0 > 0) __syncthreads();  // the previous chunk is no longer read
    if (!q_resident) LoadQueries<T>(a, sh, d0, count);
    for (int e = tid; e < kKeys * count; e += kAttendThreads) {
      const int j = e / count, d = e % count;
      const int64_t key = key0 + j;
      sh.kv.k[j][d] = key < span_hi ? LoadFloat(k_head, key * a.dim + d0 + d) : 0.0f;
    }
    __syncthreads();
    for (int d = 0; d < count; ++d) {
      const float k = sh.kv.k[lane][d];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) acc[i] = __fmaf_rn(sh.q[warp + kAttendWarps * i][d], k, acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) acc[i] = __fmul_rn(acc[i], a.scale);  // the product, then scaled
}

__device__ __forceinline__ float WarpMax(float x) {
  for (int h = kWarp / 2; h > 0; h /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, h));
  return x;
}

// Every lane ends with the same sum (each step adds the same two numbers on both sides).
__device__ __forceinline__ float WarpSum(float x) {
  for (int h = kWarp / 2; h > 0; h /= 2) x += __shfl_xor_sync(kFullMask, x, h);
  return x;
}

template <class T>
__global__ void __launch_bounds__(kAttendThreads) AttendKernel(AttendArgs a) {
  __shared__ AttendShared sh;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % kWarp, warp = tid / kWarp;
  const int64_t S = a.queries, keys = a.keys, D = a.dim, Dv = a.value_dim;
  const bool q_resident = D <= kDims;
  const T* sinks = static_cast<const T*>(a.sinks);

  for (int64_t item = blockIdx.x; item < a.items; item += gridDim.x) {
    const int64_t tile = a.tiles - 1 - item % a.tiles;  // the latest queries (a causal mask's longest spans) first
    const int64_t bn = item / a.tiles, b = bn / a.kv_heads, n = bn % a.kv_heads;
    const T* k_head = static_cast<const T*>(a.key) + bn * keys * D;
    const T* v_head = static_cast<const T*>(a.value) + bn * keys * Dv;

    __syncthreads();  // the previous item is done with the shared rows and tiles
    if (tid < kRows) {
      const int64_t rg = tile * kRows + tid;
      int64_t qrow = -1, mrow = -1, h = 0;
      int32_t lo = 0, hi = 0;
      if (rg < S * a.group) {
        const int64_t s = rg / a.group;
        h = n * a.group + rg % a.group;
        qrow = ((b * a.heads + h) * S + s) * D;
        mrow = b * S + s;
        lo = a.first[mrow];
        hi = a.last[mrow];
      }
      sh.qrow[tid] = qrow;
      sh.mrow[tid] = mrow;
      sh.head[tid] = static_cast<int32_t>(h);
      sh.has[tid] = hi > lo ? 1 : 0;
      int32_t span_lo = hi > lo ? lo : INT32_MAX, span_hi = hi > lo ? hi : 0;
      for (int step = kWarp / 2; step > 0; step /= 2) {
        span_lo = min(span_lo, __shfl_xor_sync(kFullMask, span_lo, step));
        span_hi = max(span_hi, __shfl_xor_sync(kFullMask, span_hi, step));
      }
      if (tid == 0) {
        sh.span_lo = span_hi > span_lo ? span_lo : 0;
        sh.span_hi = span_hi > span_lo ? span_hi : 0;
      }
    }
    __syncthreads();
    const int64_t span_lo = sh.span_lo, span_hi = sh.span_hi;
    if (q_resident) LoadQueries<T>(a, sh, 0, static_cast<int>(D));  // seen after ScoreTile's barrier

    // Pass 1: per row, the max of its attended logits and its sink, and the sum of exp(logit - max).
    // A NaN or +Inf logit or sink makes the row NaN (`wild`): the reference's max is NaN or +Inf.
    float sink[kRowsPerWarp], top[kRowsPerWarp], sum[kRowsPerWarp];
    bool wild[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = warp + kAttendWarps * i;
      sink[i] = sh.mrow[r] >= 0 ? LoadFloat(sinks, sh.head[r]) : -INFINITY;
      wild[i] = isnan(sink[i]) || sink[i] == INFINITY;
      top[i] = isfinite(sink[i]) ? sink[i] : -INFINITY;
      sum[i] = 0.0f;
    }
    for (int64_t key0 = span_lo; key0 < span_hi; key0 += kKeys) {
      float acc[kRowsPerWarp];
      ScoreTile<T>(a, sh, k_head, key0, span_hi, q_resident, acc);
      const int64_t key = key0 + lane;
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int64_t mrow = sh.mrow[warp + kAttendWarps * i];
        const bool on = mrow >= 0 && key < span_hi && a.mask[mrow * keys + key] != 0;
        const bool bad = on && (isnan(acc[i]) || acc[i] == INFINITY);
        const bool any_bad = __any_sync(kFullMask, bad);  // every lane: wild[i] is the warp's, uniform
        wild[i] = wild[i] || any_bad;
        const float x = on && !bad ? acc[i] : -INFINITY;
        const float new_top = fmaxf(top[i], WarpMax(x));
        if (new_top > top[i]) sum[i] *= expf(top[i] - new_top);  // 0 while top is -Inf
        sum[i] += WarpSum(x == -INFINITY ? 0.0f : expf(x - new_top));
        top[i] = new_top;
      }
    }
    float denominator[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      wild[i] = wild[i] || top[i] == -INFINITY;  // every attended logit and the sink -Inf: exp(NaN)
      denominator[i] = wild[i] ? 1.0f : sum[i] + expf(sink[i] - top[i]);
    }

    // Pass 2, per chunk of the value dims: sum of p * value over the attended keys of p != 0.
    for (int64_t v0 = 0; v0 < Dv; v0 += kValueDims) {
      const int count = static_cast<int>(Min64(kValueDims, Dv - v0));
      float o[kRowsPerWarp][kValueCols];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
#pragma unroll
        for (int j = 0; j < kValueCols; ++j) o[i][j] = 0.0f;
      }
      for (int64_t key0 = span_lo; key0 < span_hi; key0 += kKeys) {
        float acc[kRowsPerWarp];
        ScoreTile<T>(a, sh, k_head, key0, span_hi, q_resident, acc);
        const int64_t key = key0 + lane;
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) {
          const int r = warp + kAttendWarps * i;
          const int64_t mrow = sh.mrow[r];
          const bool on = !wild[i] && mrow >= 0 && key < span_hi && a.mask[mrow * keys + key] != 0;
          sh.p[r][lane] = on ? __fdiv_rn(expf(acc[i] - top[i]), denominator[i]) : 0.0f;
        }
        __syncthreads();  // the weights are complete; every thread is done with the keys
        for (int e = tid; e < kKeys * count; e += kAttendThreads) {
          const int j = e / count, d = e % count;
          const int64_t k = key0 + j;
          sh.kv.v[j][d] = k < span_hi ? LoadFloat(v_head, k * Dv + v0 + d) : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < kKeys; ++k) {
#pragma unroll
          for (int i = 0; i < kRowsPerWarp; ++i) {
            const float p = sh.p[warp + kAttendWarps * i][k];
            if (p == 0.0f) continue;  // not attended, or of weight 0: nothing, whatever the value (no 0 * Inf)
#pragma unroll
            for (int j = 0; j < kValueCols; ++j) o[i][j] = __fmaf_rn(p, sh.kv.v[k][lane + kWarp * j], o[i][j]);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int r = warp + kAttendWarps * i;
        const int64_t mrow = sh.mrow[r];
        if (mrow < 0) continue;
        // out[b, s, h, :]: mrow = b * S + s.
        const int64_t base = (mrow * a.heads + sh.head[r]) * Dv + v0;
#pragma unroll
        for (int j = 0; j < kValueCols; ++j) {
          const int d = lane + kWarp * j;
          if (d >= count) continue;
          const float y = !sh.has[r] ? 0.0f : wild[i] ? NAN : o[i][j];
          StoreFloat(static_cast<T*>(a.out), base + d, y);
        }
      }
    }
  }
}

template <class T>
cudaError_t Run(const cpu::MaskedAttentionShape& s, const Workspace& w, const void* query, const void* key,
                const void* value, const int32_t* mask, const void* sinks, void* out, cudaStream_t stream) {
  const int64_t rows = s.batch * s.queries;
  SurveyKernel<<<Grid(std::min(kMaxFlatBlocks, (rows + kSurveyWarps - 1) / kSurveyWarps)), kSurveyThreads, 0,
                 stream>>>(mask, rows, s.keys, w.first, w.last);
  AttendArgs a{};
  a.query = query;
  a.key = key;
  a.value = value;
  a.sinks = sinks;
  a.mask = mask;
  a.first = w.first;
  a.last = w.last;
  a.out = out;
  a.heads = s.heads;
  a.kv_heads = s.kv_heads;
  a.group = s.heads / s.kv_heads;
  a.queries = s.queries;
  a.keys = s.keys;
  a.dim = s.dim;
  a.value_dim = s.value_dim;
  a.tiles = (s.queries * a.group + kRows - 1) / kRows;
  a.items = s.batch * s.kv_heads * a.tiles;
  a.scale = s.scale;
  AttendKernel<T><<<Grid(a.items), kAttendThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

size_t MaskedAttentionWorkspaceBytes(const cpu::MaskedAttentionShape& shape) { return Carve(shape, nullptr).bytes; }

cudaError_t MaskedAttention(const cpu::MaskedAttentionShape& shape, FloatType type, const void* query, const void* key,
                            const void* value, const int32_t* mask, const void* sinks, void* out, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream) {
  // Nothing to write (H, N > 0 after the shape check; no output element, no read).
  if (shape.batch * shape.queries * shape.heads * shape.value_dim == 0) return cudaSuccess;
  const Workspace w = Carve(shape, workspace);
  if (workspace == nullptr || workspace_bytes < w.bytes) return cudaErrorInvalidValue;
  return type == FloatType::kFloat16 ? Run<__half>(shape, w, query, key, value, mask, sinks, out, stream)
                                     : Run<float>(shape, w, query, key, value, mask, sinks, out, stream);
}

}  // namespace bucketrt::cuda
