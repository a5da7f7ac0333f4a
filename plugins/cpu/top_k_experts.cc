#include "cpu/top_k_experts.h"

#include "bucketrt/op_specs.h"
#include "cpu/simd_switch.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "bucketrt/validate.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BUCKETRT_TOPK_F16C 1
#endif

namespace bucketrt::cpu {
namespace {

constexpr int64_t kRowBlock = kExpertRowBlock;
// Columns per task, about. Few rows (decoding): narrow slices, so that the workers share the
// experts' weights, which the dot products stream at memory speed. From the panel GEMM's rows on:
// wide ones, since each task packs its rows again (at 32 rows per expert and 128 columns the packing
// was a quarter of a task's time).
constexpr int64_t kNarrowSlice = 128;
constexpr int64_t kWideSlice = 512;
constexpr int64_t kWideFromRows = kPanelFromRows;
// Floats of a block's buffers (gathered rows / outputs and activations, 128 MiB): tokens beyond are
// the next block's, which reads the experts' weights again.
constexpr int64_t kBlockFloats = int64_t{1} << 25;
// Tokens per combine task; and below this many floats a pass runs in the caller's thread.
constexpr int64_t kCombineTokens = 32;
constexpr int64_t kSerialFloats = int64_t{1} << 15;

// Slices of about `target` columns (a multiple of 16, the last one shorter): their width.
int64_t SliceWidth(int64_t columns, int64_t target) {
  const int64_t slices = (columns + target - 1) / target;
  const int64_t width = ((columns + slices - 1) / slices + 15) / 16 * 16;
  return std::min(width, columns);
}

// The slice width for a block of `rows` rows (the plan's scratch holds the widest).
int64_t SliceFor(int64_t columns, int64_t rows) {
  return SliceWidth(columns, rows >= kWideFromRows ? kWideSlice : kNarrowSlice);
}

using Task = ExpertTask;

struct Job {
  const TopKExpertsShape* shape;
  const TopKExpertsPlan* plan;
  const TopKExpertsConfig* config;
  TopKTiles tiles;
  const void* weights;  // gate_up or down
  const void* bias;
  float* rows;  // [live, D]: gathered hidden rows, then the outputs y
  float* act;   // [live, F]
  float* slots;
  const std::vector<Task>* tasks;
  std::atomic<int64_t> next{0};
};

// The float32 values of `count` elements at `offset` of a float32 or float16 tensor: in place, or
// widened into *spare (which then moves past them).
const float* Floats(const void* tensor, bool half, int64_t offset, int64_t count, float** spare) {
  if (!half) return static_cast<const float*>(tensor) + offset;
  float* out = *spare;
  WidenHalfBits(static_cast<const uint16_t*>(tensor) + offset, out, count);
  *spare += count;
  return out;
}

void FirstWorker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const TopKExpertsShape& s = *job.shape;
  const TopKExpertsPlan& plan = *job.plan;
  const TopKExpertsConfig& config = *job.config;
  const bool gated = config.gating != Gating::kNone;
  float* panel = job.slots + worker * plan.worker_floats;
  float* slot = panel + plan.panel_floats;
  const int64_t n = static_cast<int64_t>(job.tasks->size());
  for (int64_t i = job.next.fetch_add(1); i < n; i = job.next.fetch_add(1)) {
    const Task& t = (*job.tasks)[static_cast<size_t>(i)];
    float* up_scratch = slot;
    float* spare = slot + kRowBlock * plan.ff_slice;  // past the widest up block
    const int64_t matrix = t.expert * s.width * s.dim, bias = t.expert * s.width;
    const float* w_gate = Floats(job.weights, plan.half_weights, matrix + t.col0 * s.dim, t.cols * s.dim, &spare);
    const float* b_gate = Floats(job.bias, plan.half_weights, bias + t.col0, t.cols, &spare);
    const float* w_up = nullptr;
    const float* b_up = nullptr;
    if (gated) {  // up: rows F + c of h
      w_up = Floats(job.weights, plan.half_weights, matrix + (s.ff + t.col0) * s.dim, t.cols * s.dim, &spare);
      b_up = Floats(job.bias, plan.half_weights, bias + s.ff + t.col0, t.cols, &spare);
    }
    job.tiles.first(job.rows + t.start * s.dim, t.rows, s.dim, w_gate, b_gate, w_up, b_up, t.cols, config.act,
                    config.gating, config.limit, job.act + t.start * s.ff + t.col0, s.ff, up_scratch, panel);
  }
}

void SecondWorker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const TopKExpertsShape& s = *job.shape;
  const TopKExpertsPlan& plan = *job.plan;
  float* panel = job.slots + worker * plan.worker_floats;
  float* spare = nullptr;
  const int64_t n = static_cast<int64_t>(job.tasks->size());
  for (int64_t i = job.next.fetch_add(1); i < n; i = job.next.fetch_add(1)) {
    const Task& t = (*job.tasks)[static_cast<size_t>(i)];
    spare = panel + plan.panel_floats;
    const float* w = Floats(job.weights, plan.half_weights, t.expert * s.dim * s.ff + t.col0 * s.ff, t.cols * s.ff,
                            &spare);
    const float* b = Floats(job.bias, plan.half_weights, t.expert * s.dim + t.col0, t.cols, &spare);
    job.tiles.second(job.act + t.start * s.ff, t.rows, s.ff, s.ff, w, b, t.cols, job.rows + t.start * s.dim + t.col0,
                     s.dim, panel);
  }
}

// Runs fn over `tasks` with at most `workers` slots (inline for one).
void RunTasks(ParallelFor parallel_for, void (*fn)(void*, size_t), Job* job, int64_t workers) {
  const int64_t n = static_cast<int64_t>(job->tasks->size());
  if (n == 0) return;
  const int64_t used = std::max<int64_t>(1, std::min(workers, n));
  if (used == 1) {
    fn(job, 0);
  } else {
    parallel_for(fn, static_cast<size_t>(used), job);
  }
}

// Gathers hidden rows into sorted order, in chunks of kCombineTokens rows.
struct GatherJob {
  const float* hidden;
  const int64_t* token;  // per sorted row
  float* rows;
  int64_t dim, live;
};

void Gather(void* data, size_t index) {
  const GatherJob& job = *static_cast<const GatherJob*>(data);
  const int64_t begin = static_cast<int64_t>(index) * kCombineTokens;
  const int64_t end = std::min(job.live, begin + kCombineTokens);
  for (int64_t p = begin; p < end; ++p) {
    std::memcpy(job.rows + p * job.dim, job.hidden + job.token[p] * job.dim,
                sizeof(float) * static_cast<size_t>(job.dim));
  }
}

void RunChunks(ParallelFor parallel_for, void (*fn)(void*, size_t), void* job, int64_t items, int64_t floats,
               int64_t workers) {
  const int64_t chunks = (items + kCombineTokens - 1) / kCombineTokens;
  if (chunks <= 1 || workers <= 1 || floats <= kSerialFloats) {
    for (int64_t c = 0; c < chunks; ++c) fn(job, static_cast<size_t>(c));
  } else {
    parallel_for(fn, static_cast<size_t>(chunks), job);
  }
}

// float16 bits -> float32 (IEEE binary16, subnormals, Inf and NaN payloads kept).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

void WidenHalfGeneric(const uint16_t* src, float* dst, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = HalfToFloat(src[i]);
}

#ifdef BUCKETRT_TOPK_F16C
__attribute__((target("avx,f16c"))) void WidenHalfF16c(const uint16_t* src, float* dst, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < count; ++i) dst[i] = HalfToFloat(src[i]);
}
#endif

using WidenFn = void (*)(const uint16_t*, float*, int64_t);

WidenFn PickWiden() {
#ifdef BUCKETRT_TOPK_F16C
  if (!SimdForcedGeneric()) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) return WidenHalfF16c;
  }
#endif
  return WidenHalfGeneric;
}

std::string LimitedGatings() {
  std::string out;
  for (const spec::GatingName& g : spec::kGatingNames) {
    if (g.limited) out += (out.empty() ? "" : ", ") + std::string(g.name);
  }
  return out;
}

}  // namespace

// Every task of one projection: per expert with rows, its row blocks times column slices (both set
// by the expert's row count and the shape, never by the workers); largest first (workers pulling
// from a counter then finish close together), ties in expert order. An expert's rows are cut into
// equal blocks (300 rows: 150 and 150, not 256 and 44).
void MakeExpertTasks(const ExpertGroups& groups, int64_t columns, std::vector<ExpertTask>* tasks) {
  tasks->clear();
  for (const int64_t e : groups.experts) {
    const int64_t count = groups.count[static_cast<size_t>(e)], first = groups.first[static_cast<size_t>(e)];
    const int64_t blocks = (count + kRowBlock - 1) / kRowBlock;
    const int64_t rows = (count + blocks - 1) / blocks;
    const int64_t slice = SliceFor(columns, rows);
    for (int64_t r = 0; r < count; r += rows) {
      for (int64_t c = 0; c < columns; c += slice) {
        tasks->push_back({e, first + r, std::min(rows, count - r), c, std::min(slice, columns - c)});
      }
    }
  }
  std::stable_sort(tasks->begin(), tasks->end(),
                   [](const ExpertTask& a, const ExpertTask& b) { return a.rows * a.cols > b.rows * b.cols; });
}

int64_t WidestExpertSlice(int64_t columns) {
  return std::max(SliceWidth(columns, kNarrowSlice), SliceWidth(columns, kWideSlice));
}

void ExpertGroups::Reset(int64_t num_experts, int64_t block_pairs) {
  count.assign(static_cast<size_t>(num_experts), 0);
  first.assign(static_cast<size_t>(num_experts), 0);
  experts.clear();
  position.resize(static_cast<size_t>(block_pairs));
  token.resize(static_cast<size_t>(block_pairs));
  live = 0;
}

void GroupPicksByExpert(const int32_t* index, int64_t first_token, int64_t tokens, int64_t picks,
                        int64_t num_experts, ExpertGroups* groups) {
  ExpertGroups& g = *groups;
  const int64_t E = num_experts, K = picks;
  for (const int64_t e : g.experts) g.count[static_cast<size_t>(e)] = 0;  // the last block's
  g.experts.clear();
  for (int64_t i = 0; i < tokens * K; ++i) {
    const int64_t e = index[i];
    if (e == E) continue;
    if (g.count[static_cast<size_t>(e)]++ == 0) g.experts.push_back(e);
  }
  std::sort(g.experts.begin(), g.experts.end());
  int64_t live = 0;
  for (const int64_t e : g.experts) {
    g.first[static_cast<size_t>(e)] = live;
    live += g.count[static_cast<size_t>(e)];
  }
  std::vector<int64_t>& cursor = g.first;  // advanced while scattering, then set back
  for (int64_t i = 0; i < tokens * K; ++i) {
    const int64_t e = index[i];
    if (e == E) {
      g.position[static_cast<size_t>(i)] = -1;
      continue;
    }
    const int64_t p = cursor[static_cast<size_t>(e)]++;
    g.position[static_cast<size_t>(i)] = p;
    g.token[static_cast<size_t>(p)] = first_token + i / K;
  }
  for (const int64_t e : g.experts) g.first[static_cast<size_t>(e)] -= g.count[static_cast<size_t>(e)];
  g.live = live;
}

namespace {

// out[t] = sum over the live picks j in order of weight[t, j] * y[t, j], from 0 (the reference's
// sum: each product rounded, then added; -ffp-contract=off keeps them apart).
struct CombineJob {
  const int64_t* position;  // per (token of the block, pick): sorted row or -1
  const float* weight;      // the block's [tokens, K]
  const float* rows;        // y
  float* out;               // the block's [tokens, D]
  int64_t tokens, picks, dim;
};

void Combine(void* data, size_t index) {
  const CombineJob& job = *static_cast<const CombineJob*>(data);
  const int64_t begin = static_cast<int64_t>(index) * kCombineTokens;
  const int64_t end = std::min(job.tokens, begin + kCombineTokens);
  const int64_t D = job.dim;
  for (int64_t t = begin; t < end; ++t) {
    float* row = job.out + t * D;
    std::fill(row, row + D, 0.0f);
    for (int64_t j = 0; j < job.picks; ++j) {
      const int64_t p = job.position[t * job.picks + j];
      if (p < 0) continue;  // no expert: adds nothing, whatever the weight
      const float w = job.weight[t * job.picks + j];
      const float* y = job.rows + p * D;
      for (int64_t d = 0; d < D; ++d) row[d] = row[d] + w * y[d];
    }
  }
}

}  // namespace

void CombinePicks(const ExpertGroups& groups, const float* weight, const float* y, float* out, int64_t tokens,
                  int64_t picks, int64_t dim, int64_t workers, ParallelFor parallel_for) {
  CombineJob combine{groups.position.data(), weight, y, out, tokens, picks, dim};
  RunChunks(parallel_for, Combine, &combine, tokens, tokens * picks * dim, workers);
}

void WidenHalfBits(const uint16_t* src, float* dst, int64_t count) {
  static const WidenFn widen = PickWiden();
  widen(src, dst, count);
}

TopKTiles PickTopKTiles() {
  // ExpertFFN's rule (the same file compiles both, per instruction set): FMA with AVX2 or AVX-512.
  static const auto first =
      PickSimdVariant<TopKFirstFn>(TopKFirstGeneric, TopKFirstAvx2, TopKFirstAvx512, "avx512", kNeedsFma);
  static const auto second =
      PickSimdVariant<TopKSecondFn>(TopKSecondGeneric, TopKSecondAvx2, TopKSecondAvx512, "avx512", kNeedsFma);
  return {first.fn, second.fn};
}

TopKExpertsShape TopKExpertsShapeOf(const Attributes& /*attrs*/, const Bindings& env) {
  TopKExpertsShape s;
  const auto dims = spec::TopKExperts::Dims::From(env);
  s.tokens = dims.T;
  s.picks = dims.K;
  s.dim = dims.D;
  s.ff = dims.F;
  s.width = dims.G;
  s.num_experts = dims.E;
  return s;
}

std::string CheckTopKExpertsAttributes(const Attributes& attrs, TopKExpertsConfig* config, const char* op) {
  std::string error = ParseActivation(op, attrs.String("activation"), &config->act);
  if (!error.empty()) return error;
  const std::string& gating = attrs.String("gating");
  const spec::GatingName* found = nullptr;
  for (const spec::GatingName& g : spec::kGatingNames) {
    if (gating == g.name) found = &g;
  }
  if (found == nullptr) return Format("%s: attribute 'gating' has no kernel for '%s'", op, gating.c_str());
  config->gating = found->gating;
  const double limit = attrs.Float("limit");  // finite and within the spec's bounds (ResolveAttributes)
  if (found->limited && limit <= 0) {
    return Format("%s: attribute 'limit' must be > 0 for gating '%s', got %g", op, found->name, limit);
  }
  if (!found->limited && limit != 0) {
    return Format("%s: attribute 'limit' applies to gatings %s only; it must be 0 for gating '%s', got %g", op,
                  LimitedGatings().c_str(), found->name, limit);
  }
  config->limit = static_cast<float>(limit);
  return {};
}

std::string CheckTopKExpertsShape(const TopKExpertsShape& shape, const TopKExpertsConfig& config) {
  const bool plain = config.gating == Gating::kNone;
  const int64_t width = plain ? shape.ff : 2 * shape.ff;  // F is an input's dim: 2F fits
  if (shape.width != width) {
    const char* name = "";
    for (const spec::GatingName& g : spec::kGatingNames) {
      if (g.gating == config.gating) name = g.name;
    }
    return Format("%s: input 'gate_up' dim 1 (G) must be %s = %lld for gating '%s', got %lld", shape.op,
                  plain ? "F" : "2*F", static_cast<long long>(width), name, static_cast<long long>(shape.width));
  }
  return {};
}

std::string CheckTopKExpertsIndex(const TopKExpertsShape& shape, const int32_t* expert_index) {
  const int64_t n = shape.tokens * shape.picks, E = shape.num_experts;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = expert_index[i];
    if (e < 0 || e > E) return TopKExpertsIndexError(shape, i, e);
  }
  return {};
}

std::string TopKExpertsIndexError(const TopKExpertsShape& shape, int64_t flat, int64_t index) {
  return Format("%s: input 'expert_index' has %lld at [%lld, %lld], outside [0, E=%lld] (E: no expert)",
                shape.op, static_cast<long long>(index), static_cast<long long>(flat / shape.picks),
                static_cast<long long>(flat % shape.picks), static_cast<long long>(shape.num_experts));
}

std::string PlanTopKExperts(const TopKExpertsShape& s, int64_t max_workers, bool half_weights, TopKExpertsPlan* out) {
  const char* op = spec::kTopKExperts.name;
  TopKExpertsPlan plan;
  plan.dim = s.dim;
  plan.ff = s.ff;
  plan.picks = s.picks;
  plan.half_weights = half_weights;
  // One token's rows: K * (D + F) floats. Each factor is an input's dim, their product not: checked.
  int64_t per_token = 0, columns = 0;
  if (!CheckedAdd(s.dim, s.ff, &columns) || !CheckedMul(s.picks, columns, &per_token)) {
    return SizeOverflowError(op, "a token's rows");
  }
  plan.block_tokens = std::clamp<int64_t>(kBlockFloats / std::max<int64_t>(per_token, 1), 1, s.tokens);
  plan.ff_slice = WidestExpertSlice(s.ff);
  plan.dim_slice = WidestExpertSlice(s.dim);
  // First projection: the up half's [rows, slice] (kRowBlock rows: the tiles' layout), and with
  // float16 weights the slice's gate and up rows and biases; second: its weight rows and bias. Each
  // is at most a few times the floats of one expert's weights (an input), so they fit.
  int64_t first = kRowBlock * plan.ff_slice;
  int64_t second = 0;
  if (half_weights) {
    first += 2 * plan.ff_slice * (s.dim + 1);
    second = plan.dim_slice * (s.ff + 1);
  }
  plan.panel_floats = static_cast<size_t>(PanelScratchFloats(std::max(plan.ff_slice, plan.dim_slice)));
  plan.worker_floats = plan.panel_floats + static_cast<size_t>(std::max(first, second));
  plan.workers = std::max<int64_t>(1, max_workers);
  // The whole scratch, in bytes (a block is at least one token's rows).
  int64_t block = 0, slots = 0, total = 0;
  if (!CheckedMul(plan.block_tokens, per_token, &block) ||
      !CheckedMul(static_cast<int64_t>(plan.worker_floats), plan.workers, &slots) ||
      !CheckedAdd(block, slots, &total) || !CheckedMul(total, static_cast<int64_t>(sizeof(float)), nullptr)) {
    return SizeOverflowError(op, "the scratch");
  }
  *out = plan;
  return {};
}

void TopKExperts(const TopKExpertsShape& shape, const TopKExpertsPlan& plan, const TopKExpertsConfig& config,
                 const float* hidden, const int32_t* expert_index, const float* expert_weight, const void* gate_up,
                 const void* gate_up_bias, const void* down, const void* down_bias, float* out, float* scratch,
                 ParallelFor parallel_for) {
  const int64_t T = shape.tokens, K = shape.picks, D = shape.dim, F = shape.ff, E = shape.num_experts;
  static const TopKTiles tiles = PickTopKTiles();  // the CPU and BUCKETRT_SIMD, looked at once
  float* rows = scratch;
  float* act = scratch + plan.block_tokens * K * D;
  float* slots = scratch + plan.block_floats();
  ExpertGroups groups;
  groups.Reset(E, plan.block_tokens * K);
  std::vector<Task> tasks;
  for (int64_t b0 = 0; b0 < T; b0 += plan.block_tokens) {
    const int64_t tokens = std::min(plan.block_tokens, T - b0);
    // 1. The stable counting sort over the experts present: each expert's pairs in (token, pick)
    // order; E (no expert) left out.
    GroupPicksByExpert(expert_index + b0 * K, b0, tokens, K, E, &groups);
    const int64_t live = groups.live;
    if (live > 0) {
      GatherJob gather{hidden, groups.token.data(), rows, D, live};
      RunChunks(parallel_for, Gather, &gather, live, live * D, plan.workers);
      // 2. The first projection and the gating, per (expert, rows, slice of F).
      MakeExpertTasks(groups, F, &tasks);
      Job first{&shape, &plan, &config, tiles, gate_up, gate_up_bias, rows, act, slots, &tasks};
      RunTasks(parallel_for, FirstWorker, &first, plan.workers);
      // 3. The second projection, per (expert, rows, slice of D), over the gathered rows.
      MakeExpertTasks(groups, D, &tasks);
      Job second{&shape, &plan, &config, tiles, down, down_bias, rows, act, slots, &tasks};
      RunTasks(parallel_for, SecondWorker, &second, plan.workers);
    }
    // 4. Each token's picks, in order.
    CombinePicks(groups, expert_weight + b0 * K, rows, out + b0 * D, tokens, K, D, plan.workers, parallel_for);
  }
}

}  // namespace bucketrt::cpu
