#include "cpu/expert_ffn.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "bucketrt/validate.h"

namespace bucketrt::cpu {
namespace {

constexpr std::pair<const char*, Activation> kActivations[] = {
    {"relu", Activation::kRelu},
    {"gelu", Activation::kGelu},
    {"gelu_python", Activation::kGelu},
    {"gelu_10", Activation::kGelu10},
    {"gelu_new", Activation::kGeluTanh},
    {"gelu_pytorch_tanh", Activation::kGeluTanh},
    {"gelu_python_tanh", Activation::kGeluTanh},
    {"gelu_accurate", Activation::kGeluTanh},
    {"gelu_fast", Activation::kGeluTanh},
    {"quick_gelu", Activation::kQuickGelu},
    {"silu", Activation::kSilu},
    {"swish", Activation::kSilu},
    {"relu2", Activation::kRelu2},
    {"relu6", Activation::kRelu6},
    {"leaky_relu", Activation::kLeakyRelu},
    {"sigmoid", Activation::kSigmoid},
    {"tanh", Activation::kTanh},
    {"hardswish", Activation::kHardswish},
    {"mish", Activation::kMish},
    {"laplace", Activation::kLaplace},
    {"sqrtsoftplus", Activation::kSqrtSoftplus},
    {"linear", Activation::kLinear},
};

// Rows per tile: enough tiles for every worker to have about two, but no tile above 256 rows (the
// GEMM's gain flattens there and its scratch stays in L2) and, when there are tokens enough, none
// under 32 (each tile streams its expert's weights once).
constexpr int64_t kMaxTileRows = 256;
constexpr int64_t kMinTileRows = 32;
constexpr int64_t kTilesPerWorker = 2;

// The widest tile the CPU runs; BUCKETRT_SIMD=generic forces the baseline (for tests and comparisons).
ExpertTileFn PickTile() {
  const char* choice = std::getenv("BUCKETRT_SIMD");
  if (choice && std::strcmp(choice, "generic") == 0) return ExpertTileGeneric;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  if (fma && __builtin_cpu_supports("avx512f")) return ExpertTileAvx512;
  if (fma && __builtin_cpu_supports("avx2")) return ExpertTileAvx2;
#endif
  return ExpertTileGeneric;
}

struct Tile {
  int64_t expert;
  int64_t start;
  int64_t rows;
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
  float* scratch = job.scratch + worker * job.plan->scratch_floats_per_worker;
  for (int64_t i = job.next.fetch_add(1); i < static_cast<int64_t>(job.tiles->size()); i = job.next.fetch_add(1)) {
    const Tile& t = (*job.tiles)[static_cast<size_t>(i)];
    job.tile_fn(job.hidden, s.dim, s.ff, job.wi + t.expert * s.ff * s.dim, job.wo + t.expert * s.dim * s.ff,
                job.order + t.start, t.rows, job.gate, job.act, job.out, scratch);
  }
}

}  // namespace

std::string ParseActivation(const std::string& name, Activation* out) {
  for (const auto& [known, act] : kActivations) {
    if (name == known) {
      *out = act;
      return {};
    }
  }
  return Format("ExpertFFN: attribute 'activation' has no kernel for '%s'", name.c_str());
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
  const int64_t per_worker = (listed + kTilesPerWorker * max_workers - 1) / (kTilesPerWorker * max_workers);
  plan.tile_rows = std::clamp<int64_t>(per_worker, std::min<int64_t>(kMinTileRows, std::max<int64_t>(listed, 1)),
                                       kMaxTileRows);
  for (int64_t e = 0; e < shape.num_experts; ++e) plan.tiles += (counts[e] + plan.tile_rows - 1) / plan.tile_rows;
  plan.workers = std::max<int64_t>(1, std::min(max_workers, plan.tiles));
  plan.scratch_floats_per_worker = static_cast<size_t>(plan.tile_rows * (2 * shape.dim + shape.ff));
  return plan;
}

void ExpertFfn(const ExpertFfnShape& shape, const ExpertFfnPlan& plan, Activation act, const float* hidden,
               const int32_t* order, const int32_t* counts, const float* gate, const float* wi, const float* wo,
               float* out, float* scratch, ParallelFor parallel_for) {
  // Dropped tokens (and any not listed) get zero; the tiles overwrite the listed ones.
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(shape.tokens * shape.dim));
  std::vector<Tile> tiles;
  tiles.reserve(static_cast<size_t>(plan.tiles));
  int64_t start = 0;
  for (int64_t e = 0; e < shape.num_experts; ++e) {
    for (int64_t r = 0; r < counts[e]; r += plan.tile_rows) {
      tiles.push_back({e, start + r, std::min(plan.tile_rows, counts[e] - r)});
    }
    start += counts[e];
  }
  if (tiles.empty()) return;
  // Largest first: workers pulling from the counter then finish close together (LPT scheduling).
  std::stable_sort(tiles.begin(), tiles.end(), [](const Tile& a, const Tile& b) { return a.rows > b.rows; });
  const ExpertTileFn tile_fn = PickTile();
  Job job{&shape, &plan, act, hidden, order, gate, wi, wo, out, scratch, &tiles, tile_fn};
  if (plan.workers == 1) {
    Worker(&job, 0);
  } else {
    parallel_for(Worker, static_cast<size_t>(plan.workers), &job);
  }
}

}  // namespace bucketrt::cpu
