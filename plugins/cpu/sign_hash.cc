#include "cpu/sign_hash.h"

#include "bucketrt/op_specs.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "bucketrt/validate.h"
#include "cpu/simd.h"

namespace bucketrt::cpu {

namespace {

// Gaussian rows computed together, so that each projection load serves all of them.
constexpr int kGaussianBlock = 4;
// Rows per work item: enough to amortise the scheduling, few enough to balance masks. A multiple
// of every hadamard block width (1, 4, 8) and of kGaussianBlock.
constexpr int64_t kMaxRowsPerItem = 64;
// Gaussian: fewer rows per item where their projections would take more floats than this.
constexpr int64_t kGaussianScratchFloats = int64_t{1} << 16;
// Widest hadamard block (F8), for sizing the scratch.
constexpr int64_t kMaxLanes = 8;

struct Job {
  const SignHashShape* shape;
  const SignHashPlan* plan;
  const int32_t* mask;
  const float* vector;
  const float* projection;
  int32_t* hash;
  float* scratch;
  std::atomic<int64_t> next_item{0};
};

}  // namespace

// The kernels in sign_hash_kernels.inc, compiled for each instruction set (cpu/instantiate_kernels.inc).
#define BUCKETRT_KERNELS_INC "cpu/sign_hash_kernels.inc"
#include "cpu/instantiate_kernels.inc"
#undef BUCKETRT_KERNELS_INC

namespace {

void Worker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const SignHashPlan& p = *job.plan;
  float* scratch = job.scratch + worker * p.floats_per_worker;
  for (;;) {
    const int64_t item = job.next_item.fetch_add(1, std::memory_order_relaxed);
    if (item >= p.num_items) return;
#ifdef BUCKETRT_HAVE_AVX2_VARIANT
    if (p.avx2) {
      avx2::RunItemAt(job, item, scratch);
      continue;
    }
#endif
    generic::RunItemAt(job, item, scratch);
  }
}

}  // namespace

SignHashShape SignHashShapeOf(const Attributes& attrs, const Bindings& env) {
  SignHashShape s;
  const auto dims = spec::SignHash::Dims::From(env);
  s.batch = dims.B;
  s.length = dims.N;
  s.dim = dims.D;
  s.groups = dims.G;
  s.proj_rows = dims.R;
  s.proj_cols = dims.C;
  s.num_hash = attrs.Int("num_hash");
  s.code_len = attrs.Int("hash_code_len");
  s.hadamard = attrs.String("transform") == "hadamard";
  return s;
}

std::string PlanSignHash(const SignHashShape& s, int64_t max_workers, SignHashPlan* plan) {
  if (s.groups < 1 || s.batch % s.groups) {
    return Format("SignHash: input 'projection' has %lld groups, which do not divide the batch %lld",
                  static_cast<long long>(s.groups), static_cast<long long>(s.batch));
  }
  SignHashPlan p;
  if (s.hadamard) {
    if (s.dim & (s.dim - 1)) {
      return Format("SignHash: input 'vector' dim 2 (D) must be a power of two for transform='hadamard', got %lld",
                    static_cast<long long>(s.dim));
    }
    p.per_part = s.dim / s.code_len;
    if (p.per_part < 1) {
      return Format("SignHash: hash_code_len=%lld exceeds the vector dim %lld", static_cast<long long>(s.code_len),
                    static_cast<long long>(s.dim));
    }
    p.parts = std::max<int64_t>(1, s.num_hash / p.per_part + (s.num_hash % p.per_part != 0));
    int64_t rows = 0, lanes_floats = 0;
    // Checked: the dims may be an optimisation profile's bounds (TensorRT plans before any data).
    if (!CheckedMul(3, p.parts, &rows) || !CheckedAdd(2 * s.dim, s.num_hash, &lanes_floats) ||
        !CheckedMul(lanes_floats, kMaxLanes, &lanes_floats)) {
      return SizeOverflowError("SignHash", "the hadamard parts");
    }
    if (s.proj_rows != rows || s.proj_cols != s.dim) {
      return Format(
          "SignHash: input 'projection' must be [G, 3*P, D] = [%lld, %lld, %lld] for transform='hadamard', "
          "got [%lld, %lld, %lld]",
          static_cast<long long>(s.groups), static_cast<long long>(rows), static_cast<long long>(s.dim),
          static_cast<long long>(s.groups), static_cast<long long>(s.proj_rows), static_cast<long long>(s.proj_cols));
    }
    // [D][lanes] inputs and transform, [num_hash][lanes] codes.
    p.floats_per_worker = static_cast<size_t>(lanes_floats);
    p.rows_per_item = kMaxRowsPerItem;
  } else {
    int64_t columns = 0;  // num_hash <= 2^31 - 1 and L <= 30 (the spec's bounds): no overflow, checked all the same
    if (!CheckedMul(s.num_hash, s.code_len, &columns)) return SizeOverflowError("SignHash", "num_hash*hash_code_len");
    if (s.proj_rows != s.dim || s.proj_cols != columns) {
      return Format(
          "SignHash: input 'projection' must be [G, D, num_hash*hash_code_len] = [%lld, %lld, %lld] for "
          "transform='gaussian', got [%lld, %lld, %lld]",
          static_cast<long long>(s.groups), static_cast<long long>(s.dim),
          static_cast<long long>(columns), static_cast<long long>(s.groups),
          static_cast<long long>(s.proj_rows), static_cast<long long>(s.proj_cols));
    }
    // The projections of an item's rows ([rows + kGaussianBlock, C] floats).
    const int64_t C = columns;
    const int64_t blocks = std::min(kMaxRowsPerItem, kGaussianScratchFloats / std::max<int64_t>(1, C)) / kGaussianBlock;
    p.rows_per_item = std::max<int64_t>(1, blocks) * kGaussianBlock;
    int64_t floats = 0;
    if (!CheckedMul(p.rows_per_item + kGaussianBlock, C, &floats)) return SizeOverflowError("SignHash", "the scratch");
    p.floats_per_worker = static_cast<size_t>(floats);
  }
  p.floats_per_worker = (p.floats_per_worker + 15) / 16 * 16;  // 64-byte multiples
  p.avx2 = UseAvx2();
  p.items_per_batch = s.length / p.rows_per_item + (s.length % p.rows_per_item != 0);
  if (!CheckedMul(s.batch, p.items_per_batch, &p.num_items)) return SizeOverflowError("SignHash", "the work items");
  p.num_workers = std::max<int64_t>(1, std::min(max_workers, p.num_items));
  *plan = p;
  return {};
}

void SignHash(const SignHashShape& shape, const SignHashPlan& plan, const int32_t* mask, const float* vector,
              const float* projection, int32_t* hash, float* scratch, const ParallelFor& parallel) {
  if (plan.num_items == 0) return;
  Job job{&shape, &plan, mask, vector, projection, hash, scratch};
  parallel(Worker, static_cast<size_t>(plan.num_workers), &job);
}

}  // namespace bucketrt::cpu
