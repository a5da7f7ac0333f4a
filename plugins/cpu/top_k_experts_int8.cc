#include "cpu/top_k_experts_int8.h"

#include <algorithm>
#include <atomic>
#include <tuple>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"
#include "cpu/int8_layer.h"

namespace bucketrt::cpu {
namespace {

// Bytes of a block's buffers (128 MiB, as TopKExperts' floats): tokens beyond are the next block's.
constexpr int64_t kBlockBytes = int64_t{1} << 27;

// torch.clamp(x, max=limit) and torch.clamp(x, -limit, limit): a NaN stays NaN (every comparison
// with it is false).
inline float ClampAbove(float x, float limit) { return x > limit ? limit : x; }
inline float ClampBoth(float x, float limit) { return x < -limit ? -limit : (x > limit ? limit : x); }

struct Worker {
  int32_t* acc;     // [kExpertRowBlock, widest slice]
  int32_t* colsum;  // [widest slice]
  float* up;        // [kExpertRowBlock, ff slice]
  uint8_t* packed;  // the task's rows in the AMX GEMM's layout (where it runs)
};

// One projection's tasks.
struct LayerJob {
  const TopKExpertsInt8Shape* shape;
  const TopKExpertsInt8Plan* plan;
  const TopKExpertsConfig* config;
  const std::vector<ExpertTask>* tasks;
  QuantizedRows in;    // the sorted rows, k_len wide
  int64_t k_len;       // D (first) or F (second)
  const int8_t* w;     // [E, n_len, k_len]
  const float* scale;  // [E, n_len]
  const float* bias;   // [E, n_len]
  int64_t n_len;       // G (first) or D (second)
  float* out;          // first: the gated activations [live, F]; second: y [live, D]
  int64_t ld_out;
  uint8_t* slots;
  std::atomic<int64_t> next{0};
};

Worker WorkerSlot(const LayerJob& job, size_t worker) {
  const TopKExpertsInt8Plan& plan = *job.plan;
  uint8_t* base = job.slots + worker * plan.worker_bytes;
  const int64_t widest = std::max(plan.ff_slice, plan.dim_slice);
  Worker w;
  w.acc = reinterpret_cast<int32_t*>(base);
  base += Align64(sizeof(int32_t) * static_cast<size_t>(kExpertRowBlock * widest));
  w.colsum = reinterpret_cast<int32_t*>(base);
  base += Align64(sizeof(int32_t) * static_cast<size_t>(widest));
  w.up = reinterpret_cast<float*>(base);
  base += Align64(sizeof(float) * static_cast<size_t>(kExpertRowBlock * plan.ff_slice));
  w.packed = base;
  return w;
}

// The task's rows through the columns c < cols of weight rows n0.. of its expert (int8_layer.h's
// ProjectInt8Rows). `pack`: the task's rows are not in slot.packed yet (the up half of a first
// projection reuses the gate half's).
void ProjectSlice(const LayerJob& job, const Worker& slot, const ExpertTask& t, int64_t n0, float* dst, int64_t ld,
                  bool pack = true) {
  const int64_t n = t.expert * job.n_len + n0;
  ProjectInt8Rows(job.in, t.start, t.rows, job.k_len, job.w + n * job.k_len, job.scale + n, job.bias + n, t.cols,
                  Int8Slot{slot.acc, slot.colsum, slot.packed}, dst, ld, pack);
}

static_assert(spec::kNumGatings == 5, "catalogue.py's EXPERT_GATINGS changed: give every gating a case");

void FirstWorker(void* data, size_t worker) {
  static const ExpertActivateFn activate = PickExpertActivate();
  LayerJob& job = *static_cast<LayerJob*>(data);
  const TopKExpertsInt8Shape& s = *job.shape;
  const TopKExpertsConfig& config = *job.config;
  const Worker slot = WorkerSlot(job, worker);
  const float limit = config.limit;
  const int64_t n = static_cast<int64_t>(job.tasks->size());
  for (int64_t i = job.next.fetch_add(1); i < n; i = job.next.fetch_add(1)) {
    const ExpertTask& t = (*job.tasks)[static_cast<size_t>(i)];
    // The gate half (or, gating none, all of h) straight into the activations' rows; the up half
    // into the worker's buffer.
    float* g = job.out + t.start * job.ld_out + t.col0;
    ProjectSlice(job, slot, t, t.col0, g, job.ld_out);
    if (config.gating == Gating::kNone) {
      activate(config.act, g, t.rows, t.cols, job.ld_out);
      continue;
    }
    ProjectSlice(job, slot, t, s.ff + t.col0, slot.up, t.cols, /*pack=*/false);
    auto each = [&](auto fn) {
      for (int64_t r = 0; r < t.rows; ++r) {
        float* gr = g + r * job.ld_out;
        const float* ur = slot.up + r * t.cols;
        for (int64_t c = 0; c < t.cols; ++c) fn(gr[c], ur[c]);
      }
    };
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
    switch (config.gating) {
      case Gating::kNone: break;
      case Gating::kGlu:  // act(gate) * up
        activate(config.act, g, t.rows, t.cols, job.ld_out);
        each([](float& gate, float up) { gate = gate * up; });
        break;
      case Gating::kGluClamped:  // act(min(gate, L)) * clamp(up, -L, L)
        each([&](float& gate, float) { gate = ClampAbove(gate, limit); });
        activate(config.act, g, t.rows, t.cols, job.ld_out);
        each([&](float& gate, float up) { gate = gate * ClampBoth(up, limit); });
        break;
      case Gating::kGluClampedAfter:  // min(act(gate), L) * clamp(up, -L, L)
        activate(config.act, g, t.rows, t.cols, job.ld_out);
        each([&](float& gate, float up) { gate = ClampAbove(gate, limit) * ClampBoth(up, limit); });
        break;
      case Gating::kGluClampedOffset:  // act(min(gate, L)) * (clamp(up, -L, L) + 1)
        each([&](float& gate, float) { gate = ClampAbove(gate, limit); });
        activate(config.act, g, t.rows, t.cols, job.ld_out);
        each([&](float& gate, float up) { gate = gate * (ClampBoth(up, limit) + 1.0f); });
        break;
    }
#pragma GCC diagnostic pop
  }
}

void SecondWorker(void* data, size_t worker) {
  LayerJob& job = *static_cast<LayerJob*>(data);
  const Worker slot = WorkerSlot(job, worker);
  const int64_t n = static_cast<int64_t>(job.tasks->size());
  for (int64_t i = job.next.fetch_add(1); i < n; i = job.next.fetch_add(1)) {
    const ExpertTask& t = (*job.tasks)[static_cast<size_t>(i)];
    ProjectSlice(job, slot, t, t.col0, job.out + t.start * job.ld_out + t.col0, job.ld_out);
  }
}

void RunLayer(ParallelFor parallel_for, void (*fn)(void*, size_t), LayerJob* job, int64_t workers) {
  const int64_t n = static_cast<int64_t>(job->tasks->size());
  if (n == 0) return;
  const int64_t used = std::max<int64_t>(1, std::min(workers, n));
  if (used == 1) {
    fn(job, 0);
  } else {
    parallel_for(fn, static_cast<size_t>(used), job);
  }
}

}  // namespace

TopKExpertsInt8Shape TopKExpertsInt8ShapeOf(const Attributes& /*attrs*/, const Bindings& env) {
  TopKExpertsInt8Shape s;
  const auto dims = spec::TopKExpertsInt8::Dims::From(env);
  s.tokens = dims.T;
  s.picks = dims.K;
  s.dim = dims.D;
  s.ff = dims.F;
  s.width = dims.G;
  s.num_experts = dims.E;
  s.op = spec::kTopKExpertsInt8.name;
  return s;
}

std::string CheckTopKExpertsInt8Shape(const TopKExpertsInt8Shape& shape, const TopKExpertsConfig& config) {
  std::string error = CheckTopKExpertsShape(shape, config);
  if (!error.empty()) return error;
  for (const auto& [name, symbol, size] : {std::make_tuple("gate_up", "D", shape.dim),
                                           std::make_tuple("down", "F", shape.ff)}) {
    if (size > spec::kMaxInt8SumLength) {
      return Format("%s: input '%s' dim 2 (%s) is %lld, more than %lld (the int32 sums could overflow)", shape.op,
                    name, symbol, static_cast<long long>(size), static_cast<long long>(spec::kMaxInt8SumLength));
    }
  }
  return {};
}

std::string PlanTopKExpertsInt8(const TopKExpertsInt8Shape& s, int64_t max_workers, TopKExpertsInt8Plan* out) {
  const char* op = s.op;
  TopKExpertsInt8Plan plan;
  // One pair's bytes: its hidden codes (D bytes) and outputs (D floats), its activations (F floats)
  // and their codes (F bytes): 5 (D + F); and two scales and two zero points, 16. Each factor is an
  // input's dim, their product not: checked. (The block's buffers add at most 64 bytes each for
  // alignment: block_bytes below.)
  int64_t per_pair = 0, per_token = 0, columns = 0;
  if (!CheckedAdd(s.dim, s.ff, &columns) || !CheckedMul(columns, 5, &per_pair) ||
      !CheckedAdd(per_pair, 16, &per_pair) || !CheckedMul(per_pair, s.picks, &per_token)) {
    return SizeOverflowError(op, "a token's rows");
  }
  plan.block_tokens = std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(per_token, 1), 1, s.tokens);
  plan.ff_slice = WidestExpertSlice(s.ff);
  plan.dim_slice = WidestExpertSlice(s.dim);
  const int64_t widest = std::max(plan.ff_slice, plan.dim_slice);
  // A worker's int32 sums for a task's rows (at most kExpertRowBlock) by the widest slice, and the
  // up half's floats by F's slice.
  constexpr int64_t kFourBytes = sizeof(int32_t);
  static_assert(sizeof(float) == sizeof(int32_t), "the sums and the up half share a size");
  int64_t acc = 0, up = 0, block = 0, slots = 0, total = 0;
  if (!CheckedMul(kExpertRowBlock * kFourBytes, widest, &acc) ||
      !CheckedMul(kExpertRowBlock * kFourBytes, plan.ff_slice, &up) ||
      !CheckedMul(plan.block_tokens, per_token, &block)) {
    return SizeOverflowError(op, "the scratch");
  }
  const size_t pairs = static_cast<size_t>(plan.block_tokens * s.picks);
  const size_t D = static_cast<size_t>(s.dim), F = static_cast<size_t>(s.ff);
  plan.block_bytes = Align64(pairs * D) + Align64(pairs * F) +
                     Align64(pairs * F * sizeof(float)) + Align64(pairs * D * sizeof(float)) +
                     4 * Align64(pairs * sizeof(float));
  // With AMX, a task's rows packed (at most kExpertRowBlock of D or F codes, and the row of ones).
  const int64_t packed = Int8AmxUsable() ? Int8AmxPackedBytes(kExpertRowBlock, std::max(s.dim, s.ff)) : 0;
  plan.worker_bytes = Align64(static_cast<size_t>(acc)) + Align64(sizeof(int32_t) * static_cast<size_t>(widest)) +
                      Align64(static_cast<size_t>(up)) + Align64(static_cast<size_t>(packed));
  plan.workers = std::max<int64_t>(1, max_workers);
  if (!CheckedMul(static_cast<int64_t>(plan.worker_bytes), plan.workers, &slots) ||
      !CheckedAdd(static_cast<int64_t>(plan.block_bytes), slots, &total) || !CheckedAdd(total, 64, &total)) {
    return SizeOverflowError(op, "the scratch");
  }
  *out = plan;
  return {};
}

void TopKExpertsInt8(const TopKExpertsInt8Shape& shape, const TopKExpertsInt8Plan& plan,
                     const TopKExpertsConfig& config, const float* hidden, const int32_t* expert_index,
                     const float* expert_weight, const int8_t* gate_up, const float* gate_up_scale,
                     const float* gate_up_bias, const int8_t* down, const float* down_scale, const float* down_bias,
                     float* out, void* scratch, ParallelFor parallel_for) {
  const int64_t T = shape.tokens, K = shape.picks, D = shape.dim, F = shape.ff, E = shape.num_experts;
  const size_t pairs = static_cast<size_t>(plan.block_tokens * K);
  uint8_t* next = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  auto take = [&](size_t bytes) {
    uint8_t* p = next;
    next += Align64(bytes);
    return p;
  };
  QuantizedRows xq{take(pairs * D), reinterpret_cast<float*>(take(pairs * sizeof(float))),
                   reinterpret_cast<int32_t*>(take(pairs * sizeof(int32_t)))};
  QuantizedRows aq{take(pairs * F), reinterpret_cast<float*>(take(pairs * sizeof(float))),
                   reinterpret_cast<int32_t*>(take(pairs * sizeof(int32_t)))};
  float* act = reinterpret_cast<float*>(take(pairs * F * sizeof(float)));
  float* y = reinterpret_cast<float*>(take(pairs * D * sizeof(float)));
  uint8_t* slots = next;

  ExpertGroups groups;
  groups.Reset(E, plan.block_tokens * K);
  std::vector<ExpertTask> tasks;
  for (int64_t b0 = 0; b0 < T; b0 += plan.block_tokens) {
    const int64_t tokens = std::min(plan.block_tokens, T - b0);
    // 1. TopKExperts' sort: each expert's pairs in (token, pick) order; E (no expert) left out.
    GroupPicksByExpert(expert_index + b0 * K, b0, tokens, K, E, &groups);
    const int64_t live = groups.live;
    if (live > 0) {
      // 2. The sorted rows' hidden rows quantized (a token's codes are the same for each of its picks).
      QuantizeRows(hidden, groups.token.data(), D, live, xq, plan.workers, parallel_for);
      // 3. The first projection and the gating, per (expert, rows, slice of F).
      MakeExpertTasks(groups, F, &tasks);
      LayerJob first{&shape, &plan, &config, &tasks, xq, D, gate_up, gate_up_scale, gate_up_bias, shape.width,
                     act, F, slots};
      RunLayer(parallel_for, FirstWorker, &first, plan.workers);
      // 4. The activations quantized, each row whole.
      QuantizeRows(act, nullptr, F, live, aq, plan.workers, parallel_for);
      // 5. The second projection, per (expert, rows, slice of D).
      MakeExpertTasks(groups, D, &tasks);
      LayerJob second{&shape, &plan, &config, &tasks, aq, F, down, down_scale, down_bias, D, y, D, slots};
      RunLayer(parallel_for, SecondWorker, &second, plan.workers);
    }
    // 6. Each token's picks, in order.
    CombinePicks(groups, expert_weight + b0 * K, y, out + b0 * D, tokens, K, D, plan.workers, parallel_for);
  }
}

}  // namespace bucketrt::cpu
