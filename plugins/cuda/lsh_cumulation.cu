// LSHCumulation kernels: see lsh_cumulation.h for the two ways.
#include "cuda/lsh_cumulation.h"

#include <algorithm>
#include <climits>

#include "bucketrt/validate.h"
#include "cuda/device.cuh"
#include "cuda/radix_sort.h"

namespace bucketrt::cuda {

namespace {

// Dense way: one batch row's m tables must fit this, or the sorted way runs instead.
constexpr int64_t kDenseRowBytes = int64_t{256} << 20;
// Dense way: tables cleared, filled and read per pass; small enough to stay in L2 between kernels.
constexpr int64_t kDenseSliceBytes = int64_t{24} << 20;
// Sorted way: bytes of sort keys, indices and bucket sums per pass (at least one segment).
constexpr int64_t kSortedSliceBytes = int64_t{256} << 20;
// Sorted way: the buffers of one entry (a key's (segment, code) pair): two keys, two indices.
constexpr int64_t kEntryIndexBytes = 2 * 8 + 2 * 4;
// Sorted way: the five entry buffers are each 256-byte aligned inside their region.
constexpr int64_t kEntryRegionSlack = 5 * static_cast<int64_t>(kWorkspaceAlign);

// Every size below is monotone: never smaller when a dim (B, Nq, Nk, m, D) grows, so that the
// workspace TensorRT allocates once for a profile's largest shapes serves all of them
// (LshCumulationWorkspaceBound). Slices are cut from a budget that grows with the dims, never the
// budget from the slices (floor(budget / row) * row is not monotone).

// Dense: the tables' bytes, min(B * per_row, max(kDenseSliceBytes, per_row)); slice_rows of them
// fit. Exact integer arithmetic, no overflow (B * per_row is formed only when it is the smaller).
int64_t DenseTableBytes(int64_t batch, int64_t per_row) {
  if (per_row == 0) return 0;
  const int64_t budget = std::max(kDenseSliceBytes, per_row);
  return batch <= budget / per_row ? batch * per_row : budget;
}

int64_t EntryBytes(int64_t dim) { return kEntryIndexBytes + dim * static_cast<int64_t>(sizeof(float)); }

// Sorted: the bytes of the entry buffers, min(B*m*Nk * e, max(kSortedSliceBytes, Nk * e)) for e =
// EntryBytes(D) (one pass at least holds one segment's Nk entries), without the alignment slack.
int64_t EntryPayloadBytes(int64_t segments, int64_t num_key, int64_t dim) {
  const int64_t per_segment = num_key * EntryBytes(dim);
  if (per_segment == 0) return 0;
  const int64_t budget = std::max(kSortedSliceBytes, per_segment);
  return segments <= budget / per_segment ? segments * per_segment : budget;
}

// Sorted: the entries those bytes hold (at least Nk when any), and the largest value a key's
// segment field takes: slice_segments <= min(B*m, kSortedSliceBytes / kEntryIndexBytes), a bound
// that grows with B and m only, so that the sort's key bits (and its temporary storage) do too.
int64_t EntryCapacity(int64_t segments, int64_t num_key, int64_t dim) {
  return EntryPayloadBytes(segments, num_key, dim) / EntryBytes(dim);
}
int SegmentBits(int64_t largest_segment) {  // enough for 0 .. largest_segment (the masked keys')
  int bits = 0;
  while ((int64_t{1} << bits) <= largest_segment) ++bits;
  return bits;
}
int64_t SegmentFieldBound(int64_t segments) {
  return std::max<int64_t>(1, std::min(segments, kSortedSliceBytes / kEntryIndexBytes));
}

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;
constexpr unsigned long long kNoBadCode = ~0ull;

unsigned Blocks(int64_t threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (threads + kThreads - 1) / kThreads)));
}

// The workspace, carved in a fixed order (Plan counts with base == nullptr).
struct Workspace {
  unsigned long long* first_bad = nullptr;  // smallest flat index of a bad live code (query first)
  float* tables = nullptr;                  // dense: [slice_rows, m, capacity, D] and unused rest
  float* acc = nullptr;                     // sorted: [B, Nq, D] float32 sums over the hashes
  uint64_t* keys_in = nullptr;              // sorted: per pass, (segment, code) of each key
  uint64_t* keys_out = nullptr;
  int32_t* vals_in = nullptr;               // sorted: the key index k of each entry
  int32_t* vals_out = nullptr;
  float* sums = nullptr;                    // sorted: [entries, D] bucket sums at each run's first entry
  void* sort_temp = nullptr;
  size_t bytes = 0;
};

Workspace Carve(const cpu::LshCumulationShape& s, const LshCumulationCudaPlan& p, void* base) {
  WorkspaceLayout layout(base);
  Workspace w;
  w.first_bad = layout.Take<unsigned long long>(1);
  if (!p.sorted) {
    w.tables = layout.Take<float>(p.table_bytes / sizeof(float));
  } else {
    w.acc = layout.Take<float>(static_cast<size_t>(s.batch * s.num_query * s.dim));
    // The entry buffers inside a region of entry_region_bytes (monotone; the buffers' own sizes
    // are not, since fewer entries fit as D grows).
    unsigned char* region = layout.Take<unsigned char>(p.entry_region_bytes);
    WorkspaceLayout entries_layout(region);
    const size_t entries = static_cast<size_t>(p.slice_entries);
    w.keys_in = entries_layout.Take<uint64_t>(entries);
    w.keys_out = entries_layout.Take<uint64_t>(entries);
    w.vals_in = entries_layout.Take<int32_t>(entries);
    w.vals_out = entries_layout.Take<int32_t>(entries);
    w.sums = entries_layout.Take<float>(entries * static_cast<size_t>(s.dim));
    w.sort_temp = layout.Take<unsigned char>(p.sort_temp_bytes);
  }
  w.bytes = layout.bytes();
  return w;
}

// ---- value access, one float or four ---------------------------------------------------------

template <int kVec>
__device__ __forceinline__ void LoadValues(const float* p, int64_t i, float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p + i);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else {
    v[0] = p[i];
  }
}

template <int kVec>
__device__ __forceinline__ void LoadValues(const __half* p, int64_t i, float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    const __half2* h = reinterpret_cast<const __half2*>(p + i);
    const float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
  } else {
    v[0] = __half2float(p[i]);
  }
}

template <int kVec>
__device__ __forceinline__ void StoreValues(float* p, int64_t i, const float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    p[i] = v[0];
  }
}

template <int kVec>
__device__ __forceinline__ void StoreValues(__half* p, int64_t i, const float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    __half2* h = reinterpret_cast<__half2*>(p + i);
    h[0] = __floats2half2_rn(v[0], v[1]);
    h[1] = __floats2half2_rn(v[2], v[3]);
  } else {
    p[i] = __float2half_rn(v[0]);
  }
}

template <int kVec>
__device__ __forceinline__ void AtomicAddValues(float* p, const float (&v)[kVec]) {
  if constexpr (kVec == 4) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
#else
    for (int j = 0; j < 4; ++j) atomicAdd(p + j, v[j]);
#endif
  } else {
    atomicAdd(p, v[0]);
  }
}

// ---- code check --------------------------------------------------------------------------------

// Records in *first_bad the smallest base + i over live rows whose code i is outside [0, capacity).
__global__ void CheckCodesKernel(const int32_t* mask, const int32_t* codes, int64_t entries, int64_t num_hash,
                                 int64_t capacity, unsigned long long base, unsigned long long* first_bad) {
  for (int64_t i = GlobalThread(); i < entries; i += GridThreads()) {
    const int32_t code = codes[i];
    if ((code < 0 || code >= capacity) && mask[i / num_hash] != 0) {
      atomicMin(first_bad, base + static_cast<unsigned long long>(i));
    }
  }
}

// ---- dense way -----------------------------------------------------------------------------------

struct DenseArgs {
  const int32_t* query_mask;
  const int32_t* query_hash;
  const int32_t* key_mask;
  const int32_t* key_hash;
  float* tables;      // [rows, m, capacity, D] for batch rows b0 .. b0 + rows
  int64_t b0, rows;   // the pass's batch rows
  int64_t num_query, num_key, num_hash, dim, capacity;
  uint32_t code_mask;  // capacity - 1: every code lands in its table
  float inv_m;
};

// Thread (key, column group): adds the key's value columns to its bucket in each of the m tables.
template <class T, int kVec>
__global__ void DenseScatterKernel(DenseArgs a, const T* value) {
  const int64_t groups = a.dim / kVec;
  const int64_t total = a.rows * a.num_key * groups;
  const int64_t table_floats = a.num_hash * a.capacity * a.dim;
  for (int64_t i = GlobalThread(); i < total; i += GridThreads()) {
    const int64_t c = (i % groups) * kVec, local = i / groups;  // local = (b - b0) * Nk + k
    const int64_t key = a.b0 * a.num_key + local;
    if (!a.key_mask[key]) continue;
    float v[kVec];
    LoadValues<kVec>(value, key * a.dim + c, v);
    const int32_t* codes = a.key_hash + key * a.num_hash;
    float* table = a.tables + (local / a.num_key) * table_floats + c;
    for (int64_t h = 0; h < a.num_hash; ++h) {
      const int64_t code = static_cast<uint32_t>(codes[h]) & a.code_mask;
      AtomicAddValues<kVec>(table + (h * a.capacity + code) * a.dim, v);
    }
  }
}

// Thread (query, column group): sums the query's m buckets in hash order, then scales by 1/m.
template <class T, int kVec>
__global__ void DenseGatherKernel(DenseArgs a, T* out) {
  const int64_t groups = a.dim / kVec;
  const int64_t total = a.rows * a.num_query * groups;
  const int64_t table_floats = a.num_hash * a.capacity * a.dim;
  for (int64_t i = GlobalThread(); i < total; i += GridThreads()) {
    const int64_t c = (i % groups) * kVec, local = i / groups;  // local = (b - b0) * Nq + q
    const int64_t query = a.b0 * a.num_query + local;
    float acc[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[j] = 0.0f;
    if (a.query_mask[query]) {
      const int32_t* codes = a.query_hash + query * a.num_hash;
      const float* table = a.tables + (local / a.num_query) * table_floats + c;
      for (int64_t h = 0; h < a.num_hash; ++h) {
        const int64_t code = static_cast<uint32_t>(codes[h]) & a.code_mask;
        float t[kVec];
        LoadValues<kVec>(table, (h * a.capacity + code) * a.dim, t);
#pragma unroll
        for (int j = 0; j < kVec; ++j) acc[j] = __fadd_rn(acc[j], t[j]);
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc[j] = __fmul_rn(acc[j], a.inv_m);
    }
    StoreValues<kVec>(out, query * a.dim + c, acc);
  }
}

template <class T, int kVec>
cudaError_t RunDense(const cpu::LshCumulationShape& s, const LshCumulationCudaPlan& p, DenseArgs a, const T* value,
                     T* out, cudaStream_t stream) {
  for (int64_t b0 = 0; b0 < s.batch; b0 += p.slice_rows) {
    a.b0 = b0;
    a.rows = std::min(p.slice_rows, s.batch - b0);
    const size_t table_bytes = static_cast<size_t>(a.rows * s.num_hash * s.capacity * s.dim) * sizeof(float);
    cudaError_t error = cudaMemsetAsync(a.tables, 0, table_bytes, stream);
    if (error != cudaSuccess) return error;
    DenseScatterKernel<T, kVec><<<Blocks(a.rows * s.num_key * (s.dim / kVec)), kThreads, 0, stream>>>(a, value);
    DenseGatherKernel<T, kVec><<<Blocks(a.rows * s.num_query * (s.dim / kVec)), kThreads, 0, stream>>>(a, out);
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  return cudaSuccess;
}

// ---- sorted way --------------------------------------------------------------------------------

struct SortedArgs {
  const int32_t* query_mask;
  const int32_t* query_hash;
  const int32_t* key_mask;
  const int32_t* key_hash;
  int64_t num_query, num_key, num_hash, dim;
  int64_t s0, segments;  // the pass: segments s0 .. s0 + segments, segment s = b * m + h
  int code_bits;
  uint32_t code_mask;    // 2^code_bits - 1
};

// Entry i = (segment s0 + i / Nk, key i % Nk): sort key (s - s0, code) for live keys, (segments, 0)
// for masked ones (they sort last and are skipped); its value is k.
__global__ void MakeKeysKernel(SortedArgs a, uint64_t* keys, int32_t* vals) {
  const int64_t entries = a.segments * a.num_key;
  for (int64_t i = GlobalThread(); i < entries; i += GridThreads()) {
    const int64_t local = i / a.num_key, k = i % a.num_key;
    const int64_t s = a.s0 + local, b = s / a.num_hash, h = s % a.num_hash;
    const int64_t key = b * a.num_key + k;
    const uint64_t code = static_cast<uint32_t>(a.key_hash[key * a.num_hash + h]) & a.code_mask;
    keys[i] = a.key_mask[key] ? (static_cast<uint64_t>(local) << a.code_bits) | code
                              : static_cast<uint64_t>(a.segments) << a.code_bits;
    vals[i] = static_cast<int32_t>(k);
  }
}

// Thread (entry p, column d): at the first entry of each run of equal sort keys (one bucket of one
// segment), sums the run's values in sorted order, i.e. in key order (the sort is stable).
template <class T>
__global__ void RunSumsKernel(SortedArgs a, const uint64_t* keys, const int32_t* vals, const T* value, float* sums,
                              int64_t entries) {
  const int64_t total = entries * a.dim;
  for (int64_t i = GlobalThread(); i < total; i += GridThreads()) {
    const int64_t p = i / a.dim, d = i % a.dim;
    const uint64_t key = keys[p];
    const int64_t local = static_cast<int64_t>(key >> a.code_bits);
    if (local >= a.segments) continue;             // masked keys
    if (p > 0 && keys[p - 1] == key) continue;     // not the run's first entry
    const int64_t b = (a.s0 + local) / a.num_hash;
    const T* v = value + b * a.num_key * a.dim + d;
    float acc = 0.0f;
    for (int64_t j = p; j < entries && keys[j] == key; ++j) {
      acc = __fadd_rn(acc, LoadFloat(v, static_cast<int64_t>(vals[j]) * a.dim));
    }
    sums[p * a.dim + d] = acc;
  }
}

// Thread (query of a batch row in the pass, column d): for each of its hashes in the pass, in hash
// order, finds its bucket's run by binary search and adds the run's sum to acc.
__global__ void SortedGatherKernel(SortedArgs a, const uint64_t* keys, const float* sums, int64_t entries,
                                   float* acc) {
  const int64_t b_first = a.s0 / a.num_hash;
  const int64_t b_last = (a.s0 + a.segments - 1) / a.num_hash;
  const int64_t total = (b_last - b_first + 1) * a.num_query * a.dim;
  for (int64_t i = GlobalThread(); i < total; i += GridThreads()) {
    const int64_t d = i % a.dim, row = i / a.dim;
    const int64_t b = b_first + row / a.num_query;
    const int64_t query = b * a.num_query + row % a.num_query;
    if (!a.query_mask[query]) continue;
    const int64_t h_begin = a.s0 > b * a.num_hash ? a.s0 - b * a.num_hash : 0;
    const int64_t h_end = Min64(a.s0 + a.segments, (b + 1) * a.num_hash) - b * a.num_hash;
    float sum = acc[query * a.dim + d];
    for (int64_t h = h_begin; h < h_end; ++h) {
      const uint64_t code = static_cast<uint32_t>(a.query_hash[query * a.num_hash + h]) & a.code_mask;
      const uint64_t target = (static_cast<uint64_t>(b * a.num_hash + h - a.s0) << a.code_bits) | code;
      int64_t lo = 0, hi = entries;  // first entry with key >= target
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < target) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      if (lo < entries && keys[lo] == target) sum = __fadd_rn(sum, sums[lo * a.dim + d]);
    }
    acc[query * a.dim + d] = sum;
  }
}

template <class T>
__global__ void FinalizeKernel(const int32_t* query_mask, const float* acc, T* out, int64_t queries, int64_t dim,
                               float inv_m) {
  for (int64_t i = GlobalThread(); i < queries * dim; i += GridThreads()) {
    StoreFloat(out, i, query_mask[i / dim] ? __fmul_rn(acc[i], inv_m) : 0.0f);
  }
}

template <class T>
cudaError_t RunSorted(const cpu::LshCumulationShape& s, const LshCumulationCudaPlan& p, const Workspace& w,
                      SortedArgs a, const T* value, T* out, float inv_m, cudaStream_t stream) {
  const int64_t queries = s.batch * s.num_query;
  cudaError_t error =
      cudaMemsetAsync(w.acc, 0, static_cast<size_t>(queries * s.dim) * sizeof(float), stream);
  if (error != cudaSuccess) return error;
  const int64_t all = s.batch * s.num_hash;
  for (int64_t s0 = 0; s0 < all; s0 += p.slice_segments) {
    a.s0 = s0;
    a.segments = std::min(p.slice_segments, all - s0);
    const int64_t entries = a.segments * s.num_key;
    MakeKeysKernel<<<Blocks(entries), kThreads, 0, stream>>>(a, w.keys_in, w.vals_in);
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
    error = RadixSortPairs(w.sort_temp, p.sort_temp_bytes, w.keys_in, w.keys_out, w.vals_in, w.vals_out, entries,
                           p.key_bits, stream);
    if (error != cudaSuccess) return error;
    RunSumsKernel<T><<<Blocks(entries * s.dim), kThreads, 0, stream>>>(a, w.keys_out, w.vals_out, value, w.sums,
                                                                        entries);
    const int64_t rows = (s0 + a.segments - 1) / s.num_hash - s0 / s.num_hash + 1;
    SortedGatherKernel<<<Blocks(rows * s.num_query * s.dim), kThreads, 0, stream>>>(a, w.keys_out, w.sums, entries,
                                                                                    w.acc);
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  FinalizeKernel<T><<<Blocks(queries * s.dim), kThreads, 0, stream>>>(a.query_mask, w.acc, out, queries, s.dim, inv_m);
  return cudaGetLastError();
}

bool Aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <class T>
cudaError_t Run(const cpu::LshCumulationShape& s, const LshCumulationCudaPlan& p, const Workspace& w,
                const int32_t* query_mask, const int32_t* query_hash, const int32_t* key_mask, const int32_t* key_hash,
                const T* value, T* out, cudaStream_t stream) {
  const float inv_m = 1.0f / static_cast<float>(s.num_hash);
  if (!p.sorted) {
    DenseArgs a{query_mask, query_hash, key_mask,   key_hash,
                w.tables,   0,          0,          s.num_query,
                s.num_key,  s.num_hash, s.dim,      s.capacity,
                static_cast<uint32_t>(s.capacity - 1), inv_m};
    // Four columns per thread (16-byte table accesses, vector atomics on sm_90) where aligned.
    const bool vec = s.dim % 4 == 0 && Aligned(value, 4 * sizeof(T)) && Aligned(out, 4 * sizeof(T)) &&
                     Aligned(w.tables, 4 * sizeof(float));
    return vec ? RunDense<T, 4>(s, p, a, value, out, stream) : RunDense<T, 1>(s, p, a, value, out, stream);
  }
  const uint32_t code_mask = p.code_bits == 0 ? 0u : (p.code_bits >= 32 ? ~0u : (1u << p.code_bits) - 1u);
  SortedArgs a{query_mask, query_hash, key_mask, key_hash, s.num_query, s.num_key, s.num_hash, s.dim,
               0,          0,          p.code_bits, code_mask};
  return RunSorted<T>(s, p, w, a, value, out, inv_m, stream);
}

}  // namespace

namespace {

// Bytes of one batch row's m dense tables, in floating point: m * capacity * D * 4 may overflow.
double DenseRowBytes(const cpu::LshCumulationShape& s) {
  return static_cast<double>(s.num_hash) * static_cast<double>(s.capacity) * static_cast<double>(s.dim) *
         sizeof(float);
}

}  // namespace

std::string PlanLshCumulationCuda(const cpu::LshCumulationShape& s, bool deterministic, LshCumulationCudaPlan* plan) {
  LshCumulationCudaPlan p;
  if (!deterministic && DenseRowBytes(s) <= static_cast<double>(kDenseRowBytes)) {
    const int64_t per_row = s.num_hash * s.capacity * s.dim * static_cast<int64_t>(sizeof(float));
    p.table_bytes = static_cast<size_t>(DenseTableBytes(s.batch, per_row));
    p.slice_rows = per_row == 0 ? std::max<int64_t>(1, s.batch)
                                : std::max<int64_t>(1, std::min(s.batch, static_cast<int64_t>(p.table_bytes) / per_row));
  } else {
    p.sorted = true;
    if (s.num_key > INT32_MAX) {
      return Format("LSHCumulation: input 'key_hash' has %lld keys per batch row; the CUDA kernel indexes keys "
                    "in 32 bits",
                    static_cast<long long>(s.num_key));
    }
    while (p.code_bits < 31 && (int64_t{1} << p.code_bits) < s.capacity) ++p.code_bits;
    const int64_t segments = s.batch * s.num_hash;
    p.slice_entries = EntryCapacity(segments, s.num_key, s.dim);
    p.entry_region_bytes = static_cast<size_t>(EntryPayloadBytes(segments, s.num_key, s.dim) + kEntryRegionSlack);
    p.slice_segments = s.num_key == 0 ? std::max<int64_t>(1, segments)
                                      : std::max<int64_t>(1, std::min(segments, p.slice_entries / s.num_key));
    // The sort runs on this slice's bits; its storage is sized for the bound of the segment field,
    // which grows with B and m only (slice_segments may shrink when Nk grows).
    p.key_bits = p.code_bits + SegmentBits(p.slice_segments);
    const cudaError_t error =
        RadixSortPairsTempBytes(p.slice_entries, p.code_bits + SegmentBits(SegmentFieldBound(segments)),
                                &p.sort_temp_bytes);
    if (error != cudaSuccess) return CudaErrorText("LSHCumulation", "planning the key sort", error);
  }
  p.workspace_bytes = Carve(s, p, nullptr).bytes;
  *plan = p;
  return {};
}

size_t LshCumulationWorkspaceBytes(const cpu::LshCumulationShape& shape, bool deterministic) {
  LshCumulationCudaPlan plan;
  return PlanLshCumulationCuda(shape, deterministic, &plan).empty() ? plan.workspace_bytes : 0;
}

std::string LshCumulationWorkspaceBound(const cpu::LshCumulationShape& high, int64_t low_dim, bool deterministic,
                                        size_t* bytes) {
  LshCumulationCudaPlan plan;
  std::string error = PlanLshCumulationCuda(high, deterministic, &plan);
  if (!error.empty()) return error;
  // Dense at the largest shapes: every smaller shape is dense too, and the dense sizes are monotone.
  size_t bound = plan.workspace_bytes;
  if (plan.sorted) {
    // Every term of the sorted workspace is monotone but the sort's storage, whose entries shrink
    // as D grows: sized here for the fewest D of the range (the profile's smallest).
    const int64_t segments = high.batch * high.num_hash;
    LshCumulationCudaPlan widest = plan;
    const cudaError_t sort_error =
        RadixSortPairsTempBytes(EntryCapacity(segments, high.num_key, std::min(std::max<int64_t>(low_dim, 0), high.dim)),
                                plan.code_bits + SegmentBits(SegmentFieldBound(segments)), &widest.sort_temp_bytes);
    if (sort_error != cudaSuccess) return CudaErrorText("LSHCumulation", "planning the key sort", sort_error);
    bound = std::max(bound, Carve(high, widest, nullptr).bytes);
    if (!deterministic) {
      // Smaller m or D may still take the dense way: its largest tables, rows of at most
      // kDenseRowBytes.
      LshCumulationCudaPlan dense;
      const int64_t per_row = DenseRowBytes(high) <= static_cast<double>(kDenseRowBytes)
                                  ? high.num_hash * high.capacity * high.dim * static_cast<int64_t>(sizeof(float))
                                  : kDenseRowBytes;
      dense.table_bytes = static_cast<size_t>(DenseTableBytes(high.batch, per_row));
      bound = std::max(bound, Carve(high, dense, nullptr).bytes);
    }
  }
  *bytes = bound;
  return {};
}

cudaError_t LshCumulation(const cpu::LshCumulationShape& s, const LshCumulationCudaPlan& p, FloatType type,
                          const int32_t* query_mask, const int32_t* query_hash, const int32_t* key_mask,
                          const int32_t* key_hash, const void* value, void* out, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream) {
  const Workspace w = Carve(s, p, workspace);
  if (workspace == nullptr || workspace_bytes < w.bytes) return cudaErrorInvalidValue;
  // The code check first: the compute below clamps codes, the caller reads this afterwards.
  cudaError_t error = cudaMemsetAsync(w.first_bad, 0xff, sizeof(unsigned long long), stream);
  if (error != cudaSuccess) return error;
  const int64_t query_codes = s.batch * s.num_query * s.num_hash, key_codes = s.batch * s.num_key * s.num_hash;
  CheckCodesKernel<<<Blocks(query_codes), kThreads, 0, stream>>>(query_mask, query_hash, query_codes, s.num_hash,
                                                                 s.capacity, 0ull, w.first_bad);
  CheckCodesKernel<<<Blocks(key_codes), kThreads, 0, stream>>>(key_mask, key_hash, key_codes, s.num_hash, s.capacity,
                                                               static_cast<unsigned long long>(query_codes),
                                                               w.first_bad);
  error = cudaGetLastError();
  if (error != cudaSuccess) return error;
  if (type == FloatType::kFloat16) {
    return Run<__half>(s, p, w, query_mask, query_hash, key_mask, key_hash, static_cast<const __half*>(value),
                       static_cast<__half*>(out), stream);
  }
  return Run<float>(s, p, w, query_mask, query_hash, key_mask, key_hash, static_cast<const float*>(value),
                    static_cast<float*>(out), stream);
}

namespace {
__global__ void LshReportKernel(const unsigned long long* first_bad, const int32_t* query_hash,
                                const int32_t* key_hash, unsigned long long query_codes, LshCumulationReport* report) {
  const unsigned long long bad = *first_bad;
  report->first_bad = bad;
  report->code = bad == kNoBadCode ? 0 : bad < query_codes ? query_hash[bad] : key_hash[bad - query_codes];
}
}  // namespace

cudaError_t EnqueueLshCumulationReport(const cpu::LshCumulationShape& s, const int32_t* query_hash,
                                       const int32_t* key_hash, const void* workspace, LshCumulationReport* report,
                                       cudaStream_t stream) {
  // One thread reads the bad code's value too: the host never needs a second, dependent copy.
  LshReportKernel<<<1, 1, 0, stream>>>(static_cast<const unsigned long long*>(workspace), query_hash, key_hash,
                                       static_cast<unsigned long long>(s.batch * s.num_query * s.num_hash), report);
  return cudaGetLastError();
}

std::string LshCumulationReportError(const cpu::LshCumulationShape& s, const LshCumulationReport& report) {
  const unsigned long long first_bad = report.first_bad;
  if (first_bad == kNoBadCode) return {};
  const unsigned long long query_codes = static_cast<unsigned long long>(s.batch * s.num_query * s.num_hash);
  const bool is_query = first_bad < query_codes;
  const int64_t flat = static_cast<int64_t>(is_query ? first_bad : first_bad - query_codes);
  const int64_t rows = is_query ? s.num_query : s.num_key;
  const int64_t row = flat / s.num_hash;
  return cpu::LshCodeError("LSHCumulation", is_query ? "query_hash" : "key_hash", report.code, row / rows, row % rows,
                           flat % s.num_hash, s.capacity);
}

}  // namespace bucketrt::cuda
