#include "cpu/top_k_experts_int8.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <tuple>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"

namespace bucketrt::cpu {
namespace {

// catalogue.py MAX_INT8_SUM_LENGTH: 255 * 128 * 65536 < 2^31, so no int32 sum can overflow.
constexpr int64_t kMaxSumLength = 65536;
// Bytes of a block's buffers (128 MiB, as TopKExperts' floats): tokens beyond are the next block's.
constexpr int64_t kBlockBytes = int64_t{1} << 27;
// Rows per quantization task; below this many elements a quantization pass runs in the caller.
constexpr int64_t kQuantizeRows = 32;
constexpr int64_t kSerialElements = int64_t{1} << 15;
// Weight rows per GEMM call within a task: the weights' row sums (the GEMM of a row of ones) and
// the rows' GEMM read the same 32 weight rows one after the other, the second time from the cache
// (at D = 4096, 128 KiB). A multiple of the GEMMs' column blocks (4 for VNNI, 2 for AVX2).
constexpr int64_t kWeightRowsPerCall = 32;
// Rows of a task from which the AMX GEMM takes it (where the CPU has AMX): below, most of its tiles'
// 16 rows would be padding, and a decoding step's few rows stream the weights at memory speed
// through VNNI alike.
constexpr int64_t kAmxFromRows = 16;

bool UsesAmx(int64_t rows) { return rows >= kAmxFromRows && Int8AmxUsable(); }

size_t Align(size_t bytes) { return (bytes + 63) / 64 * 64; }

// A block's quantized rows: codes [rows, k_len], each row's scale and zero point.
struct QuantizedRows {
  uint8_t* q;
  float* scale;
  int32_t* zero_point;
};

struct QuantizeJob {
  const float* source;   // [*, k_len]
  const int64_t* index;  // null: row i is source row i; else source row index[i]
  int64_t k_len, rows;
  QuantizedRows out;
};

void QuantizeChunk(void* data, size_t chunk) {
  static const QuantizeRowFn quantize_row = PickQuantizeRow();  // the CPU and BUCKETRT_SIMD, once
  const QuantizeJob& job = *static_cast<const QuantizeJob*>(data);
  const int64_t begin = static_cast<int64_t>(chunk) * kQuantizeRows;
  const int64_t end = std::min(job.rows, begin + kQuantizeRows);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t src = job.index ? job.index[i] : i;
    quantize_row(job.source + src * job.k_len, job.k_len, job.out.q + i * job.k_len, job.out.scale + i,
                 job.out.zero_point + i);
  }
}

void Quantize(QuantizeJob job, int64_t workers, ParallelFor parallel_for) {
  const int64_t chunks = (job.rows + kQuantizeRows - 1) / kQuantizeRows;
  if (chunks <= 1 || workers <= 1 || job.rows * job.k_len <= kSerialElements) {
    for (int64_t c = 0; c < chunks; ++c) QuantizeChunk(&job, static_cast<size_t>(c));
  } else {
    parallel_for(QuantizeChunk, static_cast<size_t>(chunks), &job);
  }
}

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
  const uint8_t* ones;
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
  base += Align(sizeof(int32_t) * static_cast<size_t>(kExpertRowBlock * widest));
  w.colsum = reinterpret_cast<int32_t*>(base);
  base += Align(sizeof(int32_t) * static_cast<size_t>(widest));
  w.up = reinterpret_cast<float*>(base);
  base += Align(sizeof(float) * static_cast<size_t>(kExpertRowBlock * plan.ff_slice));
  w.packed = base;
  return w;
}

// dst[r * ld + c] = float(sum_k (q_r - zp_r) w[n0 + c]) * (s_r * scale[n0 + c]) + bias[n0 + c] for the
// task's rows r and columns c < cols of weight rows n0.. (one expert's): L of the reference, then
// the bias, each one float32 operation. `pack`: the task's rows are not in slot.packed yet (the up
// half of a first projection reuses the gate half's).
void ProjectSlice(const LayerJob& job, const Worker& slot, const ExpertTask& t, int64_t n0, float* dst, int64_t ld,
                  bool pack = true) {
  static const Int8GemmFn gemm = PickInt8Gemm();  // the CPU and BUCKETRT_SIMD, looked at once
  const int64_t k_len = job.k_len, cols = t.cols;
  const int8_t* w = job.w + (t.expert * job.n_len + n0) * k_len;
  const uint8_t* x = job.in.q + t.start * k_len;
  // sum_k (q - zp) w = sum_k q w - zp sum_k w: the weights' row sums, as the GEMM of a row of ones.
  if (UsesAmx(t.rows)) {
    if (pack) PackInt8RowsAmx(x, t.rows, k_len, slot.packed);  // with the row of ones
    Int8GemmAmx(slot.packed, t.rows, w, cols, k_len, slot.acc, cols, slot.colsum);
  } else {
    for (int64_t c = 0; c < cols; c += kWeightRowsPerCall) {
      const int64_t n = std::min(kWeightRowsPerCall, cols - c);
      gemm(job.ones, 1, w + c * k_len, n, k_len, slot.colsum + c, n);
      gemm(x, t.rows, w + c * k_len, n, k_len, slot.acc + c, cols);
    }
  }
  const float* scale = job.scale + t.expert * job.n_len + n0;
  const float* bias = job.bias + t.expert * job.n_len + n0;
  // The exact integer a - zp * colsum (|zp * colsum| <= 255 * 127 * 65536 < 2^53) in double, which
  // the compiler vectorizes on any x86-64 (the int64 form was one scalar conversion per element, 12%
  // of the kernel at a prefill's shapes); its rounding to float is the int64's.
  for (int64_t r = 0; r < t.rows; ++r) {
    const float s = job.in.scale[t.start + r];
    const double zp = job.in.zero_point[t.start + r];
    const int32_t* a = slot.acc + r * cols;
    float* o = dst + r * ld;
    for (int64_t c = 0; c < cols; ++c) {
      o[c] = static_cast<float>(static_cast<double>(a[c]) - zp * static_cast<double>(slot.colsum[c])) *
                 (s * scale[c]) +
             bias[c];
    }
  }
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
    if (size > kMaxSumLength) {
      return Format("%s: input '%s' dim 2 (%s) is %lld, more than %lld (the int32 sums could overflow)", shape.op,
                    name, symbol, static_cast<long long>(size), static_cast<long long>(kMaxSumLength));
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
  plan.block_bytes = Align(static_cast<size_t>(std::max(s.dim, s.ff))) + Align(pairs * D) + Align(pairs * F) +
                     Align(pairs * F * sizeof(float)) + Align(pairs * D * sizeof(float)) +
                     4 * Align(pairs * sizeof(float));
  // With AMX, a task's rows packed (at most kExpertRowBlock of D or F codes, and the row of ones).
  const int64_t packed = Int8AmxUsable() ? Int8AmxPackedBytes(kExpertRowBlock, std::max(s.dim, s.ff)) : 0;
  plan.worker_bytes = Align(static_cast<size_t>(acc)) + Align(sizeof(int32_t) * static_cast<size_t>(widest)) +
                      Align(static_cast<size_t>(up)) + Align(static_cast<size_t>(packed));
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
    next += Align(bytes);
    return p;
  };
  const size_t widest_k = static_cast<size_t>(std::max(D, F));
  uint8_t* ones = take(widest_k);
  std::memset(ones, 1, widest_k);
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
      Quantize(QuantizeJob{hidden, groups.token.data(), D, live, xq}, plan.workers, parallel_for);
      // 3. The first projection and the gating, per (expert, rows, slice of F).
      MakeExpertTasks(groups, F, &tasks);
      LayerJob first{&shape, &plan, &config, &tasks, xq, D, gate_up, gate_up_scale, gate_up_bias, shape.width,
                     ones, act, F, slots};
      RunLayer(parallel_for, FirstWorker, &first, plan.workers);
      // 4. The activations quantized, each row whole.
      Quantize(QuantizeJob{act, nullptr, F, live, aq}, plan.workers, parallel_for);
      // 5. The second projection, per (expert, rows, slice of D).
      MakeExpertTasks(groups, D, &tasks);
      LayerJob second{&shape, &plan, &config, &tasks, aq, F, down, down_scale, down_bias, D, ones, y, D, slots};
      RunLayer(parallel_for, SecondWorker, &second, plan.workers);
    }
    // 6. Each token's picks, in order.
    CombinePicks(groups, expert_weight + b0 * K, y, out + b0 * D, tokens, K, D, plan.workers, parallel_for);
  }
}

}  // namespace bucketrt::cpu
