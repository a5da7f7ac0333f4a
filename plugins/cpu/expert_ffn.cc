#include "cpu/expert_ffn.h"

#include "bucketrt/op_specs.h"
#include "cpu/simd_switch.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "bucketrt/validate.h"

namespace bucketrt::cpu {
namespace {

// Rows per tile: enough tiles for every worker to have about two, but no tile above 256 rows (the
// GEMM's gain flattens there and its scratch stays in L2) and, when there are tokens enough, none
// under 32 (each tile streams its expert's weights once).
constexpr int64_t kMaxTileRows = 256;
constexpr int64_t kMinTileRows = 32;
constexpr int64_t kTilesPerWorker = 2;
// With d_ff slices: tiles per worker to aim for, and the narrowest slice worth a GEMM.
constexpr int64_t kSlicedTilesPerWorker = 8;
constexpr int64_t kMinSlice = 128;

struct Tile {
  int64_t expert;
  int64_t start;  // position in `order`
  int64_t rows;
  int64_t chunk;  // slice of d_ff
};

struct Job {
  const ExpertFfnShape* shape;
  const ExpertFfnPlan* plan;
  Activation act;
  const float* hidden;
  const int32_t* order;
  const float* gate;
  const float* wi;
  const float* wo;
  float* out;
  float* scratch;
  const std::vector<Tile>* tiles;
  ExpertTileFn tile_fn;
  std::atomic<int64_t> next{0};
};

void Worker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const ExpertFfnShape& s = *job.shape;
  const ExpertFfnPlan& plan = *job.plan;
  float* scratch = job.scratch + worker * plan.scratch_floats_per_worker;
  float* partials = job.scratch + plan.workers * plan.scratch_floats_per_worker;
  const int64_t slice = (s.ff + plan.chunks - 1) / plan.chunks;
  for (int64_t i = job.next.fetch_add(1); i < static_cast<int64_t>(job.tiles->size()); i = job.next.fetch_add(1)) {
    const Tile& t = (*job.tiles)[static_cast<size_t>(i)];
    const int64_t f0 = t.chunk * slice, f1 = std::min(s.ff, f0 + slice);
    float* partial = partials + (t.chunk * plan.listed + t.start) * s.dim;
    job.tile_fn(job.hidden, s.dim, s.ff, job.wi + t.expert * s.ff * s.dim, job.wo + t.expert * s.dim * s.ff,
                job.order + t.start, t.rows, f0, f1, job.act, partial, scratch);
  }
}

// Rows [begin, end) of the listed tokens: sum of the slices, times the gate, into the output.
struct CombineJob {
  const ExpertFfnShape* shape;
  const ExpertFfnPlan* plan;
  const int32_t* order;
  const float* gate;
  const float* partials;
  float* out;
  int64_t block;
};

void Combine(void* data, size_t index) {
  const CombineJob& job = *static_cast<const CombineJob*>(data);
  const int64_t D = job.shape->dim, listed = job.plan->listed;
  const int64_t begin = static_cast<int64_t>(index) * job.block, end = std::min(listed, begin + job.block);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t t = job.order[i];
    float* row = job.out + t * D;
    const float* first = job.partials + i * D;
    for (int64_t d = 0; d < D; ++d) row[d] = first[d];
    for (int64_t c = 1; c < job.plan->chunks; ++c) {
      const float* part = job.partials + (c * listed + i) * D;
      for (int64_t d = 0; d < D; ++d) row[d] += part[d];
    }
    const float g = job.gate[t];
    for (int64_t d = 0; d < D; ++d) row[d] *= g;
  }
}

}  // namespace

// ExpertFFN's shape has no attribute in it (activation is the kernel's, not the shape's); attrs
// is taken all the same, so that every op's ShapeOf reads alike.
ExpertFfnShape ExpertFfnShapeOf(const Attributes& /*attrs*/, const Bindings& env) {
  ExpertFfnShape s;
  const auto dims = spec::ExpertFFN::Dims::From(env);
  s.tokens = dims.B * dims.S;
  s.dim = dims.D;
  s.ff = dims.F;
  s.num_experts = dims.E;
  return s;
}

std::string ParseActivation(const std::string& name, Activation* out) {
  return ParseActivation(spec::kExpertFFN.name, name, out);
}

std::string ParseActivation(const char* op, const std::string& name, Activation* out) {
  for (const spec::ActivationName& known : spec::kActivationNames) {
    if (name == known.name) {
      *out = known.function;
      return {};
    }
  }
  return Format("%s: attribute 'activation' has no kernel for '%s'", op, name.c_str());
}

std::string CheckExpertDispatch(const char* op, const int32_t* order, const int32_t* counts, int64_t tokens,
                                int64_t num_experts, int64_t* listed) {
  int64_t total = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (counts[e] < 0) return Format("%s: input 'counts' has a negative count %d", op, counts[e]);
    total += counts[e];
  }
  if (total > tokens) {
    return Format("%s: input 'counts' sums to %lld, more than the %lld tokens of 'order'", op,
                  static_cast<long long>(total), static_cast<long long>(tokens));
  }
  std::vector<bool> seen(static_cast<size_t>(tokens), false);
  int32_t lo = 0, hi = 0;
  for (int64_t i = 0; i < total; ++i) {
    lo = i ? std::min(lo, order[i]) : order[i];
    hi = i ? std::max(hi, order[i]) : order[i];
  }
  if (total && (lo < 0 || hi >= tokens)) {
    return Format("%s: input 'order' lists token indices in [%d, %d], outside [0, %lld)", op, lo, hi,
                  static_cast<long long>(tokens));
  }
  for (int64_t i = 0; i < total; ++i) {
    if (seen[static_cast<size_t>(order[i])]) return Format("%s: input 'order' lists token %d twice", op, order[i]);
    seen[static_cast<size_t>(order[i])] = true;
  }
  *listed = total;
  return {};
}

ExpertFfnPlan PlanExpertFfn(const ExpertFfnShape& shape, const int32_t* counts, int64_t max_workers) {
  int64_t listed = 0;
  for (int64_t e = 0; e < shape.num_experts; ++e) listed += counts[e];
  ExpertFfnPlan plan;
  plan.listed = listed;
  plan.dim = shape.dim;
  const int64_t per_worker = (listed + kTilesPerWorker * max_workers - 1) / (kTilesPerWorker * max_workers);
  plan.tile_rows = std::clamp<int64_t>(per_worker, std::min<int64_t>(kMinTileRows, std::max<int64_t>(listed, 1)),
                                       kMaxTileRows);
  int64_t row_tiles = 0;
  for (int64_t e = 0; e < shape.num_experts; ++e) row_tiles += (counts[e] + plan.tile_rows - 1) / plan.tile_rows;
  // Slice d_ff until there are kSlicedTilesPerWorker tiles per worker, keeping slices >= kMinSlice wide.
  if (max_workers > 1 && row_tiles > 0) {
    const int64_t wanted = (kSlicedTilesPerWorker * max_workers + row_tiles - 1) / row_tiles;
    plan.chunks = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, shape.ff / kMinSlice));
  }
  plan.tiles = row_tiles * plan.chunks;
  plan.workers = std::max<int64_t>(1, std::min(max_workers, plan.tiles));
  const int64_t slice = (shape.ff + plan.chunks - 1) / plan.chunks;
  plan.scratch_floats_per_worker = static_cast<size_t>(plan.tile_rows * (shape.dim + slice));
  return plan;
}

void ExpertFfn(const ExpertFfnShape& shape, const ExpertFfnPlan& plan, Activation act, const float* hidden,
               const int32_t* order, const int32_t* counts, const float* gate, const float* wi, const float* wo,
               float* out, float* scratch, ParallelFor parallel_for) {
  // Dropped tokens (and any not listed) get zero; the combine pass overwrites the listed ones.
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(shape.tokens * shape.dim));
  std::vector<Tile> tiles;
  tiles.reserve(static_cast<size_t>(plan.tiles));
  int64_t start = 0;
  for (int64_t e = 0; e < shape.num_experts; ++e) {
    for (int64_t r = 0; r < counts[e]; r += plan.tile_rows) {
      for (int64_t c = 0; c < plan.chunks; ++c) tiles.push_back({e, start + r, std::min(plan.tile_rows, counts[e] - r), c});
    }
    start += counts[e];
  }
  if (tiles.empty()) return;
  // Largest first: workers pulling from the counter then finish close together (LPT scheduling).
  std::stable_sort(tiles.begin(), tiles.end(), [](const Tile& a, const Tile& b) { return a.rows > b.rows; });
  static const ExpertTileFn tile = PickExpertTile();  // the CPU and BUCKETRT_SIMD, looked at once
  Job job{&shape, &plan, act, hidden, order, gate, wi, wo, out, scratch, &tiles, tile};
  if (plan.workers == 1) {
    Worker(&job, 0);
  } else {
    parallel_for(Worker, static_cast<size_t>(plan.workers), &job);
  }
  CombineJob combine{&shape, &plan, order, gate, scratch + plan.workers * plan.scratch_floats_per_worker, out, 64};
  const int64_t blocks = (plan.listed + combine.block - 1) / combine.block;
  if (blocks == 1 || plan.workers == 1) {
    for (int64_t b = 0; b < blocks; ++b) Combine(&combine, static_cast<size_t>(b));
  } else {
    parallel_for(Combine, static_cast<size_t>(blocks), &combine);
  }
}

ExpertTileFn PickExpertTile(const char** name) {
  static const auto choice = PickSimdVariant<ExpertTileFn>(ExpertTileGeneric, ExpertTileAvx2, ExpertTileAvx512,
                                                           "avx512", kNeedsFma);
  return choice.Take(name);
}

}  // namespace bucketrt::cpu
