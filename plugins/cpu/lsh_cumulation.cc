#include "cpu/lsh_cumulation.h"

#include "bucketrt/op_specs.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "bucketrt/validate.h"
#include "cpu/simd.h"

namespace bucketrt::cpu {

namespace {

// Bytes of hash tables one worker keeps hot at once (hash_group * rows * slab floats). Tuned on a
// core with 1 MiB of L2: with the SSE code 256 KiB to 1 MiB ran within 15% of each other, smaller
// was slower; with AVX2, each pass over the keys and queries (one per hash group) costs more than
// the tables' spilling out of L2: at B=12, N=4096, D=64, capacity 512, 1 MiB ran m=64 and m=128
// 20-25% faster than 512 KiB (2 passes instead of 4, 4 instead of 8), m=16 and m=32 the same.
constexpr size_t kTableBudgetBytes = 1024 * 1024;
// Bound on all workers' scratch together; beyond it fewer workers run.
constexpr size_t kScratchBudgetBytes = size_t{1} << 30;

struct Job {
  const LshCumulationShape* shape;
  const LshCumulationPlan* plan;
  const int32_t* query_mask;
  const int32_t* query_hash;
  const int32_t* key_mask;
  const int32_t* key_hash;
  const float* value;
  float* out;
  float* scratch;
  std::atomic<int64_t> next_item{0};
};

}  // namespace

// The kernels in lsh_cumulation_kernels.inc, compiled for each instruction set (cpu/instantiate_kernels.inc).
#define BUCKETRT_KERNELS_INC "cpu/lsh_cumulation_kernels.inc"
#include "cpu/instantiate_kernels.inc"
#undef BUCKETRT_KERNELS_INC

namespace {

void Worker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const LshCumulationPlan& p = *job.plan;
  float* tables = job.scratch + worker * p.floats_per_worker;
  bool zeroed = false;
  for (;;) {
    const int64_t item = job.next_item.fetch_add(1, std::memory_order_relaxed);
    if (item >= p.num_items) return;
    if (!zeroed) {
      std::memset(tables, 0, p.floats_per_worker * sizeof(float));
      zeroed = true;
    }
    const int64_t b = item / p.num_slabs;
    const int64_t d0 = (item % p.num_slabs) * p.slab;
    const int64_t width = std::min(p.slab, job.shape->dim - d0);
#ifdef BUCKETRT_HAVE_AVX2_VARIANT
    if (p.avx2) {
      avx2::RunItemAt(job, b, d0, width, tables);
      continue;
    }
#endif
    generic::RunItemAt(job, b, d0, width, tables);
  }
}

// Renumbering the codes (plan.compact): one segment is one (batch row, hash) pair.
struct CompactJob {
  const LshCumulationShape* shape;
  const int32_t* query_mask;
  const int32_t* query_hash;
  const int32_t* key_mask;
  const int32_t* key_hash;
  int32_t* compact_query;   // [B, Nq, m]
  int32_t* compact_key;     // [B, Nk, m]
  int32_t* distinct;        // Nk ints per worker
  std::atomic<int64_t> next_segment{0};
};

void CompactWorker(void* data, size_t worker) {
  CompactJob& job = *static_cast<CompactJob*>(data);
  const LshCumulationShape& s = *job.shape;
  const int64_t m = s.num_hash;
  int32_t* distinct = job.distinct + worker * s.num_key;
  for (;;) {
    const int64_t segment = job.next_segment.fetch_add(1, std::memory_order_relaxed);
    if (segment >= s.batch * m) return;
    const int64_t b = segment / m, h = segment % m;
    const int32_t* kmask = job.key_mask + b * s.num_key;
    const int32_t* khash = job.key_hash + b * s.num_key * m + h;
    int32_t* kout = job.compact_key + b * s.num_key * m + h;
    int64_t n = 0;
    for (int64_t k = 0; k < s.num_key; ++k) {
      if (kmask[k]) distinct[n++] = khash[k * m];
    }
    std::sort(distinct, distinct + n);
    n = std::unique(distinct, distinct + n) - distinct;
    // Masked rows' codes are never read by the kernel; 0 keeps them in range all the same.
    for (int64_t k = 0; k < s.num_key; ++k) {
      kout[k * m] = kmask[k] ? static_cast<int32_t>(std::lower_bound(distinct, distinct + n, khash[k * m]) - distinct)
                             : 0;
    }
    const int32_t* qmask = job.query_mask + b * s.num_query;
    const int32_t* qhash = job.query_hash + b * s.num_query * m + h;
    int32_t* qout = job.compact_query + b * s.num_query * m + h;
    for (int64_t q = 0; q < s.num_query; ++q) {
      int32_t id = 0;
      if (qmask[q]) {
        const int32_t code = qhash[q * m];
        const int32_t* at = std::lower_bound(distinct, distinct + n, code);
        // No live key has this code: the row past the keys' codes, which stays zero.
        id = static_cast<int32_t>(at != distinct + n && *at == code ? at - distinct : n);
      }
      qout[q * m] = id;
    }
  }
}

}  // namespace

LshCumulationShape LshCumulationShapeOf(const Attributes& attrs, const Bindings& env) {
  LshCumulationShape s;
  const auto dims = spec::LSHCumulation::Dims::From(env);
  s.batch = dims.B;
  s.num_query = dims.Nq;
  s.num_key = dims.Nk;
  s.num_hash = dims.m;
  s.dim = dims.D;
  s.capacity = attrs.Int("hashtable_capacity");
  return s;
}

std::string LshCodeError(const char* op, const char* input, int32_t code, int64_t b, int64_t r, int64_t h,
                         int64_t capacity) {
  return Format("%s: input '%s' has code %d at [%lld, %lld, %lld], outside [0, hashtable_capacity=%lld)", op, input,
                code, static_cast<long long>(b), static_cast<long long>(r), static_cast<long long>(h),
                static_cast<long long>(capacity));
}

std::string CheckLshCodes(const char* op, const char* input, const int32_t* mask, const int32_t* codes,
                          int64_t batch, int64_t rows, int64_t num_hash, int64_t capacity, int64_t* max_code) {
  // Fast pass: min/max over live rows (vectorises); a slow pass finds the culprit if needed.
  int32_t lo = 0, hi = -1;
  bool any = false;
  for (int64_t r = 0; r < batch * rows; ++r) {
    if (!mask[r]) continue;
    const int32_t* c = codes + r * num_hash;
    int32_t row_lo = c[0], row_hi = c[0];
    for (int64_t h = 1; h < num_hash; ++h) {
      row_lo = std::min(row_lo, c[h]);
      row_hi = std::max(row_hi, c[h]);
    }
    lo = any ? std::min(lo, row_lo) : row_lo;
    hi = any ? std::max(hi, row_hi) : row_hi;
    any = true;
  }
  if (any && (lo < 0 || hi >= capacity)) {
    for (int64_t r = 0; r < batch * rows; ++r) {
      if (!mask[r]) continue;
      for (int64_t h = 0; h < num_hash; ++h) {
        const int32_t c = codes[r * num_hash + h];
        if (c < 0 || c >= capacity) return LshCodeError(op, input, c, r / rows, r % rows, h, capacity);
      }
    }
  }
  if (any && max_code) *max_code = std::max<int64_t>(*max_code, hi);
  return {};
}

LshCumulationPlan PlanLshCumulation(const LshCumulationShape& s, int64_t max_code, int64_t max_workers) {
  LshCumulationPlan p;
  // Tables only need to reach the largest live code: a big capacity with small codes stays cheap.
  p.table_rows = 1;
  while (p.table_rows <= max_code && p.table_rows < s.capacity) p.table_rows *= 2;
  // Compacted, every table needs a row per distinct live key code (at most Nk) and one empty row.
  int64_t compact_rows = 1;
  while (compact_rows <= s.num_key) compact_rows *= 2;
  if (p.table_rows > LshCumulationPlan::kMaxDirectRows &&
      p.table_rows / LshCumulationPlan::kCompactFactor > compact_rows) {
    p.compact = true;
    p.table_rows = compact_rows;
  }
  p.slab = std::min<int64_t>(LshCumulationPlan::kMaxSlab, s.dim);
  p.num_slabs = (s.dim + p.slab - 1) / p.slab;
  const size_t table_bytes = static_cast<size_t>(p.table_rows) * static_cast<size_t>(p.slab) * sizeof(float);
  p.hash_group = std::max<int64_t>(1, std::min<int64_t>(s.num_hash, kTableBudgetBytes / table_bytes));
  p.num_items = s.batch * p.num_slabs;
  p.avx2 = UseAvx2();
  p.floats_per_worker = static_cast<size_t>(p.hash_group) * p.table_rows * p.slab;
  const int64_t by_memory = std::max<int64_t>(1, kScratchBudgetBytes / (p.floats_per_worker * sizeof(float)));
  p.num_workers = std::max<int64_t>(1, std::min({max_workers, p.num_items, by_memory}));
  return p;
}

void LshCumulation(const LshCumulationShape& shape, const LshCumulationPlan& plan, const int32_t* query_mask,
                   const int32_t* query_hash, const int32_t* key_mask, const int32_t* key_hash, const float* value,
                   float* out, float* scratch, const ParallelFor& parallel) {
  if (plan.num_items == 0) return;
  std::vector<int32_t> compact_query, compact_key, distinct;
  if (plan.compact) {
    // Allocated here, not in the workers, so that a failure is an exception in the caller's thread.
    compact_query.resize(static_cast<size_t>(shape.batch * shape.num_query * shape.num_hash));
    compact_key.resize(static_cast<size_t>(shape.batch * shape.num_key * shape.num_hash));
    const int64_t workers = std::max<int64_t>(1, std::min(plan.num_workers, shape.batch * shape.num_hash));
    distinct.resize(static_cast<size_t>(workers * shape.num_key));
    CompactJob compact{&shape,         query_mask,         query_hash,     key_mask, key_hash,
                       compact_query.data(), compact_key.data(), distinct.data()};
    parallel(CompactWorker, static_cast<size_t>(workers), &compact);
    query_hash = compact_query.data();
    key_hash = compact_key.data();
  }
  Job job{&shape, &plan, query_mask, query_hash, key_mask, key_hash, value, out, scratch};
  parallel(Worker, static_cast<size_t>(plan.num_workers), &job);
}

}  // namespace bucketrt::cpu
