#include "cpu/linear_int8.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "bucketrt/op_specs.h"
#include "cpu/int8_layer.h"
#include "cpu/top_k_experts.h"

namespace bucketrt::cpu {
namespace {

// Bytes of a block's codes (64 MiB): rows beyond are the next block's.
constexpr int64_t kBlockBytes = int64_t{1} << 26;
// A row's bytes beside its codes: its scale and zero point.
constexpr int64_t kRowExtraBytes = sizeof(float) + sizeof(int32_t);

struct Job {
  const LinearInt8Shape* shape;
  const LinearInt8Plan* plan;
  const std::vector<ExpertTask>* tasks;
  QuantizedRows in;
  const int8_t* weight;
  const float* scale;
  const float* bias;
  float* out;  // the block's first row
  uint8_t* slots;
  int64_t widest;
  std::atomic<int64_t> next{0};
};

void Work(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const int64_t k_len = job.shape->k_len, n_len = job.shape->n_len;
  const Int8Slot slot = Int8SlotAt(job.slots + worker * job.plan->worker_bytes, kExpertRowBlock, job.widest);
  const int64_t n = static_cast<int64_t>(job.tasks->size());
  for (int64_t i = job.next.fetch_add(1); i < n; i = job.next.fetch_add(1)) {
    const ExpertTask& t = (*job.tasks)[static_cast<size_t>(i)];
    ProjectInt8Rows(job.in, t.start, t.rows, k_len, job.weight + t.col0 * k_len, job.scale + t.col0,
                    job.bias + t.col0, t.cols, slot, job.out + t.start * n_len + t.col0, n_len);
  }
}

}  // namespace

LinearInt8Shape LinearInt8ShapeOf(const Attributes& /*attrs*/, const Bindings& env) {
  const auto dims = spec::LinearInt8::Dims::From(env);
  LinearInt8Shape s;
  s.rows = dims.B * dims.S;  // each a dim of the input, whose element count fits
  s.k_len = dims.K;
  s.n_len = dims.N;
  return s;
}

std::string CheckLinearInt8Shape(const LinearInt8Shape& shape) {
  if (shape.k_len > spec::kMaxInt8SumLength) {
    return Format("LinearInt8: input 'weight' dim 1 (K) is %lld, more than %lld (the int32 sums could overflow)",
                  static_cast<long long>(shape.k_len), static_cast<long long>(spec::kMaxInt8SumLength));
  }
  return {};
}

std::string PlanLinearInt8(const LinearInt8Shape& s, int64_t max_workers, LinearInt8Plan* out) {
  const char* op = spec::kLinearInt8.name;
  LinearInt8Plan plan;
  int64_t per_row = 0, block = 0, slots = 0, total = 0;
  if (!CheckedAdd(s.k_len, kRowExtraBytes, &per_row)) return SizeOverflowError(op, "a row's codes");
  plan.block_rows = std::clamp<int64_t>(kBlockBytes / per_row, 1, std::max<int64_t>(s.rows, 1));
  if (!CheckedMul(plan.block_rows, per_row, &block)) return SizeOverflowError(op, "the scratch");
  const size_t rows = static_cast<size_t>(plan.block_rows), K = static_cast<size_t>(s.k_len);
  plan.block_bytes = Align64(rows * K) + Align64(rows * sizeof(float)) + Align64(rows * sizeof(int32_t));
  plan.worker_bytes = Int8SlotBytes(kExpertRowBlock, WidestExpertSlice(s.n_len), s.k_len);
  plan.workers = std::max<int64_t>(1, max_workers);
  if (!CheckedMul(static_cast<int64_t>(plan.worker_bytes), plan.workers, &slots) ||
      !CheckedAdd(static_cast<int64_t>(plan.block_bytes), slots, &total) || !CheckedAdd(total, 64, &total)) {
    return SizeOverflowError(op, "the scratch");
  }
  *out = plan;
  return {};
}

void LinearInt8(const LinearInt8Shape& shape, const LinearInt8Plan& plan, const float* input, const int8_t* weight,
                const float* weight_scale, const float* bias, float* out, void* scratch, ParallelFor parallel_for) {
  const int64_t K = shape.k_len, N = shape.n_len;
  if (N == 0) return;  // no output (and no slice of nothing to cut)
  const size_t rows = static_cast<size_t>(plan.block_rows);
  uint8_t* next = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  auto take = [&](size_t bytes) {
    uint8_t* p = next;
    next += Align64(bytes);
    return p;
  };
  QuantizedRows q{take(rows * static_cast<size_t>(K)), reinterpret_cast<float*>(take(rows * sizeof(float))),
                  reinterpret_cast<int32_t*>(take(rows * sizeof(int32_t)))};
  uint8_t* slots = next;

  // The tasks cut as one expert's that holds every row of the block (TopKExperts' slicing).
  ExpertGroups groups;
  groups.count = {0};
  groups.first = {0};
  groups.experts = {0};
  std::vector<ExpertTask> tasks;
  for (int64_t r0 = 0; r0 < shape.rows; r0 += plan.block_rows) {
    const int64_t block = std::min(plan.block_rows, shape.rows - r0);
    QuantizeRows(input + r0 * K, nullptr, K, block, q, plan.workers, parallel_for);
    groups.count[0] = block;
    MakeExpertTasks(groups, N, &tasks);
    Job job{&shape, &plan, &tasks, q, weight, weight_scale, bias, out + r0 * N, slots, WidestExpertSlice(N)};
    const int64_t n = static_cast<int64_t>(tasks.size());
    const int64_t used = std::max<int64_t>(1, std::min(plan.workers, n));
    if (used == 1) {
      Work(&job, 0);
    } else {
      parallel_for(Work, static_cast<size_t>(used), &job);
    }
  }
}

}  // namespace bucketrt::cpu
