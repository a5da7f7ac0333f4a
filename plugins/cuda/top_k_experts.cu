// TopKExperts kernels: see top_k_experts.h for the scheme.
#include "cuda/top_k_experts.h"

#include <algorithm>
#include <climits>

#include "bucketrt/validate.h"
#include "cuda/activation.cuh"
#include "cuda/block_scan.cuh"
#include "cuda/device.cuh"
#include "cuda/radix_sort.h"

namespace bucketrt::cuda {

namespace {

constexpr int kThreads = 256;  // the element-wise kernels
constexpr int64_t kMaxBlocks = int64_t{1} << 20;
// ExpertFFN's tiles (expert_ffn.cu).
constexpr int kTileRows = 64;   // sorted pairs per tile
constexpr int kTileCols = 64;   // output columns per tile
constexpr int kTileInner = 16;  // inner dim per shared-memory step
constexpr int kGemmThreads = 256;
// Thread (tx, ty) = (tid % 16, tid / 16) computes rows ty + 16 i and columns tx + 16 j, i, j < 4.
constexpr int kTileSide = 16;
constexpr int kPerThread = 4;
static_assert(kTileSide * kTileSide == kGemmThreads, "one thread per micro tile");
static_assert(kTileSide * kPerThread == kTileRows && kTileSide * kPerThread == kTileCols, "micro tiles cover the tile");
constexpr int kScheduleThreads = 256;
constexpr int64_t kMaxRowBlocks = int64_t{1} << 24;  // gridDim.x; blocks loop over row tiles beyond
constexpr int64_t kMaxColBlocks = 65535;             // gridDim.y; blocks loop over column tiles beyond
// The float32 buffers of a pass (activations and expert outputs of its pairs), 256 MiB: tokens
// beyond are the next pass's, which reads the experts' weights again.
constexpr int64_t kBufferFloats = int64_t{1} << 26;
// The largest size of one slice of the workspace: the sum of its few slices stays far from
// overflowing size_t whatever the dims TensorRT plans with.
constexpr int64_t kMaxSliceBytes = int64_t{1} << 60;
constexpr unsigned long long kNoBadIndex = ~0ull;

unsigned Blocks(int64_t threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (threads + kThreads - 1) / kThreads)));
}

// The workspace, carved in a fixed order (Plan counts with base == nullptr). first_bad comes first:
// the data report reads it at the workspace's start.
struct Workspace {
  unsigned long long* first_bad = nullptr;  // the smallest flat index of a bad expert_index, or ~0
  uint64_t* keys_in = nullptr;              // [pairs of a pass]: each pair's expert (E: none)
  uint64_t* keys_out = nullptr;             // sorted
  int32_t* values_in = nullptr;             // [pairs of a pass]: each pair's place in the pass
  int32_t* values_out = nullptr;            // in sorted order
  int32_t* row_of = nullptr;                // [pairs of a pass]: each pair's sorted row; -1: no expert
  void* sort_temp = nullptr;
  int64_t* first = nullptr;       // [E] each expert's first sorted row
  int64_t* rows = nullptr;        // [E] its rows
  int64_t* tile_begin = nullptr;  // [E + 1] its first row tile; [E]: the number of row tiles
  float* buffer = nullptr;        // plan.buffer_floats: activations [pairs, F], then y [pairs, D]
  size_t bytes = 0;
};

Workspace Carve(const cpu::TopKExpertsShape& s, const TopKExpertsCudaPlan& p, void* base) {
  WorkspaceLayout layout(base);
  const size_t pairs = static_cast<size_t>(p.sort_pairs);
  const size_t experts = static_cast<size_t>(s.num_experts);
  Workspace w;
  w.first_bad = layout.Take<unsigned long long>(1);
  w.keys_in = layout.Take<uint64_t>(pairs);
  w.keys_out = layout.Take<uint64_t>(pairs);
  w.values_in = layout.Take<int32_t>(pairs);
  w.values_out = layout.Take<int32_t>(pairs);
  w.row_of = layout.Take<int32_t>(pairs);
  w.sort_temp = layout.Take<unsigned char>(p.sort_temp_bytes);
  w.first = layout.Take<int64_t>(experts);
  w.rows = layout.Take<int64_t>(experts);
  w.tile_begin = layout.Take<int64_t>(experts + 1);
  w.buffer = layout.Take<float>(static_cast<size_t>(p.buffer_floats));
  w.bytes = layout.bytes();
  return w;
}

// ---- grouping the pairs by expert --------------------------------------------------------------

// Pair i of the pass (flat index first + i of [T, K]): its expert as the sort key, an index outside
// [0, E] taken as E (no expert) and the first such recorded, and its place i as the value.
__global__ void __launch_bounds__(kThreads)
    KeysKernel(const int32_t* expert_index, int64_t pairs, int64_t first, int64_t experts, uint64_t* keys,
               int32_t* values, unsigned long long* first_bad) {
  for (int64_t i = GlobalThread(); i < pairs; i += GridThreads()) {
    int64_t e = expert_index[first + i];
    if (e < 0 || e > experts) {
      atomicMin(first_bad, static_cast<unsigned long long>(first + i));
      e = experts;
    }
    keys[i] = static_cast<uint64_t>(e);
    values[i] = static_cast<int32_t>(i);
  }
}

// The first of the sorted keys[0, n) that is >= key (n if none).
__device__ __forceinline__ int64_t LowerBound(const uint64_t* keys, int64_t n, uint64_t key) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < key) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// One block: expert e's sorted rows are [first[e], first[e] + rows[e]) (the run of key e), cut into
// row tiles numbered from tile_begin[e]; tile_begin[E] is the number of row tiles, at most
// ceil(pairs / kTileRows) + E.
__global__ void __launch_bounds__(kScheduleThreads)
    ScheduleKernel(const uint64_t* keys, int64_t pairs, int64_t experts, int64_t* first, int64_t* rows,
                   int64_t* tile_begin) {
  __shared__ int64_t scan_sums[kScheduleThreads / 32];
  int64_t tile_carry = 0;  // the same in every thread
  for (int64_t e0 = 0; e0 < experts; e0 += kScheduleThreads) {
    const int64_t e = e0 + threadIdx.x;
    int64_t begin = 0, end = 0;
    if (e < experts) {
      begin = LowerBound(keys, pairs, static_cast<uint64_t>(e));
      end = LowerBound(keys, pairs, static_cast<uint64_t>(e + 1));
    }
    const int64_t tiles = (end - begin + kTileRows - 1) / kTileRows;
    int64_t tiles_total = 0;
    const int64_t tiles_before = BlockExclusiveSum<kScheduleThreads>(tiles, &tiles_total, scan_sums);
    if (e < experts) {
      first[e] = begin;
      rows[e] = end - begin;
      tile_begin[e] = tile_carry + tiles_before;
    }
    tile_carry += tiles_total;
  }
  if (threadIdx.x == 0) tile_begin[experts] = tile_carry;
}

// Each pair's sorted row (values_out is a permutation of the pass's places), -1 for no expert.
__global__ void __launch_bounds__(kThreads)
    RowsKernel(const uint64_t* keys, const int32_t* values, int64_t pairs, int64_t experts, int32_t* row_of) {
  for (int64_t i = GlobalThread(); i < pairs; i += GridThreads()) {
    row_of[values[i]] = keys[i] < static_cast<uint64_t>(experts) ? static_cast<int32_t>(i) : -1;
  }
}

// ---- the gatings (catalogue.EXPERT_GATINGS, in float32) ------------------------------------------

// Every gating of spec::Gating has a case below (-Werror=switch; the count is checked too). Each
// product and sum rounded on its own, as the reference's tensor operations. The activation is
// applied once, between the clamps on its input and on its output (one inlined copy of it per call:
// the GEMM's epilogue unrolls 16 calls).
static_assert(spec::kNumGatings == 5, "catalogue.py's EXPERT_GATINGS changed: give every gating a case");
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
__device__ __forceinline__ float Gate(cpu::Gating gating, cpu::Activation act, float limit, float gate, float up) {
  const bool clamp_input = gating == cpu::Gating::kGluClamped || gating == cpu::Gating::kGluClampedOffset;
  const float a = Activate(act, clamp_input ? ClampMax(gate, limit) : gate);
  switch (gating) {
    case cpu::Gating::kNone: return a;                     // act(h)
    case cpu::Gating::kGlu: return __fmul_rn(a, up);       // act(gate) * up
    case cpu::Gating::kGluClamped:                         // act(min(gate, L)) * clamp(up, -L, L)
      return __fmul_rn(a, Clamp(up, -limit, limit));
    case cpu::Gating::kGluClampedAfter:                    // min(act(gate), L) * clamp(up, -L, L)
      return __fmul_rn(ClampMax(a, limit), Clamp(up, -limit, limit));
    case cpu::Gating::kGluClampedOffset:                   // act(min(gate, L)) * (clamp(up, -L, L) + 1)
      return __fmul_rn(a, __fadd_rn(Clamp(up, -limit, limit), 1.0f));
  }
  return a;
}
#pragma GCC diagnostic pop

// ---- grouped GEMMs ---------------------------------------------------------------------------------

struct GemmArgs {
  const void* a;          // first: hidden [T, D] (T); second: the activations [pairs, F] (float)
  const void* w;          // [E, width, inner] (T): gate_up (first) or down (second), nn.Linear layout
  const void* bias;       // [E, width] (T): gate_up_bias or down_bias
  const int32_t* values;  // the sorted pairs' places in the pass (first: token = token0 + value / picks)
  float* c;               // first: the activations [pairs, cols = F]; second: y [pairs, cols = D]
  const int64_t* first;
  const int64_t* rows;
  const int64_t* tile_begin;
  int64_t experts, cols, inner, width, picks, token0;
  cpu::Activation act;
  cpu::Gating gating;
  float limit;
};

// Row tile `tile` (of expert e, sorted rows i) times w[e]^T, column tiles over blockIdx.y:
//   first (kFirst): c[i, col] = gating(h[col], h[F + col]) with h = a[token(i)] · w[e]^T + bias[e]
//     (kGated: gate column col and up column F + col in the same thread; else h[col] alone, G = F);
//   second: c[i, col] = a[i] · w[e]^T[col] + bias[e][col].
template <class TA, class TW, bool kFirst, bool kGated>
__global__ void __launch_bounds__(kGemmThreads) ExpertsGemmKernel(GemmArgs g) {
  static_assert(kFirst || !kGated, "the second projection has no gate");
  __shared__ float as[kTileInner][kTileRows + 1];                    // as[k][r]: rows of a, transposed
  __shared__ float ws[kTileInner][kTileCols + 1];                    // ws[k][n]: rows of w (gate), transposed
  __shared__ float us[kGated ? kTileInner : 1][kTileCols + 1];       // us[k][n]: the up rows (F + col)
  __shared__ int64_t a_row[kTileRows];                               // the row of a each tile row reads; -1: zeros
  __shared__ int64_t c_row[kTileRows];                               // the row of c each tile row writes; -1: none
  const int tid = static_cast<int>(threadIdx.x), tx = tid % kTileSide, ty = tid / kTileSide;
  const TA* a = static_cast<const TA*>(g.a);
  const int64_t tiles = g.tile_begin[g.experts];
  const int64_t col_tiles = (g.cols + kTileCols - 1) / kTileCols;

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    // The tile's expert: the last e with tile_begin[e] <= tile (experts without rows share their
    // tile_begin with the next expert; tile < tile_begin[E] makes e's range hold the tile).
    int64_t lo = 0, hi = g.experts - 1;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (g.tile_begin[mid] <= tile) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const int64_t e = lo;
    const int64_t row0 = g.first[e] + (tile - g.tile_begin[e]) * kTileRows;
    const int64_t count = Min64(kTileRows, g.first[e] + g.rows[e] - row0);
    __syncthreads();  // the previous tile is done with a_row and c_row
    if (tid < kTileRows) {
      int64_t ar = -1, cr = -1;
      if (tid < count) {
        const int64_t i = row0 + tid;  // < the pass's pairs: the schedule's runs lie in the sorted keys
        ar = kFirst ? g.token0 + g.values[i] / g.picks : i;
        cr = i;
      }
      a_row[tid] = ar;
      c_row[tid] = cr;
    }
    __syncthreads();
    const TW* w = static_cast<const TW*>(g.w) + e * g.width * g.inner;
    const TW* bias = static_cast<const TW*>(g.bias) + e * g.width;

    for (int64_t ct = blockIdx.y; ct < col_tiles; ct += gridDim.y) {
      const int64_t col0 = ct * kTileCols;
      float acc[kPerThread][kPerThread];
      float up[kPerThread][kPerThread];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) acc[i][j] = up[i][j] = 0.0f;
      }
      for (int64_t k0 = 0; k0 < g.inner; k0 += kTileInner) {
        __syncthreads();  // the previous step is done with as, ws and us
        // Consecutive threads read consecutive k of one row (coalesced), stored transposed.
        for (int idx = tid; idx < kTileRows * kTileInner; idx += kGemmThreads) {
          const int r = idx / kTileInner, k = idx % kTileInner;
          const int64_t ar = a_row[r];
          as[k][r] = (ar >= 0 && k0 + k < g.inner) ? LoadFloat(a, ar * g.inner + k0 + k) : 0.0f;
        }
        for (int idx = tid; idx < kTileCols * kTileInner; idx += kGemmThreads) {
          const int n = idx / kTileInner, k = idx % kTileInner;
          const int64_t col = col0 + n;
          const bool inside = col < g.cols && k0 + k < g.inner;
          ws[k][n] = inside ? LoadFloat(w, col * g.inner + k0 + k) : 0.0f;
          if constexpr (kGated) us[k][n] = inside ? LoadFloat(w, (g.cols + col) * g.inner + k0 + k) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kTileInner; ++k) {
          float av[kPerThread], wv[kPerThread];
#pragma unroll
          for (int i = 0; i < kPerThread; ++i) av[i] = as[k][ty + kTileSide * i];
#pragma unroll
          for (int j = 0; j < kPerThread; ++j) wv[j] = ws[k][tx + kTileSide * j];
#pragma unroll
          for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
            for (int j = 0; j < kPerThread; ++j) acc[i][j] = __fmaf_rn(av[i], wv[j], acc[i][j]);
          }
          if constexpr (kGated) {
            float uv[kPerThread];
#pragma unroll
            for (int j = 0; j < kPerThread; ++j) uv[j] = us[k][tx + kTileSide * j];
#pragma unroll
            for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
              for (int j = 0; j < kPerThread; ++j) up[i][j] = __fmaf_rn(av[i], uv[j], up[i][j]);
            }
          }
        }
      }
      // The product rounded, then the bias added (the reference's matmul, then its add).
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int64_t cr = c_row[ty + kTileSide * i];
        if (cr < 0) continue;
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) {
          const int64_t col = col0 + tx + kTileSide * j;
          if (col >= g.cols) continue;
          const float h = __fadd_rn(acc[i][j], LoadFloat(bias, col));
          float value = h;
          if constexpr (kFirst) {
            float u = 0.0f;
            if constexpr (kGated) u = __fadd_rn(up[i][j], LoadFloat(bias, g.cols + col));
            value = Gate(g.gating, g.act, g.limit, h, u);
          }
          g.c[cr * g.cols + col] = value;
        }
      }
    }
  }
}

// ---- the weighted sum over each token's picks ------------------------------------------------------

// out[t, d] = sum over the picks j = 0, 1, ... of weight[t, j] * y[row_of[t, j], d], from 0, each
// product and sum rounded on its own (the reference's order); a pick without an expert adds
// nothing, whatever its weight. Rounded once to T.
template <class T>
__global__ void __launch_bounds__(kThreads)
    CombineKernel(const int32_t* row_of, const T* weight, const float* y, T* out, int64_t tokens, int64_t picks,
                  int64_t dim) {
  for (int64_t idx = GlobalThread(); idx < tokens * dim; idx += GridThreads()) {
    const int64_t t = idx / dim, d = idx % dim;
    float sum = 0.0f;
    for (int64_t j = 0; j < picks; ++j) {
      const int64_t row = row_of[t * picks + j];
      if (row < 0) continue;
      sum = __fadd_rn(sum, __fmul_rn(LoadFloat(weight, t * picks + j), y[row * dim + d]));
    }
    StoreFloat(out, idx, sum);
  }
}

template <class T>
cudaError_t Run(const cpu::TopKExpertsShape& s, const TopKExpertsCudaPlan& p, const cpu::TopKExpertsConfig& config,
                const Workspace& w, const T* hidden, const int32_t* expert_index, const T* expert_weight,
                const T* gate_up, const T* gate_up_bias, const T* down, const T* down_bias, T* out,
                cudaStream_t stream) {
  const int64_t K = s.picks, D = s.dim, F = s.ff, E = s.num_experts;
  float* activations = w.buffer;                      // [pass pairs, F]
  float* y = w.buffer + p.block_tokens * K * F;       // [pass pairs, D]
  const bool gated = config.gating != cpu::Gating::kNone;
  for (int64_t t0 = 0; t0 < s.tokens; t0 += p.block_tokens) {
    const int64_t tokens = std::min(p.block_tokens, s.tokens - t0), pairs = tokens * K;
    // 1-3. The pass's pairs grouped by expert, stably; the schedule; each pair's row.
    KeysKernel<<<Blocks(pairs), kThreads, 0, stream>>>(expert_index, pairs, t0 * K, E, w.keys_in, w.values_in,
                                                        w.first_bad);
    cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
    error = RadixSortPairs(w.sort_temp, p.sort_temp_bytes, w.keys_in, w.keys_out, w.values_in, w.values_out, pairs,
                           p.key_bits, stream);
    if (error != cudaSuccess) return error;
    ScheduleKernel<<<1, kScheduleThreads, 0, stream>>>(w.keys_out, pairs, E, w.first, w.rows, w.tile_begin);
    RowsKernel<<<Blocks(pairs), kThreads, 0, stream>>>(w.keys_out, w.values_out, pairs, E, w.row_of);
    // 4. The two projections over each expert's rows; the grid is sized for the most row tiles there
    // can be (blocks past the real ones exit).
    const int64_t row_tiles = (pairs + kTileRows - 1) / kTileRows + E;
    const unsigned row_blocks = static_cast<unsigned>(std::min(row_tiles, kMaxRowBlocks));
    GemmArgs g{hidden, gate_up, gate_up_bias, w.values_out, activations, w.first, w.rows, w.tile_begin,
               E, F, D, s.width, K, t0, config.act, config.gating, config.limit};
    const dim3 first_grid(row_blocks, static_cast<unsigned>(std::min((F + kTileCols - 1) / kTileCols, kMaxColBlocks)));
    if (gated) {
      ExpertsGemmKernel<T, T, true, true><<<first_grid, kGemmThreads, 0, stream>>>(g);
    } else {
      ExpertsGemmKernel<T, T, true, false><<<first_grid, kGemmThreads, 0, stream>>>(g);
    }
    g.a = activations;
    g.w = down;
    g.bias = down_bias;
    g.c = y;
    g.cols = D;
    g.inner = F;
    g.width = D;
    const dim3 second_grid(row_blocks,
                           static_cast<unsigned>(std::min((D + kTileCols - 1) / kTileCols, kMaxColBlocks)));
    ExpertsGemmKernel<float, T, false, false><<<second_grid, kGemmThreads, 0, stream>>>(g);
    // 5. Each token's picks, in order.
    CombineKernel<T><<<Blocks(tokens * D), kThreads, 0, stream>>>(w.row_of, expert_weight + t0 * K, y,
                                                                   out + t0 * D, tokens, K, D);
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  return cudaSuccess;
}

// count * unit fits a slice of the workspace.
bool Fits(int64_t count, int64_t unit) {
  int64_t bytes = 0;
  return CheckedMul(count, unit, &bytes) && bytes <= kMaxSliceBytes;
}

__global__ void TopKReportKernel(const unsigned long long* first_bad, const int32_t* expert_index,
                                 TopKExpertsReport* report) {
  const unsigned long long bad = *first_bad;
  report->first_bad = bad;
  report->index = bad == kNoBadIndex ? 0 : expert_index[bad];
  report->unused = 0;
}

}  // namespace

std::string PlanTopKExpertsCuda(const cpu::TopKExpertsShape& s, const cpu::TopKExpertsConfig& config,
                                TopKExpertsCudaPlan* plan) {
  const char* op = spec::kTopKExperts.name;
  std::string error = cpu::CheckTopKExpertsShape(s, config);
  if (!error.empty()) return error;
  if (s.picks > INT32_MAX) {
    return Format("%s: input 'expert_index' has %lld picks per token; the CUDA kernel indexes pairs in 32 bits", op,
                  static_cast<long long>(s.picks));
  }
  TopKExpertsCudaPlan p;
  // The buffers' budget: every pair's F + D floats, at most max(kBufferFloats, one token's); the
  // passes are cut from it, so that it never shrinks when a dim grows (T x row and row grow with
  // every dim, and so do their min and max).
  int64_t row = 0, all = 0;
  if (!CheckedMul(s.picks, s.dim + s.ff, &row)) return SizeOverflowError(op, "the workspace (K x (D + F))");
  row = std::max<int64_t>(row, 1);  // (every dim is >= 1: BindInputs)
  const int64_t tokens = std::max<int64_t>(s.tokens, 1), picks = std::max<int64_t>(s.picks, 1);
  const int64_t most = std::max(kBufferFloats, row);
  p.buffer_floats = CheckedMul(s.tokens, row, &all) ? std::min(all, most) : most;
  if (!Fits(p.buffer_floats, 4)) return SizeOverflowError(op, "the workspace (K x (D + F))");
  p.block_tokens = std::clamp<int64_t>(p.buffer_floats / row, 1, tokens);
  // The sort's pairs: a pass's, at most min(T x K, max(kBufferFloats / 2, K)) since D + F >= 2: a
  // bound that grows with the dims too (and keeps a pass's places of pairs within int32).
  p.sort_pairs = std::min(s.tokens * s.picks, std::max(kBufferFloats / 2, s.picks));
  p.block_tokens = std::max<int64_t>(1, std::min(p.block_tokens, p.sort_pairs / picks));
  if (!Fits(p.sort_pairs, 32) || !Fits(s.num_experts + 1, 32)) return SizeOverflowError(op, "the workspace (pairs)");
  while (p.key_bits < 63 && (int64_t{1} << p.key_bits) <= s.num_experts) ++p.key_bits;  // keys 0 .. E
  const cudaError_t status = RadixSortPairsTempBytes(p.sort_pairs, p.key_bits, &p.sort_temp_bytes);
  if (status != cudaSuccess) return CudaErrorText(op, "planning the pair sort", status);
  if (p.sort_temp_bytes > static_cast<size_t>(kMaxSliceBytes)) return SizeOverflowError(op, "the workspace (pairs)");
  p.workspace_bytes = Carve(s, p, nullptr).bytes;
  *plan = p;
  return {};
}

cudaError_t TopKExperts(const cpu::TopKExpertsShape& shape, const TopKExpertsCudaPlan& plan,
                        const cpu::TopKExpertsConfig& config, FloatType type, const void* hidden,
                        const int32_t* expert_index, const void* expert_weight, const void* gate_up,
                        const void* gate_up_bias, const void* down, const void* down_bias, void* out, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream) {
  const Workspace w = Carve(shape, plan, workspace);
  if (workspace == nullptr || workspace_bytes < w.bytes) return cudaErrorInvalidValue;
  // The index check first: the compute below takes bad indices as no expert, the caller reads this
  // afterwards.
  cudaError_t error = cudaMemsetAsync(w.first_bad, 0xff, sizeof(unsigned long long), stream);
  if (error != cudaSuccess || shape.tokens * shape.dim == 0) return error;
  if (shape.picks == 0) {  // no pick adds anything
    return cudaMemsetAsync(out, 0, static_cast<size_t>(shape.tokens * shape.dim) * FloatBytes(type), stream);
  }
  if (type == FloatType::kFloat16) {
    return Run<__half>(shape, plan, config, w, static_cast<const __half*>(hidden), expert_index,
                       static_cast<const __half*>(expert_weight), static_cast<const __half*>(gate_up),
                       static_cast<const __half*>(gate_up_bias), static_cast<const __half*>(down),
                       static_cast<const __half*>(down_bias), static_cast<__half*>(out), stream);
  }
  return Run<float>(shape, plan, config, w, static_cast<const float*>(hidden), expert_index,
                    static_cast<const float*>(expert_weight), static_cast<const float*>(gate_up),
                    static_cast<const float*>(gate_up_bias), static_cast<const float*>(down),
                    static_cast<const float*>(down_bias), static_cast<float*>(out), stream);
}

cudaError_t EnqueueTopKExpertsReport(const int32_t* expert_index, const void* workspace, TopKExpertsReport* report,
                                     cudaStream_t stream) {
  // One thread reads the bad index's value too: the host never needs a second, dependent copy.
  TopKReportKernel<<<1, 1, 0, stream>>>(static_cast<const unsigned long long*>(workspace), expert_index, report);
  return cudaGetLastError();
}

std::string TopKExpertsReportError(const cpu::TopKExpertsShape& shape, const TopKExpertsReport& report) {
  if (report.first_bad == kNoBadIndex) return {};
  return cpu::TopKExpertsIndexError(shape, static_cast<int64_t>(report.first_bad), report.index);
}

}  // namespace bucketrt::cuda
