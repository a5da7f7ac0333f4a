#include "cpu/sign_hash.h"

#include <algorithm>
#include <atomic>

#include "bucketrt/validate.h"
#include "cpu/simd.h"

namespace bucketrt::cpu {

namespace {

// Gaussian rows computed together, so that each projection load serves all of them.
constexpr int kGaussianBlock = 4;
// Rows per work item: enough to amortise the scheduling, few enough to balance masks.
constexpr int64_t kRowsPerItem = 32;

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

// The reference's hadamard_transform, in place: pairs (i, i + h) inside blocks of 2h.
void Hadamard(float* __restrict__ y, int64_t dim) {
  for (int64_t h = 1; h < dim; h *= 2) {
    for (int64_t block = 0; block < dim; block += 2 * h) {
      float* __restrict__ a = y + block;
      float* __restrict__ b = y + block + h;
      for (int64_t i = 0; i < h; ++i) {
        const float x = a[i], z = b[i];
        a[i] = x + z;
        b[i] = x - z;
      }
    }
  }
}

int32_t Code(const float* y, int64_t code_len) {
  int32_t code = 0;
  for (int64_t i = 0; i < code_len; ++i) code |= static_cast<int32_t>(y[i] > 0.0f) << i;
  return code;
}

void HadamardRows(const Job& job, int64_t r0, int64_t r1, float* __restrict__ y) {
  const SignHashShape& s = *job.shape;
  const SignHashPlan& p = *job.plan;
  const int64_t D = s.dim, P = p.parts, L = s.code_len;
  for (int64_t r = r0; r < r1; ++r) {
    int32_t* out = job.hash + r * s.num_hash;
    if (!job.mask[r]) {
      for (int64_t h = 0; h < s.num_hash; ++h) out[h] = 0;
      continue;
    }
    const float* __restrict__ x = job.vector + r * D;
    const float* proj = job.projection + ((r / s.length) % s.groups) * (3 * P * D);
    for (int64_t part = 0; part < P; ++part) {
      const float* __restrict__ d1 = proj + (0 * P + part) * D;
      const float* __restrict__ d2 = proj + (1 * P + part) * D;
      const float* __restrict__ d3 = proj + (2 * P + part) * D;
      for (int64_t i = 0; i < D; ++i) y[i] = x[i] * d1[i];
      Hadamard(y, D);
      for (int64_t i = 0; i < D; ++i) y[i] *= d2[i];
      Hadamard(y, D);
      for (int64_t i = 0; i < D; ++i) y[i] *= d3[i];
      Hadamard(y, D);
      for (int64_t j = 0; j < p.per_part; ++j) {
        const int64_t index = part * p.per_part + j;
        if (index >= s.num_hash) break;
        out[index] = Code(y + j * L, L);
      }
    }
  }
}

// y[k, c0:c0+8] = x_k . projection[:, c0:c0+8] for kGaussianBlock rows at once: 8 accumulators
// in registers, each projection load used by every row. Sums run over d in order.
inline void GaussianTile(const float* const* x, const float* proj, int64_t D, int64_t C, int64_t c0, float* y) {
  F4 acc[kGaussianBlock][2];
  for (int k = 0; k < kGaussianBlock; ++k) acc[k][0] = acc[k][1] = Splat4(0.0f);
  for (int64_t d = 0; d < D; ++d) {
    const F4 p0 = Load4(proj + d * C + c0), p1 = Load4(proj + d * C + c0 + 4);
    for (int k = 0; k < kGaussianBlock; ++k) {
      const F4 xd = Splat4(x[k][d]);
      acc[k][0] += xd * p0;
      acc[k][1] += xd * p1;
    }
  }
  for (int k = 0; k < kGaussianBlock; ++k) {
    Store4(y + k * C + c0, acc[k][0]);
    Store4(y + k * C + c0 + 4, acc[k][1]);
  }
}

void GaussianRows(const Job& job, int64_t r0, int64_t r1, float* __restrict__ y) {
  const SignHashShape& s = *job.shape;
  const int64_t D = s.dim, C = s.num_hash * s.code_len, L = s.code_len;
  // Live rows of [r0, r1) in blocks that share one projection group; a short block repeats its
  // last row (computed, never written out).
  int64_t rows[kGaussianBlock];
  const float* x[kGaussianBlock];
  for (int64_t r = r0; r < r1;) {
    const int64_t g = (r / s.length) % s.groups;
    int n = 0;
    for (; r < r1 && n < kGaussianBlock && (r / s.length) % s.groups == g; ++r) {
      if (job.mask[r]) {
        rows[n++] = r;
      } else {
        for (int64_t h = 0; h < s.num_hash; ++h) job.hash[r * s.num_hash + h] = 0;
      }
    }
    if (n == 0) continue;
    for (int k = 0; k < kGaussianBlock; ++k) x[k] = job.vector + rows[k < n ? k : n - 1] * D;
    const float* proj = job.projection + g * D * C;
    int64_t c0 = 0;
    for (; c0 + 8 <= C; c0 += 8) GaussianTile(x, proj, D, C, c0, y);
    for (; c0 < C; ++c0) {
      for (int k = 0; k < n; ++k) {
        float acc = 0.0f;
        for (int64_t d = 0; d < D; ++d) acc += x[k][d] * proj[d * C + c0];
        y[k * C + c0] = acc;
      }
    }
    for (int k = 0; k < n; ++k) {
      int32_t* out = job.hash + rows[k] * s.num_hash;
      for (int64_t h = 0; h < s.num_hash; ++h) out[h] = Code(y + k * C + h * L, L);
    }
  }
}

void Worker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  const SignHashShape& s = *job.shape;
  const SignHashPlan& p = *job.plan;
  float* y = job.scratch + worker * p.floats_per_worker;
  const int64_t total = s.batch * s.length;
  for (;;) {
    const int64_t item = job.next_item.fetch_add(1, std::memory_order_relaxed);
    if (item >= p.num_items) return;
    const int64_t r0 = item * p.rows_per_item, r1 = std::min(total, r0 + p.rows_per_item);
    if (s.hadamard) {
      HadamardRows(job, r0, r1, y);
    } else {
      GaussianRows(job, r0, r1, y);
    }
  }
}

}  // namespace

std::string PlanSignHash(const SignHashShape& s, int64_t max_workers, SignHashPlan* plan) {
  if (s.code_len > kMaxHashCodeLen) {
    return Format("SignHash: attribute 'hash_code_len' must be <= %lld, got %lld", static_cast<long long>(kMaxHashCodeLen),
                  static_cast<long long>(s.code_len));
  }
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
    p.parts = std::max<int64_t>(1, (s.num_hash + p.per_part - 1) / p.per_part);
    if (s.proj_rows != 3 * p.parts || s.proj_cols != s.dim) {
      return Format(
          "SignHash: input 'projection' must be [G, 3*P, D] = [%lld, %lld, %lld] for transform='hadamard', "
          "got [%lld, %lld, %lld]",
          static_cast<long long>(s.groups), static_cast<long long>(3 * p.parts), static_cast<long long>(s.dim),
          static_cast<long long>(s.groups), static_cast<long long>(s.proj_rows), static_cast<long long>(s.proj_cols));
    }
    p.floats_per_worker = static_cast<size_t>(s.dim);
  } else {
    if (s.proj_rows != s.dim || s.proj_cols != s.num_hash * s.code_len) {
      return Format(
          "SignHash: input 'projection' must be [G, D, num_hash*hash_code_len] = [%lld, %lld, %lld] for "
          "transform='gaussian', got [%lld, %lld, %lld]",
          static_cast<long long>(s.groups), static_cast<long long>(s.dim),
          static_cast<long long>(s.num_hash * s.code_len), static_cast<long long>(s.groups),
          static_cast<long long>(s.proj_rows), static_cast<long long>(s.proj_cols));
    }
    p.floats_per_worker = static_cast<size_t>(kGaussianBlock * s.num_hash * s.code_len);
  }
  p.rows_per_item = kRowsPerItem;
  p.num_items = (s.batch * s.length + p.rows_per_item - 1) / p.rows_per_item;
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
