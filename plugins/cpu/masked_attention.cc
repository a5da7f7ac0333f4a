#include "cpu/masked_attention.h"

#include <algorithm>
#include <atomic>

#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"
#include "cpu/simd.h"
#include "cpu/simd_switch.h"

namespace bucketrt::cpu {

namespace {

// A tile's logits, at most: 64 queries of 1024 keys (256 KiB, within a core's L2), fewer queries per
// block for longer key spans, one at the least.
constexpr int64_t kBlockQueries = 64;
constexpr int64_t kTileFloats = 64 * 1024;

// Rounded up to whole 64-byte lines (16 floats).
size_t AlignedFloats(size_t floats) { return (floats + 15) / 16 * 16; }

struct Survey {
  int32_t* lo;       // [B * S]: first attended key
  int32_t* hi;       // [B * S]: past the last (hi <= lo: none)
  uint8_t* dense;    // [B * S]: every key in [lo, hi) attended
};

struct Job {
  const MaskedAttentionShape* shape;
  const MaskedAttentionPlan* plan;
  const float *query, *key, *value, *sinks;
  const int32_t* mask;
  float* out;
  float* slots;
  Survey survey;
  int64_t tasks = 0;
  std::atomic<int64_t> next{0};
};

// A query's mask row: its first and last attended key, and whether it attends every key between.
void SurveyOne(void* data, size_t index) {
  Job& job = *static_cast<Job*>(data);
  const MaskedAttentionShape& s = *job.shape;
  const int32_t* m = job.mask + static_cast<int64_t>(index) * s.keys;
  int64_t lo = 0, hi = s.keys;
  while (lo < s.keys && m[lo] == 0) ++lo;
  while (hi > lo && m[hi - 1] == 0) --hi;
  bool dense = true;
  for (int64_t c = lo; c < hi && dense; ++c) dense = m[c] != 0;
  job.survey.lo[index] = static_cast<int32_t>(lo);
  job.survey.hi[index] = static_cast<int32_t>(hi);
  job.survey.dense[index] = dense ? 1 : 0;
}

// Tasks in order of decreasing cost under a causal mask (the last blocks of each head first), so that
// the workers finish together.
void Worker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const MaskedAttentionShape& s = *job.shape;
  const MaskedAttentionPlan& plan = *job.plan;
  float* scores = job.slots + worker * plan.worker_floats;
  const int64_t group = s.heads / s.kv_heads;
  int32_t lo[kBlockQueries], hi[kBlockQueries];
  for (int64_t t = job.next.fetch_add(1); t < job.tasks; t = job.next.fetch_add(1)) {
    const int64_t block = plan.blocks - 1 - t % plan.blocks;
    const int64_t bn = t / plan.blocks, b = bn / s.kv_heads, n = bn % s.kv_heads;
    const int64_t q0 = block * plan.block, rows = std::min(plan.block, s.queries - q0);
    const int64_t first = b * s.queries + q0;  // the block's first (b, s) row
    int64_t span_lo = s.keys, span_hi = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (job.survey.hi[first + r] <= job.survey.lo[first + r]) continue;
      span_lo = std::min<int64_t>(span_lo, job.survey.lo[first + r]);
      span_hi = std::max<int64_t>(span_hi, job.survey.hi[first + r]);
    }
    if (span_hi <= span_lo) span_lo = span_hi = 0;  // no query of the block attends any key
    for (int64_t r = 0; r < rows; ++r) {
      lo[r] = static_cast<int32_t>(job.survey.lo[first + r] - span_lo);
      hi[r] = static_cast<int32_t>(job.survey.hi[first + r] - span_lo);
    }
    const int64_t width = span_hi - span_lo;
    const float* k = job.key + (bn * s.keys + span_lo) * s.dim;
    const float* v = job.value + (bn * s.keys + span_lo) * s.value_dim;
    const int32_t* mask = job.mask + first * s.keys + span_lo;
    // Only the span's values are ever multiplied, so only theirs decide the tile's path (a decoding
    // step's survey of every value read the whole cache once more: as much again as its keys). They
    // come from memory here and from cache in the tile.
    const bool finite = AllFinite(v, width * s.value_dim);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t h = n * group + g;
      const float* q = job.query + ((b * s.heads + h) * s.queries + q0) * s.dim;
      float* out = job.out + ((b * s.queries + q0) * s.heads + h) * s.value_dim;
      plan.tile(q, rows, s.dim, k, width, v, s.value_dim, s.scale, job.sinks[h], lo, hi, job.survey.dense + first,
                mask, s.keys, finite, out, s.heads * s.value_dim, scores);
    }
  }
}

}  // namespace

MaskedAttentionShape MaskedAttentionShapeOf(const Attributes& attrs, const Bindings& env) {
  MaskedAttentionShape s;
  const auto dims = spec::MaskedAttention::Dims::From(env);
  s.batch = dims.B;
  s.heads = dims.H;
  s.kv_heads = dims.N;
  s.queries = dims.S;
  s.keys = dims.T;
  s.dim = dims.D;
  s.value_dim = dims.Dv;
  s.scale = static_cast<float>(attrs.Float("scale"));
  return s;
}

std::string CheckMaskedAttentionShape(const MaskedAttentionShape& s) {
  if (s.kv_heads == 0 || s.heads % s.kv_heads != 0) {
    return Format("MaskedAttention: input 'query' dim 1 (H = %lld) must be a multiple of input 'key' dim 1 (N = %lld)",
                  static_cast<long long>(s.heads), static_cast<long long>(s.kv_heads));
  }
  if (s.keys > INT32_MAX) return Format("MaskedAttention: input 'key' dim 2 (T) must be below 2^31");
  return {};
}

std::string PlanMaskedAttention(const MaskedAttentionShape& s, int64_t max_workers, MaskedAttentionPlan* plan) {
  std::string error = CheckMaskedAttentionShape(s);
  if (!error.empty()) return error;
  static const auto tile = PickSimdVariant<AttentionTileFn>(AttentionTileGeneric, AttentionTileAvx2,
                                                            AttentionTileAvx512, "avx512", kNeedsFma);
  plan->tile = tile.fn;
  plan->block = std::clamp<int64_t>(kTileFloats / std::max<int64_t>(s.keys, 1), 1, kBlockQueries);
  plan->block = std::min(plan->block, std::max<int64_t>(s.queries, 1));
  plan->blocks = (s.queries + plan->block - 1) / plan->block;
  const int64_t tasks = s.batch * s.kv_heads * plan->blocks;
  plan->num_workers = std::max<int64_t>(1, std::min(max_workers, tasks));
  // Every worker's logits start on a 64-byte boundary: Eigen takes a row's unaligned head in scalar
  // code and the rest in vectors, which round exp and sums differently, so a slot's alignment would
  // decide the bits (and vary with the worker that takes a task).
  plan->worker_floats = AlignedFloats(static_cast<size_t>(plan->block * s.keys));
  const size_t rows = static_cast<size_t>(s.batch * s.queries);
  // lo and hi (int32 each) and dense (one byte each), rounded up to whole floats.
  plan->shared_floats = AlignedFloats(2 * rows + (rows + 3) / 4);
  return {};
}

void MaskedAttention(const MaskedAttentionShape& shape, const MaskedAttentionPlan& plan, const float* query,
                     const float* key, const float* value, const int32_t* mask, const float* sinks, float* out,
                     float* scratch, const ParallelFor& parallel) {
  const size_t rows = static_cast<size_t>(shape.batch * shape.queries);
  const size_t heads = static_cast<size_t>(shape.batch * shape.kv_heads);
  if (rows == 0 || shape.heads == 0 || shape.value_dim == 0) return;
  Job job;
  job.shape = &shape;
  job.plan = &plan;
  job.query = query;
  job.key = key;
  job.value = value;
  job.sinks = sinks;
  job.mask = mask;
  job.out = out;
  job.survey.lo = reinterpret_cast<int32_t*>(scratch);
  job.survey.hi = job.survey.lo + rows;
  job.survey.dense = reinterpret_cast<uint8_t*>(job.survey.hi + rows);
  job.slots = scratch + plan.shared_floats;
  parallel(SurveyOne, rows, &job);
  job.tasks = static_cast<int64_t>(heads) * plan.blocks;
  if (plan.num_workers == 1) {
    Worker(&job, 0);
  } else {
    parallel(Worker, static_cast<size_t>(plan.num_workers), &job);
  }
}

}  // namespace bucketrt::cpu
