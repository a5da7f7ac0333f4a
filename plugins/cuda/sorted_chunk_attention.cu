// SortedChunkAttention kernels: see sorted_chunk_attention.h for the scheme.
#include "cuda/sorted_chunk_attention.h"

#include <cstring>

#include <algorithm>
#include <climits>

#include "bucketrt/validate.h"
#include "cuda/block_scan.cuh"
#include "cuda/device.cuh"

namespace bucketrt::cuda {

namespace {

constexpr int64_t kMaxGrid = 0x7fffffff;   // gridDim.x; kernels loop over their items beyond it
constexpr int64_t kMaxFlatBlocks = int64_t{1} << 20;
constexpr float kMaskedScore = cpu::kMaskedScore;  // -1e9: masked key or causal
constexpr float kSelfScore = cpu::kSelfScore;      // -1e5: the query itself, when mask_self

unsigned Grid(int64_t blocks) { return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxGrid))); }

// The workspace, carved in a fixed order (the flag first: EnqueueChunkAttentionReport reads it there).
struct Workspace {
  int32_t* negative = nullptr;   // set to 1 when a bucket < 0 was seen
  int32_t* positions = nullptr;  // [B * H, R * N]: position of each sorted slot (not plain)
  int32_t* spare = nullptr;      // [B * H, R * N]: the radix sort's other buffer (not plain)
  float* round_out = nullptr;    // [B * H, R, N, D] per-round outputs (rounds > 1)
  float* round_lse = nullptr;    // [B * H, R, N] per-round log-sum-exps (rounds > 1)
  size_t bytes = 0;
};

Workspace Carve(const cpu::ChunkAttentionShape& s, const cpu::ChunkAttentionPlan& p, void* base) {
  WorkspaceLayout layout(base);
  Workspace w;
  w.negative = layout.Take<int32_t>(1);
  const size_t slots = static_cast<size_t>(s.batch * s.heads * p.rounds * s.length);
  if (!p.plain) {
    w.positions = layout.Take<int32_t>(slots);
    w.spare = layout.Take<int32_t>(slots);
  }
  if (p.rounds > 1) {
    w.round_out = layout.Take<float>(slots * static_cast<size_t>(s.dim));
    w.round_lse = layout.Take<float>(slots);
  }
  w.bytes = layout.bytes();
  return w;
}

// ---- 1. sort --------------------------------------------------------------------------------------

constexpr int kSortThreads = 256;
constexpr int kSortWarps = kSortThreads / kWarp;
constexpr int kDigitBits = 8;
constexpr int kDigits = 1 << kDigitBits;
constexpr int kMaxPasses = 4;  // buckets are int32 >= 0: 31 bits
static_assert(kSortThreads == kDigits, "the offsets scan takes one thread per digit");

// Digit `pass` of a bucket; a negative bucket (an input error, reported separately) sorts as 0.
__device__ __forceinline__ int Digit(int32_t bucket, int pass) {
  return (max(bucket, 0) >> (pass * kDigitBits)) & (kDigits - 1);
}

// Block per segment (b, h, round): sorted[i] = the position in slot i, positions ordered by
// (bucket, position). LSD radix sort, one stable pass per 8-bit digit the segment's largest bucket
// has; passes alternate between `spare` and `positions` so that the last one writes `positions`.
__global__ void __launch_bounds__(kSortThreads)
    SortKernel(const int32_t* buckets, int64_t segments, int64_t length, int32_t* positions, int32_t* spare,
               int32_t* negative) {
  __shared__ int32_t scan_sums[kSortWarps];
  __shared__ int32_t offsets[kSortWarps][kDigits];  // per warp: digit counts, then first slots
  __shared__ int32_t segment_max;
  __shared__ int32_t segment_negative;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % kWarp, warp = tid / kWarp;
  // Warp w owns entries [begin, end) of every pass, in order: warps in order, then lanes.
  const int64_t per_warp = (length + kSortWarps - 1) / kSortWarps;
  const int64_t begin = Min64(warp * per_warp, length), end = Min64(begin + per_warp, length);

  for (int64_t seg = blockIdx.x; seg < segments; seg += gridDim.x) {
    const int32_t* bucket = buckets + seg * length;
    int32_t* sorted = positions + seg * length;
    int32_t* other = spare + seg * length;
    __syncthreads();  // the previous segment is done with the shared state
    if (tid == 0) {
      segment_max = 0;
      segment_negative = 0;
    }
    __syncthreads();
    int32_t top = 0;
    bool below_zero = false;
    for (int64_t i = tid; i < length; i += kSortThreads) {
      const int32_t v = bucket[i];
      below_zero |= v < 0;
      top = max(top, v);
    }
    for (int h = kWarp / 2; h > 0; h /= 2) top = max(top, __shfl_xor_sync(kFullMask, top, h));
    below_zero = __any_sync(kFullMask, below_zero);
    if (lane == 0) {
      atomicMax(&segment_max, top);
      if (below_zero) atomicOr(&segment_negative, 1);
    }
    __syncthreads();
    const int32_t largest = segment_max;
    if (tid == 0 && segment_negative) *negative = 1;
    int passes = 0;
    while (passes < kMaxPasses && (largest >> (passes * kDigitBits)) != 0) ++passes;
    if (passes == 0) {  // every bucket 0 (local attention): the identity
      for (int64_t i = tid; i < length; i += kSortThreads) sorted[i] = static_cast<int32_t>(i);
      continue;
    }
    for (int pass = 0; pass < passes; ++pass) {
      // Pass p writes `sorted` when passes - 1 - p is even (the last pass always), else `other`,
      // and reads what pass p - 1 wrote (pass 0: the identity).
      const int32_t* src = pass == 0 ? nullptr : ((passes - pass) % 2 == 0 ? sorted : other);
      int32_t* dst = (passes - 1 - pass) % 2 == 0 ? sorted : other;
      for (int i = tid; i < kSortWarps * kDigits; i += kSortThreads) offsets[i / kDigits][i % kDigits] = 0;
      __syncthreads();
      for (int64_t i = begin + lane; i < end; i += kWarp) {
        const int32_t n = src ? src[i] : static_cast<int32_t>(i);
        atomicAdd(&offsets[warp][Digit(bucket[n], pass)], 1);
      }
      __syncthreads();
      // Thread tid = digit: its first slot (exclusive scan over digits), then each warp's first
      // slot within the digit (warps in order). Each thread touches only its own column.
      int32_t count = 0;
      for (int w = 0; w < kSortWarps; ++w) count += offsets[w][tid];
      int32_t all = 0;
      int32_t first = BlockExclusiveSum<kSortThreads>(count, &all, scan_sums);
      for (int w = 0; w < kSortWarps; ++w) {
        const int32_t c = offsets[w][tid];
        offsets[w][tid] = first;
        first += c;
      }
      __syncthreads();
      // Each warp scatters its entries in order, 32 at a time: an entry's slot is its digit's
      // next free slot plus its rank among the lower lanes of equal digit, so the pass is stable.
      // The loop bounds are the warp's own: every lane runs every iteration (full-mask match).
      for (int64_t base = begin; base < end; base += kWarp) {
        const int64_t i = base + lane;
        const bool valid = i < end;
        const int32_t n = valid ? (src ? src[i] : static_cast<int32_t>(i)) : 0;
        const int digit = valid ? Digit(bucket[n], pass) : kDigits + lane;  // past the end: no peers
        const unsigned peers = __match_any_sync(kFullMask, digit);
        const int rank = __popc(peers & ((1u << lane) - 1u));
        const int32_t slot = valid ? offsets[warp][digit] + rank : 0;
        __syncwarp();
        if (valid && rank == 0) offsets[warp][digit] += __popc(peers);
        __syncwarp();
        if (valid) dst[slot] = n;
      }
      __syncthreads();  // dst is complete (and offsets free) before the next pass
    }
  }
}

// ---- 2. attend ------------------------------------------------------------------------------------

constexpr int kAttendThreads = 256;
constexpr int kQueries = 32;  // query rows per block
constexpr int kKeys = 64;     // keys per tile of the window
constexpr int kDims = 64;     // dims per chunk (scores: of the dot products; outputs: of the values)
constexpr int kStatLanes = kAttendThreads / kQueries;  // threads per query row for max and sum
// Micro tile of thread (tx, ty) = (tid % 16, tid / 16): rows ty and ty + 16, columns (keys or
// dims) tx + 16 j for j < 4.
constexpr int kTileSide = 16;
constexpr int kCols = 4;
static_assert(kTileSide * kTileSide == kAttendThreads && 2 * kTileSide == kQueries, "micro tile rows");
static_assert(kTileSide * kCols == kKeys && kTileSide * kCols == kDims, "micro tile columns");
static_assert(kStatLanes == 8 && kWarp % kStatLanes == 0, "a query row's stat lanes share a warp");

struct AttendArgs {
  const void* query;
  const void* key;
  const void* value;
  const int32_t* mask;
  const int32_t* positions;  // [B * H, R * N]; nullptr: plain attention (slot i holds position i)
  void* out;                 // one round: [B, H, N, D] T
  float* round_out;          // several rounds: [B * H, R, N, D]
  float* round_lse;          // several rounds: [B * H, R, N]
  int64_t heads, length, dim, rounds;
  int64_t chunk;        // slots per chunk (N when plain)
  int64_t window;       // keys per query: chunk * (1 + before + after) (N when plain)
  int64_t chunks;       // chunks per head, K = R * N / chunk (1 when plain)
  int64_t before;       // chunks before (0 when plain)
  int64_t query_tiles;  // ceil(chunk / kQueries)
  int64_t items;        // B * H * chunks * query_tiles
  bool causal, mask_self;
};

struct AttendShared {
  float q[kQueries][kDims + 1];  // the tile's queries, a chunk of dims (all of D when D <= kDims)
  float kv[kKeys][kDims + 1];    // a key tile's chunk of dims, then its values' chunk
  float p[kQueries][kKeys + 1];  // scores, then weights
  int32_t qpos[kQueries];        // -1 past the chunk's end
  int32_t kpos[kKeys];           // -1 past the window's end
  int32_t klive[kKeys];
  float lse[kQueries];
};

__device__ __forceinline__ int64_t PositiveMod(int64_t a, int64_t m) {
  const int64_t r = a % m;
  return r < 0 ? r + m : r;
}

// Rows `row_pos[r]` (r < kRows; -1: zeros) of a [N, D] head, dims d0 .. d0 + count, into dst
// (zeros beyond `count`, so that a partial chunk multiplies as zeros).
template <class T, int kRows>
__device__ __forceinline__ void LoadRows(float (*dst)[kDims + 1], const T* head, const int32_t* row_pos, int64_t dim,
                                         int64_t d0, int count) {
  for (int idx = static_cast<int>(threadIdx.x); idx < kRows * kDims; idx += kAttendThreads) {
    const int r = idx / kDims, d = idx % kDims;
    const int32_t p = row_pos[r];
    dst[r][d] = (p >= 0 && d < count) ? LoadFloat(head, static_cast<int64_t>(p) * dim + d0 + d) : 0.0f;
  }
}

// Keys w0 .. w0 + kKeys of chunk c's window: window key w is slot i = w % chunk of chunk
// (c + w / chunk - before) mod K.
__device__ __forceinline__ void LoadKeyTile(const AttendArgs& a, AttendShared& sh, const int32_t* pos,
                                            const int32_t* live, int64_t c, int64_t w0) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < kKeys) {
    const int64_t w = w0 + t;
    int32_t kp = -1, alive = 0;
    if (w < a.window) {
      const int64_t src = PositiveMod(c + w / a.chunk - a.before, a.chunks);
      const int64_t slot = src * a.chunk + w % a.chunk;
      kp = pos ? pos[slot] : static_cast<int32_t>(slot);
      alive = live[kp] != 0;
    }
    sh.kpos[t] = kp;
    sh.klive[t] = alive;
  }
}

// acc[r][j] = query (row ty + 16 r) · key (tx + 16 j) over all of D, d ascending, fused
// multiply-adds: both passes run this, so their scores are the same floats. Starts with a barrier
// (the tile's positions become visible; earlier readers of kv and q are done).
template <class T>
__device__ __forceinline__ void ScoreTile(const AttendArgs& a, AttendShared& sh, const T* q_head, const T* k_head,
                                          bool q_resident, int tx, int ty, float (&acc)[2][kCols]) {
#pragma unroll
  for (int j = 0; j < kCols; ++j) acc[0][j] = acc[1][j] = 0.0f;
  for (int64_t d0 = 0; d0 < a.dim; d0 += kDims) {
    const int count = static_cast<int>(Min64(kDims, a.dim - d0));
    __syncthreads();
    if (!q_resident) LoadRows<T, kQueries>(sh.q, q_head, sh.qpos, a.dim, d0, count);
    LoadRows<T, kKeys>(sh.kv, k_head, sh.kpos, a.dim, d0, count);
    __syncthreads();
    for (int d = 0; d < count; ++d) {
      const float q0 = sh.q[ty][d], q1 = sh.q[ty + kTileSide][d];
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const float k = sh.kv[tx + kTileSide * j][d];
        acc[0][j] = __fmaf_rn(q0, k, acc[0][j]);
        acc[1][j] = __fmaf_rn(q1, k, acc[1][j]);
      }
    }
  }
}

// exp(x) as a softmax weight: below the smallest normal float it is 0 (cpu::kWeightFloor).
__device__ __forceinline__ float Weight(float x) {
  const float w = expf(x);
  return w < cpu::kWeightFloor ? 0.0f : w;
}

// The reference's masks: -1e9 where the key is masked or (causal) later than the query, then
// -1e5 where mask_self and the key is the query (overriding).
__device__ __forceinline__ float Masked(const AttendArgs& a, float score, int32_t qp, int32_t kp, int32_t alive) {
  if (!alive || (a.causal && kp > qp)) score = kMaskedScore;
  if (a.mask_self && kp == qp) score = kSelfScore;
  return score;
}

template <class T>
__global__ void __launch_bounds__(kAttendThreads) AttendKernel(AttendArgs a) {
  __shared__ AttendShared sh;
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % kTileSide, ty = tid / kTileSide;
  const int stat_row = tid / kStatLanes, stat_lane = tid % kStatLanes;
  const int64_t N = a.length, D = a.dim;
  const bool q_resident = D <= kDims;

  for (int64_t item = blockIdx.x; item < a.items; item += gridDim.x) {
    const int64_t qt = item % a.query_tiles, rest = item / a.query_tiles;
    const int64_t c = rest % a.chunks, bh = rest / a.chunks, b = bh / a.heads;
    const int64_t slot0 = c * a.chunk + qt * kQueries;
    const int rows = static_cast<int>(Min64(kQueries, a.chunk - qt * kQueries));
    const int32_t* pos = a.positions ? a.positions + bh * a.rounds * N : nullptr;
    const T* q_head = static_cast<const T*>(a.query) + bh * N * D;
    const T* k_head = static_cast<const T*>(a.key) + bh * N * D;
    const T* v_head = static_cast<const T*>(a.value) + bh * N * D;
    const int32_t* live = a.mask + b * N;

    __syncthreads();  // the previous item is done with the shared tiles
    if (tid < kQueries) sh.qpos[tid] = tid < rows ? (pos ? pos[slot0 + tid] : static_cast<int32_t>(slot0 + tid)) : -1;
    __syncthreads();
    if (q_resident) LoadRows<T, kQueries>(sh.q, q_head, sh.qpos, D, 0, static_cast<int>(D));  // seen after ScoreTile's barrier

    // Pass 1: per query, the running max and sum of exp(score - max) over the window.
    float row_max = -INFINITY, row_sum = 0.0f;
    for (int64_t w0 = 0; w0 < a.window; w0 += kKeys) {
      __syncthreads();  // the previous tile's positions and scores are no longer read
      LoadKeyTile(a, sh, pos, live, c, w0);
      float acc[2][kCols];
      ScoreTile<T>(a, sh, q_head, k_head, q_resident, tx, ty, acc);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = ty + kTileSide * r;
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          const int k = tx + kTileSide * j;
          const int32_t kp = sh.kpos[k];
          sh.p[i][k] = kp < 0 ? -INFINITY : Masked(a, acc[r][j], sh.qpos[i], kp, sh.klive[k]);
        }
      }
      __syncthreads();
      float tile_max = -INFINITY;
      for (int k = stat_lane; k < kKeys; k += kStatLanes) tile_max = fmaxf(tile_max, sh.p[stat_row][k]);
      for (int h = kStatLanes / 2; h > 0; h /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, h));
      const float new_max = fmaxf(row_max, tile_max);  // finite: a window's first tile holds real keys
      float tile_sum = 0.0f;
      if (new_max != -INFINITY) {
        for (int k = stat_lane; k < kKeys; k += kStatLanes) {
          const float s = sh.p[stat_row][k];
          if (s != -INFINITY) tile_sum += expf(s - new_max);
        }
      }
      for (int h = kStatLanes / 2; h > 0; h /= 2) tile_sum += __shfl_xor_sync(kFullMask, tile_sum, h);
      row_sum = (row_max == -INFINITY ? 0.0f : row_sum * expf(row_max - new_max)) + tile_sum;
      row_max = new_max;
    }
    // l = max + log(sum), rounded to float as Reformer's logsumexp: a row of -1e9 scores only has
    // l == -1e9, and each of its keys weight exp(0) = 1.
    const float lse = row_max + logf(row_sum);
    if (stat_lane == 0) {
      sh.lse[stat_row] = lse;  // read after the next barrier
      if (a.rounds > 1 && stat_row < rows) {
        const int64_t round = (slot0 + stat_row) / N;
        a.round_lse[(bh * a.rounds + round) * N + sh.qpos[stat_row]] = lse;
      }
    }

    // Pass 2: per chunk of the value dims, sum of exp(score - l) * value over the window.
    for (int64_t v0 = 0; v0 < D; v0 += kDims) {
      const int count = static_cast<int>(Min64(kDims, D - v0));
      float o[2][kCols];
#pragma unroll
      for (int j = 0; j < kCols; ++j) o[0][j] = o[1][j] = 0.0f;
      for (int64_t w0 = 0; w0 < a.window; w0 += kKeys) {
        __syncthreads();  // the previous tile's positions, weights and values are no longer read
        LoadKeyTile(a, sh, pos, live, c, w0);
        float acc[2][kCols];
        ScoreTile<T>(a, sh, q_head, k_head, q_resident, tx, ty, acc);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int i = ty + kTileSide * r;
          const float l = sh.lse[i];
#pragma unroll
          for (int j = 0; j < kCols; ++j) {
            const int k = tx + kTileSide * j;
            const int32_t kp = sh.kpos[k];
            sh.p[i][k] = kp < 0 ? 0.0f : Weight(Masked(a, acc[r][j], sh.qpos[i], kp, sh.klive[k]) - l);
          }
        }
        __syncthreads();  // weights complete; every thread is done with the keys in kv
        LoadRows<T, kKeys>(sh.kv, v_head, sh.kpos, D, v0, count);
        __syncthreads();
        for (int k = 0; k < kKeys; ++k) {
          const float p0 = sh.p[ty][k], p1 = sh.p[ty + kTileSide][k];
#pragma unroll
          for (int j = 0; j < kCols; ++j) {
            const float v = sh.kv[k][tx + kTileSide * j];
            // A key of weight 0 contributes nothing, whatever its value (0 * Inf would be NaN).
            if (p0 != 0.0f) o[0][j] = __fmaf_rn(p0, v, o[0][j]);
            if (p1 != 0.0f) o[1][j] = __fmaf_rn(p1, v, o[1][j]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = ty + kTileSide * r;
        if (i >= rows) continue;
        const int64_t qp = sh.qpos[i];
        const int64_t round = (slot0 + i) / N;
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          const int d = tx + kTileSide * j;
          if (d >= count) continue;
          if (a.rounds > 1) {
            a.round_out[((bh * a.rounds + round) * N + qp) * D + v0 + d] = o[r][j];
          } else {
            StoreFloat(static_cast<T*>(a.out), (bh * N + qp) * D + v0 + d, o[r][j]);
          }
        }
      }
    }
  }
}

// ---- 3. combine -----------------------------------------------------------------------------------

constexpr int kCombineThreads = 256;

// out[bh, n, d] = sum_r exp(l_r - logsumexp_r l_r) * o_r[d], rounds in order.
template <class T>
__global__ void __launch_bounds__(kCombineThreads)
    CombineKernel(const float* round_out, const float* round_lse, T* out, int64_t heads, int64_t rounds,
                  int64_t length, int64_t dim) {
  const int64_t total = heads * length * dim;
  for (int64_t i = GlobalThread(); i < total; i += GridThreads()) {
    const int64_t d = i % dim, row = i / dim, n = row % length, bh = row / length;
    const float* lse = round_lse + bh * rounds * length + n;
    float top = -INFINITY;
    for (int64_t r = 0; r < rounds; ++r) top = fmaxf(top, lse[r * length]);
    float sum = 0.0f;
    for (int64_t r = 0; r < rounds; ++r) sum += expf(lse[r * length] - top);
    const float log_total = top + logf(sum);
    float acc = 0.0f;
    for (int64_t r = 0; r < rounds; ++r) {
      const float weight = Weight(lse[r * length] - log_total);
      if (weight == 0.0f) continue;  // a round of weight 0 contributes nothing, whatever its output
      acc = __fadd_rn(acc, __fmul_rn(weight, round_out[((bh * rounds + r) * length + n) * dim + d]));
    }
    StoreFloat(out, i, acc);
  }
}

template <class T>
cudaError_t Run(const cpu::ChunkAttentionShape& s, const cpu::ChunkAttentionPlan& p, const Workspace& w,
                const void* query, const void* key, const void* value, const int32_t* mask, const int32_t* buckets,
                void* out, cudaStream_t stream) {
  const int64_t heads = s.batch * s.heads;
  if (!p.plain) {
    const int64_t segments = heads * p.rounds;
    SortKernel<<<Grid(segments), kSortThreads, 0, stream>>>(buckets, segments, s.length, w.positions, w.spare,
                                                             w.negative);
  }
  AttendArgs a{};
  a.query = query;
  a.key = key;
  a.value = value;
  a.mask = mask;
  a.positions = p.plain ? nullptr : w.positions;
  a.out = out;
  a.round_out = w.round_out;
  a.round_lse = w.round_lse;
  a.heads = s.heads;
  a.length = s.length;
  a.dim = s.dim;
  a.rounds = p.rounds;
  a.chunk = p.chunk;
  a.window = p.window;
  a.chunks = p.chunks_per_head;
  a.before = p.plain ? 0 : s.chunks_before;
  a.query_tiles = (p.chunk + kQueries - 1) / kQueries;
  a.items = heads * p.chunks_per_head * a.query_tiles;
  a.causal = s.causal;
  a.mask_self = s.mask_self;
  AttendKernel<T><<<Grid(a.items), kAttendThreads, 0, stream>>>(a);
  if (p.rounds > 1) {
    const int64_t total = heads * s.length * s.dim;
    const int64_t blocks = std::min(kMaxFlatBlocks, (total + kCombineThreads - 1) / kCombineThreads);
    CombineKernel<T><<<Grid(blocks), kCombineThreads, 0, stream>>>(w.round_out, w.round_lse, static_cast<T*>(out),
                                                                   heads, p.rounds, s.length, s.dim);
  }
  return cudaGetLastError();
}

}  // namespace

std::string PlanChunkAttentionCuda(const cpu::ChunkAttentionShape& shape, int64_t max_length,
                                   cpu::ChunkAttentionPlan* plan) {
  std::string error = cpu::PlanChunkAttention(shape, max_length, 1, plan);
  if (!error.empty()) return error;
  if (shape.length > INT32_MAX) {
    return Format("SortedChunkAttention: input 'query' has sequence length %lld; the CUDA kernel indexes positions "
                  "in 32 bits",
                  static_cast<long long>(shape.length));
  }
  return {};
}

size_t ChunkAttentionWorkspaceBytes(const cpu::ChunkAttentionShape& shape, const cpu::ChunkAttentionPlan& plan) {
  return Carve(shape, plan, nullptr).bytes;
}

cudaError_t ChunkAttention(const cpu::ChunkAttentionShape& shape, const cpu::ChunkAttentionPlan& plan, FloatType type,
                           const void* query, const void* key, const void* value, const int32_t* mask,
                           const int32_t* buckets, void* out, void* workspace, size_t workspace_bytes,
                           cudaStream_t stream) {
  const Workspace w = Carve(shape, plan, workspace);
  if (workspace == nullptr || workspace_bytes < w.bytes) return cudaErrorInvalidValue;
  // The flag first: the sort sets it, EnqueueChunkAttentionReport copies it afterwards.
  cudaError_t error = cudaMemsetAsync(w.negative, 0, sizeof(int32_t), stream);
  if (error != cudaSuccess) return error;
  if (shape.batch * shape.heads * shape.length * shape.dim == 0) return cudaSuccess;
  return type == FloatType::kFloat16
             ? Run<__half>(shape, plan, w, query, key, value, mask, buckets, out, stream)
             : Run<float>(shape, plan, w, query, key, value, mask, buckets, out, stream);
}

cudaError_t EnqueueChunkAttentionReport(const cpu::ChunkAttentionPlan& plan, const void* workspace, void* report,
                                        cudaStream_t stream) {
  const size_t bytes = ChunkAttentionReportBytes(plan);
  return bytes == 0 ? cudaSuccess : cudaMemcpyAsync(report, workspace, bytes, cudaMemcpyDeviceToHost, stream);
}

std::string ChunkAttentionReportError(const cpu::ChunkAttentionPlan& plan, const void* report) {
  if (ChunkAttentionReportBytes(plan) == 0) return {};
  int32_t negative = 0;
  std::memcpy(&negative, report, sizeof negative);
  return negative ? cpu::kNegativeBucketsError : std::string();
}

}  // namespace bucketrt::cuda
