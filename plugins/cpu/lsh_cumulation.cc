#include "cpu/lsh_cumulation.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "bucketrt/validate.h"
#include "cpu/simd.h"

namespace bucketrt::cpu {

namespace {

// Bytes of hash tables one worker keeps hot at once (hash_group * rows * slab floats). Tuned on a
// core with 1 MiB of L2: 256 KiB to 1 MiB ran within 15% of each other, smaller was slower.
constexpr size_t kTableBudgetBytes = 512 * 1024;
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

// A slab row of kChunks * 4 floats, held in registers.
template <int kChunks>
struct Slab {
  F4 v[kChunks];
  static Slab Zero() {
    Slab r;
    for (int c = 0; c < kChunks; ++c) r.v[c] = Splat4(0.0f);
    return r;
  }
  static Slab Load(const float* p) {
    Slab r;
    for (int c = 0; c < kChunks; ++c) r.v[c] = Load4(p + 4 * c);
    return r;
  }
  void Store(float* p) const {
    for (int c = 0; c < kChunks; ++c) Store4(p + 4 * c, v[c]);
  }
  void Add(const float* p) {
    for (int c = 0; c < kChunks; ++c) v[c] += Load4(p + 4 * c);
  }
  void Scale(float s) {
    const F4 s4 = Splat4(s);
    for (int c = 0; c < kChunks; ++c) v[c] = v[c] * s4;
  }
  // p[:] += this
  void AddTo(float* p) const {
    for (int c = 0; c < kChunks; ++c) Store4(p + 4 * c, Load4(p + 4 * c) + v[c]);
  }
};

// One work item, fixed width kChunks * 4: batch row b, columns [d0, d0 + width) of D.
// `tables` is all zeros on entry and is left all zeros.
template <int kChunks>
void RunItem(const Job& job, int64_t b, int64_t d0, float* __restrict__ tables) {
  using Row = Slab<kChunks>;
  constexpr int64_t W = 4 * kChunks;
  const LshCumulationShape& s = *job.shape;
  const LshCumulationPlan& p = *job.plan;
  const int64_t m = s.num_hash, D = s.dim, rows = p.table_rows;
  const uint32_t code_mask = static_cast<uint32_t>(rows - 1);
  const int32_t* __restrict__ kmask = job.key_mask + b * s.num_key;
  const int32_t* __restrict__ khash = job.key_hash + b * s.num_key * m;
  const float* __restrict__ value = job.value + b * s.num_key * D + d0;
  const int32_t* __restrict__ qmask = job.query_mask + b * s.num_query;
  const int32_t* __restrict__ qhash = job.query_hash + b * s.num_query * m;
  float* __restrict__ out = job.out + b * s.num_query * D + d0;
  const float inv_m = 1.0f / static_cast<float>(m);
  auto table_row = [&](int64_t j, int32_t code) {
    return tables + (j * rows + (static_cast<uint32_t>(code) & code_mask)) * W;
  };

  int64_t live_keys = 0;
  for (int64_t k = 0; k < s.num_key; ++k) live_keys += kmask[k] != 0;
  // Restoring zeros by revisiting the keys' rows beats clearing whole tables when keys are few.
  const bool clear_by_keys = live_keys * 2 < rows;

  for (int64_t g0 = 0; g0 < m; g0 += p.hash_group) {
    const int64_t gn = std::min(p.hash_group, m - g0);
    const bool first = g0 == 0, last = g0 + gn == m;

    // Scatter: table_h[code] += value[k, slab] for every live key (the value row stays in registers).
    for (int64_t k = 0; k < s.num_key; ++k) {
      if (!kmask[k]) continue;
      const Row v = Row::Load(value + k * D);
      const int32_t* codes = khash + k * m + g0;
      for (int64_t j = 0; j < gn; ++j) v.AddTo(table_row(j, codes[j]));
    }

    // Gather: each live query sums its buckets over the group in registers.
    for (int64_t q = 0; q < s.num_query; ++q) {
      float* o = out + q * D;
      if (!qmask[q]) {
        if (first) Row::Zero().Store(o);
        continue;
      }
      Row acc = first ? Row::Zero() : Row::Load(o);
      const int32_t* codes = qhash + q * m + g0;
      for (int64_t j = 0; j < gn; ++j) acc.Add(table_row(j, codes[j]));
      if (last) acc.Scale(inv_m);
      acc.Store(o);
    }

    // Leave the tables zero for the next group / item.
    if (clear_by_keys) {
      for (int64_t k = 0; k < s.num_key; ++k) {
        if (!kmask[k]) continue;
        const int32_t* codes = khash + k * m + g0;
        for (int64_t j = 0; j < gn; ++j) Row::Zero().Store(table_row(j, codes[j]));
      }
    } else {
      std::memset(tables, 0, static_cast<size_t>(gn * rows * W) * sizeof(float));
    }
  }
}

// The same for any width (the tail slab of a D that is no multiple of 4), one float at a time.
void RunItemAnyWidth(const Job& job, int64_t b, int64_t d0, int64_t W, float* __restrict__ tables) {
  const LshCumulationShape& s = *job.shape;
  const LshCumulationPlan& p = *job.plan;
  const int64_t m = s.num_hash, D = s.dim, rows = p.table_rows;
  const uint32_t code_mask = static_cast<uint32_t>(rows - 1);
  const int32_t* kmask = job.key_mask + b * s.num_key;
  const int32_t* khash = job.key_hash + b * s.num_key * m;
  const float* value = job.value + b * s.num_key * D + d0;
  const int32_t* qmask = job.query_mask + b * s.num_query;
  const int32_t* qhash = job.query_hash + b * s.num_query * m;
  float* out = job.out + b * s.num_query * D + d0;
  const float inv_m = 1.0f / static_cast<float>(m);
  auto table_row = [&](int64_t j, int32_t code) {
    return tables + (j * rows + (static_cast<uint32_t>(code) & code_mask)) * W;
  };
  for (int64_t g0 = 0; g0 < m; g0 += p.hash_group) {
    const int64_t gn = std::min(p.hash_group, m - g0);
    const bool first = g0 == 0, last = g0 + gn == m;
    for (int64_t k = 0; k < s.num_key; ++k) {
      if (!kmask[k]) continue;
      for (int64_t j = 0; j < gn; ++j) {
        float* t = table_row(j, khash[k * m + g0 + j]);
        for (int64_t i = 0; i < W; ++i) t[i] += value[k * D + i];
      }
    }
    for (int64_t q = 0; q < s.num_query; ++q) {
      float* o = out + q * D;
      for (int64_t i = 0; i < W; ++i) {
        float acc = first ? 0.0f : o[i];
        if (qmask[q]) {
          for (int64_t j = 0; j < gn; ++j) acc += table_row(j, qhash[q * m + g0 + j])[i];
          if (last) acc *= inv_m;
        }
        o[i] = acc;
      }
    }
    std::memset(tables, 0, static_cast<size_t>(gn * rows * W) * sizeof(float));
  }
}

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
    switch (width) {
      case 16: RunItem<4>(job, b, d0, tables); break;
      case 12: RunItem<3>(job, b, d0, tables); break;
      case 8: RunItem<2>(job, b, d0, tables); break;
      case 4: RunItem<1>(job, b, d0, tables); break;
      default: RunItemAnyWidth(job, b, d0, width, tables); break;
    }
  }
}

}  // namespace

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
        if (c < 0 || c >= capacity) {
          return Format("%s: input '%s' has code %d at [%lld, %lld, %lld], outside [0, hashtable_capacity=%lld)", op,
                        input, c, static_cast<long long>(r / rows), static_cast<long long>(r % rows),
                        static_cast<long long>(h), static_cast<long long>(capacity));
        }
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
  p.slab = std::min<int64_t>(LshCumulationPlan::kMaxSlab, s.dim);
  p.num_slabs = (s.dim + p.slab - 1) / p.slab;
  const size_t table_bytes = static_cast<size_t>(p.table_rows) * static_cast<size_t>(p.slab) * sizeof(float);
  p.hash_group = std::max<int64_t>(1, std::min<int64_t>(s.num_hash, kTableBudgetBytes / table_bytes));
  p.num_items = s.batch * p.num_slabs;
  p.floats_per_worker = static_cast<size_t>(p.hash_group) * p.table_rows * p.slab;
  const int64_t by_memory = std::max<int64_t>(1, kScratchBudgetBytes / (p.floats_per_worker * sizeof(float)));
  p.num_workers = std::max<int64_t>(1, std::min({max_workers, p.num_items, by_memory}));
  return p;
}

void LshCumulation(const LshCumulationShape& shape, const LshCumulationPlan& plan, const int32_t* query_mask,
                   const int32_t* query_hash, const int32_t* key_mask, const int32_t* key_hash, const float* value,
                   float* out, float* scratch, const ParallelFor& parallel) {
  if (plan.num_items == 0) return;
  Job job{&shape, &plan, query_mask, query_hash, key_mask, key_hash, value, out, scratch};
  parallel(Worker, static_cast<size_t>(plan.num_workers), &job);
}

}  // namespace bucketrt::cpu
