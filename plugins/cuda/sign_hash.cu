// SignHash kernels: see sign_hash.h for the scheme.
#include "cuda/sign_hash.h"

#include <algorithm>
#include <type_traits>

#include "cuda/device.cuh"

namespace bucketrt::cuda {

namespace {


// ---- hadamard --------------------------------------------------------------------------------

constexpr int kWarpsPerBlock = 8;
// Elements per lane held in registers: D <= 32 * 32 = 1024.
constexpr int kMaxRegisterChunk = 32;
// D > 1024: warps in flight, each keeping its row's elements and transform in the workspace.
constexpr int64_t kWorkspaceWarps = 1024;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

struct HadamardArgs {
  const int32_t* mask;
  const void* vector;
  const void* projection;
  int32_t* hash;
  int64_t rows;      // B * N
  int64_t length;    // N
  int64_t groups;    // G
  int64_t dim;       // D, a power of two
  int64_t parts;     // P
  int64_t per_part;  // D / L codes per part
  int64_t num_hash;  // m
  int code_len;      // L, 1..30
  float* workspace;  // D > 1024 only: kWorkspaceWarps * (2 * D + D / 32) floats
};

// A lane's elements: element e (e < size()) is the row's element e * 32 + lane (D >= 32), or its
// element lane % D (D < 32, one element per lane).
template <int E>
struct RegisterChunk {
  float v[E];
  __device__ __forceinline__ float& operator[](int e) { return v[e]; }
  static constexpr __device__ int size() { return E; }
};

// The same in the workspace: a lane's element e at p[e * 32], so a warp's accesses coalesce.
struct MemoryChunk {
  float* p;
  int n;
  __device__ __forceinline__ float& operator[](int e) { return p[static_cast<int64_t>(e) * kWarp]; }
  __device__ __forceinline__ int size() const { return n; }
};

// y = src * diag, element-wise (diag: this round's diagonal, element i at diag[i]).
template <class T, class Chunk>
__device__ __forceinline__ void Scale(Chunk& y, Chunk& src, const T* diag, int li) {
#pragma unroll
  for (int e = 0; e < y.size(); ++e) y[e] = __fmul_rn(src[e], LoadFloat(diag, static_cast<int64_t>(e) * kWarp + li));
}

// The butterfly stages h = 32 * eh >= 32, whose pairs (e, e + eh) are in one lane. Registers: the
// stages unrolled at compile time so that every index is a constant.
template <int EH, int E>
struct RegisterStages {
  static __device__ __forceinline__ void Run(RegisterChunk<E>& y) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (e & EH) continue;
      const float a = y.v[e], b = y.v[e + EH];
      y.v[e] = __fadd_rn(a, b);
      y.v[e + EH] = __fsub_rn(a, b);
    }
    RegisterStages<EH * 2, E>::Run(y);
  }
};
template <int E>
struct RegisterStages<E, E> {
  static __device__ __forceinline__ void Run(RegisterChunk<E>&) {}
};

template <int E>
__device__ __forceinline__ void InLaneStages(RegisterChunk<E>& y) {
  RegisterStages<1, E>::Run(y);
}

__device__ __forceinline__ void InLaneStages(MemoryChunk& y) {
  for (int eh = 1; eh < y.size(); eh <<= 1) {
    for (int e = 0; e < y.size(); ++e) {
      if (e & eh) continue;
      const float a = y[e], b = y[e + eh];
      y[e] = __fadd_rn(a, b);
      y[e + eh] = __fsub_rn(a, b);
    }
  }
}

// y = H y, the reference's in-place butterflies on pairs (i, i + h) for h = 1, 2, 4, ... in that
// order: (a, b) -> (a + b, a - b), a at the lower index. h < 32 pairs lanes li and li ^ h of the
// row (a row's lanes are an aligned group of min(D, 32) lanes); h >= 32 pairs elements in a lane.
template <class Chunk>
__device__ __forceinline__ void Transform(Chunk& y, int lanes_per_row, int li) {
  for (int h = 1; h < lanes_per_row; h <<= 1) {
    const bool lower = (li & h) == 0;
#pragma unroll
    for (int e = 0; e < y.size(); ++e) {
      const float other = __shfl_xor_sync(kFullMask, y[e], h);
      y[e] = lower ? __fadd_rn(y[e], other) : __fsub_rn(other, y[e]);
    }
  }
  InLaneStages(y);
}

// The codes of part `part` from its transform y: the sign bits of the warp's elements, gathered
// by ballots (word e holds bit (e * 32 + lane) of a D >= 32 row; D < 32: word 0, row `sub` at bits
// sub * D ...), then code j = bits [j * L, j * L + L) of the row, written by the row's lanes.
template <class Chunk>
__device__ __forceinline__ void WriteCodes(Chunk& y, uint32_t* words, const HadamardArgs& a, int64_t part,
                                           int64_t row, bool valid, bool live, int lane, int sub, int li,
                                           int lanes_per_row) {
#pragma unroll
  for (int e = 0; e < y.size(); ++e) {
    const uint32_t bits = __ballot_sync(kFullMask, y[e] > 0.0f);
    if (lane == 0) words[e] = bits;
  }
  __syncwarp();
  const int64_t first = part * a.per_part;
  const int64_t count = Min64(a.per_part, a.num_hash - first);
  if (valid) {
    const int64_t row_bit = static_cast<int64_t>(sub) * a.dim;  // 0 when D >= 32
    const uint32_t code_mask = (1u << a.code_len) - 1u;
    for (int64_t j = li; j < count; j += lanes_per_row) {
      const int64_t t0 = row_bit + j * a.code_len;
      const int64_t w = t0 >> 5;
      const int off = static_cast<int>(t0 & 31);
      uint32_t code = words[w] >> off;
      if (off + a.code_len > 32) code |= words[w + 1] << (32 - off);
      a.hash[row * a.num_hash + first + j] = live ? static_cast<int32_t>(code & code_mask) : 0;
    }
  }
  __syncwarp();  // the next part rewrites the words
}

// E > 0: a lane's elements in registers (E = D / 32, or 1 for D < 32); E == 0: in the workspace.
template <class T, int E>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarp) HadamardKernel(HadamardArgs a) {
  __shared__ uint32_t shared_words[kWarpsPerBlock][kMaxRegisterChunk];
  const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1);
  const int warp = static_cast<int>(threadIdx.x) / kWarp;
  const int64_t warp_id = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int lanes_per_row = a.dim < kWarp ? static_cast<int>(a.dim) : kWarp;
  const int rows_per_warp = kWarp / lanes_per_row;
  const int sub = lane / lanes_per_row, li = lane % lanes_per_row;
  const T* vector = static_cast<const T*>(a.vector);
  const T* projection = static_cast<const T*>(a.projection);

  using Chunk = typename std::conditional<(E > 0), RegisterChunk<(E > 0 ? E : 1)>, MemoryChunk>::type;
  Chunk x, y;
  uint32_t* words = shared_words[warp];
  if constexpr (E == 0) {
    const int n = static_cast<int>(a.dim / kWarp);
    float* base = a.workspace + warp_id * (2 * a.dim + n);
    x = MemoryChunk{base + lane, n};
    y = MemoryChunk{base + a.dim + lane, n};
    words = reinterpret_cast<uint32_t*>(base + 2 * a.dim);
  }

  for (int64_t row0 = warp_id * rows_per_warp; row0 < a.rows; row0 += warps * rows_per_warp) {
    const int64_t row = row0 + sub;
    const bool valid = row < a.rows;
    const int64_t r = valid ? row : a.rows - 1;  // invalid lanes still take part in the shuffles
    const bool live = valid && a.mask[r] != 0;
    if (rows_per_warp == 1 && !live) {  // the warp's one row is masked (uniform across the warp)
      for (int64_t h = lane; h < a.num_hash; h += kWarp) a.hash[row * a.num_hash + h] = 0;
      continue;
    }
#pragma unroll
    for (int e = 0; e < x.size(); ++e) x[e] = LoadFloat(vector, r * a.dim + static_cast<int64_t>(e) * kWarp + li);
    const int64_t g = (r / a.length) % a.groups;
    const T* diag = projection + g * 3 * a.parts * a.dim;  // round k, part p at row k * P + p
    for (int64_t p = 0; p < a.parts; ++p) {
      Scale(y, x, diag + (0 * a.parts + p) * a.dim, li);
      Transform(y, lanes_per_row, li);
      Scale(y, y, diag + (1 * a.parts + p) * a.dim, li);
      Transform(y, lanes_per_row, li);
      Scale(y, y, diag + (2 * a.parts + p) * a.dim, li);
      Transform(y, lanes_per_row, li);
      WriteCodes(y, words, a, p, row, valid, live, lane, sub, li, lanes_per_row);
    }
  }
}

template <class T>
cudaError_t LaunchHadamard(const HadamardArgs& a, cudaStream_t stream) {
  const int64_t rows_per_warp = a.dim < kWarp ? kWarp / a.dim : 1;
  const int64_t warps = (a.rows + rows_per_warp - 1) / rows_per_warp;
  int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t chunk = a.dim < kWarp ? 1 : a.dim / kWarp;
  blocks = std::min(blocks, chunk > kMaxRegisterChunk ? kWorkspaceWarps / kWarpsPerBlock : kMaxBlocks);
  const dim3 grid(static_cast<unsigned>(blocks)), block(kWarpsPerBlock * kWarp);
  switch (chunk) {
    case 1: HadamardKernel<T, 1><<<grid, block, 0, stream>>>(a); break;
    case 2: HadamardKernel<T, 2><<<grid, block, 0, stream>>>(a); break;
    case 4: HadamardKernel<T, 4><<<grid, block, 0, stream>>>(a); break;
    case 8: HadamardKernel<T, 8><<<grid, block, 0, stream>>>(a); break;
    case 16: HadamardKernel<T, 16><<<grid, block, 0, stream>>>(a); break;
    case 32: HadamardKernel<T, 32><<<grid, block, 0, stream>>>(a); break;
    default: HadamardKernel<T, 0><<<grid, block, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

// ---- gaussian --------------------------------------------------------------------------------

constexpr int kGaussRows = 16;      // rows of one batch row per block
constexpr int kGaussThreads = 128;  // one projection column per thread, a tile of whole hashes
constexpr int kGaussChunk = 128;    // elements of d staged in shared memory at a time

struct GaussianArgs {
  const int32_t* mask;
  const void* vector;
  const void* projection;
  int32_t* hash;
  int64_t length;      // N
  int64_t dim;         // D
  int64_t groups;      // G
  int64_t num_hash;    // m
  int64_t row_blocks;  // ceil(N / kGaussRows)
  int code_len;        // L, 1..30
};

template <class T>
__global__ void __launch_bounds__(kGaussThreads) GaussianKernel(GaussianArgs a) {
  __shared__ float xs[kGaussRows][kGaussChunk];
  __shared__ uint32_t codes[kGaussRows][kGaussThreads];
  // docs/ops.md (catalogue.NONFINITE_PROJECTION_RULE): a row or column holding a NaN or an Inf makes
  // y NaN, bit 0, whatever the sum. Rows are flagged as they are staged, columns as they are read.
  __shared__ int row_nonfinite[kGaussRows];
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < kGaussRows) row_nonfinite[tid] = 0;  // staging writes it after the loop's first barrier
  const int64_t b = blockIdx.x / a.row_blocks;
  const int64_t n0 = (blockIdx.x % a.row_blocks) * kGaussRows;
  const int L = a.code_len;
  const int64_t C = a.num_hash * L;
  const T* x = static_cast<const T*>(a.vector) + b * a.length * a.dim;
  const T* proj = static_cast<const T*>(a.projection) + (b % a.groups) * a.dim * C;
  const int tile_hashes = kGaussThreads / L;  // >= 4 hashes of L <= 30 columns

  for (int64_t h0 = 0; h0 < a.num_hash; h0 += tile_hashes) {
    const int64_t col = h0 * L + tid;
    const bool active = tid < tile_hashes * L && col < C;
    float acc[kGaussRows];
    bool column_nonfinite = false;
#pragma unroll
    for (int r = 0; r < kGaussRows; ++r) acc[r] = 0.0f;
    for (int64_t d0 = 0; d0 < a.dim; d0 += kGaussChunk) {
      const int dn = static_cast<int>(Min64(kGaussChunk, a.dim - d0));
      __syncthreads();  // the previous chunk (and tile) is no longer read
      for (int i = tid; i < kGaussRows * kGaussChunk; i += kGaussThreads) {
        const int r = i / kGaussChunk, dd = i % kGaussChunk;
        const int64_t n = n0 + r;
        xs[r][dd] = (n < a.length && dd < dn) ? LoadFloat(x, n * a.dim + d0 + dd) : 0.0f;
        if (!isfinite(xs[r][dd])) row_nonfinite[r] = 1;  // every writer writes 1
      }
      __syncthreads();
      if (active) {
        // y = sum_d x[d] * p[d], d in order, multiply and add rounded separately (no FMA): the CPU
        // kernel's arithmetic.
        for (int dd = 0; dd < dn; ++dd) {
          const float p = LoadFloat(proj, (d0 + dd) * C + col);
          column_nonfinite |= !isfinite(p);
#pragma unroll
          for (int r = 0; r < kGaussRows; ++r) acc[r] = __fadd_rn(acc[r], __fmul_rn(xs[r][dd], p));
        }
      }
    }
    for (int i = tid; i < kGaussRows * tile_hashes; i += kGaussThreads) codes[i / tile_hashes][i % tile_hashes] = 0u;
    __syncthreads();
    if (active) {
      const int hl = tid / L, bit = tid % L;
#pragma unroll
      for (int r = 0; r < kGaussRows; ++r) {
        if (acc[r] > 0.0f && !column_nonfinite && !row_nonfinite[r]) atomicOr(&codes[r][hl], 1u << bit);
      }
    }
    __syncthreads();
    for (int i = tid; i < kGaussRows * tile_hashes; i += kGaussThreads) {
      const int r = i / tile_hashes, hl = i % tile_hashes;
      const int64_t n = n0 + r, h = h0 + hl;
      if (n < a.length && h < a.num_hash) {
        const int64_t row = b * a.length + n;
        a.hash[row * a.num_hash + h] = a.mask[row] ? static_cast<int32_t>(codes[r][hl]) : 0;
      }
    }
  }
}

}  // namespace

size_t SignHashWorkspaceBytes(const cpu::SignHashShape& shape) {
  if (!shape.hadamard || shape.dim <= int64_t{kWarp} * kMaxRegisterChunk) return 0;
  return static_cast<size_t>(kWorkspaceWarps * (2 * shape.dim + shape.dim / kWarp)) * sizeof(float);
}

cudaError_t SignHash(const cpu::SignHashShape& shape, const cpu::SignHashPlan& plan, FloatType type,
                     const int32_t* mask, const void* vector, const void* projection, int32_t* hash,
                     void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const int64_t rows = shape.batch * shape.length;
  if (rows == 0) return cudaSuccess;
  if (shape.hadamard) {
    HadamardArgs a{mask,          vector,         projection,     hash,          rows,
                   shape.length,  shape.groups,   shape.dim,      plan.parts,    plan.per_part,
                   shape.num_hash, static_cast<int>(shape.code_len), static_cast<float*>(workspace)};
    const size_t needed = SignHashWorkspaceBytes(shape);
    if (needed > 0 && (workspace == nullptr || workspace_bytes < needed)) return cudaErrorInvalidValue;
    return type == FloatType::kFloat16 ? LaunchHadamard<__half>(a, stream) : LaunchHadamard<float>(a, stream);
  }
  GaussianArgs a{mask,         vector,         projection,
                 hash,         shape.length,   shape.dim,
                 shape.groups, shape.num_hash, (shape.length + kGaussRows - 1) / kGaussRows,
                 static_cast<int>(shape.code_len)};
  const int64_t blocks = shape.batch * a.row_blocks;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(blocks)), block(kGaussThreads);
  if (type == FloatType::kFloat16) {
    GaussianKernel<__half><<<grid, block, 0, stream>>>(a);
  } else {
    GaussianKernel<float><<<grid, block, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace bucketrt::cuda
