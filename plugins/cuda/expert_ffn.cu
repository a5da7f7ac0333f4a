// ExpertFFN kernels: see expert_ffn.h for the scheme.
#include "cuda/expert_ffn.h"

#include <algorithm>

#include "cuda/activation.cuh"
#include "cuda/block_scan.cuh"
#include "cuda/device.cuh"

namespace bucketrt::cuda {

namespace {

constexpr int kTileRows = 64;   // listed tokens per tile
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

// The workspace, carved in a fixed order.
struct Workspace {
  int64_t* first = nullptr;       // [E] each expert's first entry of `order` (clamped to [0, B*S])
  int64_t* rows = nullptr;        // [E] its entries (clamped likewise)
  int64_t* tile_begin = nullptr;  // [E + 1] its first row tile; [E]: the number of row tiles
  float* hidden_act = nullptr;    // [B*S, F] act(hidden · wi^T) of the listed rows, in listed order
  size_t bytes = 0;
};

Workspace Carve(const cpu::ExpertFfnShape& s, void* base) {
  WorkspaceLayout layout(base);
  Workspace w;
  w.first = layout.Take<int64_t>(static_cast<size_t>(s.num_experts));
  w.rows = layout.Take<int64_t>(static_cast<size_t>(s.num_experts));
  w.tile_begin = layout.Take<int64_t>(static_cast<size_t>(s.num_experts + 1));
  w.hidden_act = layout.Take<float>(static_cast<size_t>(s.tokens * s.ff));
  w.bytes = layout.bytes();
  return w;
}

// ---- schedule ------------------------------------------------------------------------------------

// One block: expert e's entries of `order` are [first[e], first[e] + rows[e]), the prefix sums of
// max(counts, 0) clamped to [0, tokens] (so that bad counts never reach past `order`), cut into
// row tiles numbered from tile_begin[e]; tile_begin[E] is the number of row tiles, at most
// ceil(tokens / kTileRows) + E.
__global__ void __launch_bounds__(kScheduleThreads)
    ScheduleKernel(const int32_t* counts, int64_t experts, int64_t tokens, int64_t* first, int64_t* rows,
                   int64_t* tile_begin) {
  __shared__ int64_t scan_sums[kScheduleThreads / 32];
  int64_t row_carry = 0, tile_carry = 0;  // the same in every thread
  for (int64_t e0 = 0; e0 < experts; e0 += kScheduleThreads) {
    const int64_t e = e0 + threadIdx.x;
    const int64_t count = e < experts ? max(counts[e], 0) : 0;
    int64_t total = 0;
    const int64_t before = BlockExclusiveSum<kScheduleThreads>(count, &total, scan_sums);
    const int64_t begin = Min64(row_carry + before, tokens), end = Min64(row_carry + before + count, tokens);
    const int64_t tiles = (end - begin + kTileRows - 1) / kTileRows;
    int64_t tiles_total = 0;
    const int64_t tiles_before = BlockExclusiveSum<kScheduleThreads>(tiles, &tiles_total, scan_sums);
    if (e < experts) {
      first[e] = begin;
      rows[e] = end - begin;
      tile_begin[e] = tile_carry + tiles_before;
    }
    row_carry += total;
    tile_carry += tiles_total;
  }
  if (threadIdx.x == 0) tile_begin[experts] = tile_carry;
}

// ---- activations: cuda/activation.cuh (reference.EXPERT_ACTIVATIONS, in float32) ----------------

// ---- grouped GEMMs ---------------------------------------------------------------------------------

struct GemmArgs {
  const void* a;       // first: hidden [tokens, inner] (T); second: the intermediate [tokens, inner] (float)
  const void* w;       // [E, cols, inner] (T): wi (first) or wo (second), nn.Linear layout
  const int32_t* order;
  const void* gate;    // second: [tokens] (T)
  void* c;             // first: the intermediate [tokens, cols] (float); second: out [tokens, cols] (T)
  const int64_t* first;
  const int64_t* rows;
  const int64_t* tile_begin;
  int64_t tokens, experts, cols, inner;
  cpu::Activation act;
};

// Row tile `tile` (of expert e, listed entries i) times w[e]^T, column tiles over blockIdx.y.
//   first (kSecond = false): c[i] = act(a[order[i]] · w[e]^T)
//   second (kSecond = true): c[order[i]] = gate[order[i]] * (a[i] · w[e]^T)
// An entry whose token id is outside [0, tokens) reads zeros and writes nothing (second GEMM).
template <class TA, class TW, bool kSecond>
__global__ void __launch_bounds__(kGemmThreads) ExpertGemmKernel(GemmArgs g) {
  __shared__ float as[kTileInner][kTileRows + 1];  // as[k][r]: rows of a, transposed
  __shared__ float ws[kTileInner][kTileCols + 1];  // ws[k][n]: rows of w, transposed
  __shared__ int64_t a_row[kTileRows];             // the row of a each tile row reads; -1: zeros
  __shared__ int64_t c_row[kTileRows];             // the row of c each tile row writes; -1: none
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
        const int64_t i = row0 + tid;  // < tokens: the schedule clamps every expert's entries
        const int32_t t = g.order[i];
        const bool valid = t >= 0 && t < g.tokens;
        ar = kSecond ? i : (valid ? t : -1);
        cr = kSecond ? (valid ? t : -1) : i;
      }
      a_row[tid] = ar;
      c_row[tid] = cr;
    }
    __syncthreads();
    const TW* w = static_cast<const TW*>(g.w) + e * g.cols * g.inner;

    for (int64_t ct = blockIdx.y; ct < col_tiles; ct += gridDim.y) {
      const int64_t col0 = ct * kTileCols;
      float acc[kPerThread][kPerThread];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) acc[i][j] = 0.0f;
      }
      for (int64_t k0 = 0; k0 < g.inner; k0 += kTileInner) {
        __syncthreads();  // the previous step is done with as and ws
        // Consecutive threads read consecutive k of one row (coalesced), stored transposed.
        for (int idx = tid; idx < kTileRows * kTileInner; idx += kGemmThreads) {
          const int r = idx / kTileInner, k = idx % kTileInner;
          const int64_t ar = a_row[r];
          as[k][r] = (ar >= 0 && k0 + k < g.inner) ? LoadFloat(a, ar * g.inner + k0 + k) : 0.0f;
        }
        for (int idx = tid; idx < kTileCols * kTileInner; idx += kGemmThreads) {
          const int n = idx / kTileInner, k = idx % kTileInner;
          const int64_t col = col0 + n;
          ws[k][n] = (col < g.cols && k0 + k < g.inner) ? LoadFloat(w, col * g.inner + k0 + k) : 0.0f;
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
        }
      }
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int64_t cr = c_row[ty + kTileSide * i];
        if (cr < 0) continue;
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) {
          const int64_t col = col0 + tx + kTileSide * j;
          if (col >= g.cols) continue;
          if constexpr (kSecond) {
            const float gate = LoadFloat(static_cast<const TW*>(g.gate), cr);
            StoreFloat(static_cast<TW*>(g.c), cr * g.cols + col, __fmul_rn(acc[i][j], gate));
          } else {
            static_cast<float*>(g.c)[cr * g.cols + col] = Activate(g.act, acc[i][j]);
          }
        }
      }
    }
  }
}

template <class T>
cudaError_t Run(const cpu::ExpertFfnShape& s, cpu::Activation act, const Workspace& w, const T* hidden,
                const int32_t* order, const int32_t* counts, const T* gate, const T* wi, const T* wo, T* out,
                cudaStream_t stream) {
  // Tokens not listed (dropped) get zero; the second GEMM writes the listed ones.
  cudaError_t error = cudaMemsetAsync(out, 0, static_cast<size_t>(s.tokens * s.dim) * sizeof(T), stream);
  if (error != cudaSuccess) return error;
  ScheduleKernel<<<1, kScheduleThreads, 0, stream>>>(counts, s.num_experts, s.tokens, w.first, w.rows,
                                                     w.tile_begin);
  const int64_t row_tiles = (s.tokens + kTileRows - 1) / kTileRows + s.num_experts;  // the most there can be
  const unsigned row_blocks = static_cast<unsigned>(std::min(row_tiles, kMaxRowBlocks));
  GemmArgs g{hidden, wi, order, gate, w.hidden_act, w.first, w.rows, w.tile_begin, s.tokens, s.num_experts,
             s.ff, s.dim, act};
  const dim3 first_grid(row_blocks, static_cast<unsigned>(std::min((s.ff + kTileCols - 1) / kTileCols, kMaxColBlocks)));
  ExpertGemmKernel<T, T, false><<<first_grid, kGemmThreads, 0, stream>>>(g);
  g.a = w.hidden_act;
  g.w = wo;
  g.c = out;
  g.cols = s.dim;
  g.inner = s.ff;
  const dim3 second_grid(row_blocks,
                         static_cast<unsigned>(std::min((s.dim + kTileCols - 1) / kTileCols, kMaxColBlocks)));
  ExpertGemmKernel<float, T, true><<<second_grid, kGemmThreads, 0, stream>>>(g);
  return cudaGetLastError();
}

}  // namespace

size_t ExpertFfnWorkspaceBytes(const cpu::ExpertFfnShape& shape) { return Carve(shape, nullptr).bytes; }

cudaError_t ExpertFfn(const cpu::ExpertFfnShape& shape, cpu::Activation act, FloatType type, const void* hidden,
                      const int32_t* order, const int32_t* counts, const void* gate, const void* wi, const void* wo,
                      void* out, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const Workspace w = Carve(shape, workspace);
  if (workspace == nullptr || workspace_bytes < w.bytes) return cudaErrorInvalidValue;
  if (shape.tokens * shape.dim == 0 || shape.num_experts == 0) return cudaSuccess;
  if (type == FloatType::kFloat16) {
    return Run<__half>(shape, act, w, static_cast<const __half*>(hidden), order, counts,
                       static_cast<const __half*>(gate), static_cast<const __half*>(wi),
                       static_cast<const __half*>(wo), static_cast<__half*>(out), stream);
  }
  return Run<float>(shape, act, w, static_cast<const float*>(hidden), order, counts, static_cast<const float*>(gate),
                    static_cast<const float*>(wi), static_cast<const float*>(wo), static_cast<float*>(out), stream);
}

cudaError_t EnqueueExpertFfnReport(const cpu::ExpertFfnShape& shape, const int32_t* order, const int32_t* counts,
                                   void* report, cudaStream_t stream) {
  int32_t* host = static_cast<int32_t*>(report);
  cudaError_t error = cudaSuccess;
  if (shape.num_experts > 0) {
    error = cudaMemcpyAsync(host, counts, static_cast<size_t>(shape.num_experts) * sizeof(int32_t),
                            cudaMemcpyDeviceToHost, stream);
  }
  if (error == cudaSuccess && shape.tokens > 0) {
    error = cudaMemcpyAsync(host + shape.num_experts, order, static_cast<size_t>(shape.tokens) * sizeof(int32_t),
                            cudaMemcpyDeviceToHost, stream);
  }
  return error;
}

std::string ExpertFfnReportError(const cpu::ExpertFfnShape& shape, const void* report) {
  const int32_t* counts = static_cast<const int32_t*>(report);
  int64_t listed = 0;
  return cpu::CheckExpertDispatch("ExpertFFN", counts + shape.num_experts, counts, shape.tokens, shape.num_experts,
                                  &listed);
}

}  // namespace bucketrt::cuda
