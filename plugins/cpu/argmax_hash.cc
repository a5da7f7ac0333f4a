#include "cpu/argmax_hash.h"

#include "bucketrt/op_specs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "bucketrt/validate.h"
#include "cpu/simd.h"

namespace bucketrt::cpu {

namespace {

// Rows per work item: enough to amortise scheduling, small enough to balance two cores.
constexpr int64_t kRowsPerItem = 64;

std::string SizesRepr(const int32_t* sizes, int64_t count) {
  std::string out = "[";
  for (int64_t i = 0; i < count; ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

struct Job {
  const ArgmaxHashShape* shape;
  const int32_t* mask;
  const float* vector;
  const float* projection;
  const std::vector<int32_t>* sizes;
  int32_t* buckets;
  int64_t items_per_head;
  bool avx2;
};

// Projections of kRows rows at a time, in register tiles of kRows x kLanes columns, so that each
// loaded projection vector serves every row; sums run over d in ascending order.
constexpr int64_t kRows = 4;
constexpr int64_t kLanes = 8;

#define BUCKETRT_KERNELS_INC "cpu/argmax_hash_kernels.inc"
#include "cpu/instantiate_kernels.inc"
#undef BUCKETRT_KERNELS_INC

// docs/ops.md (catalogue.NONFINITE_PROJECTION_RULE): a vector row or projection column holding a NaN
// or an Inf makes y NaN (the maximum of the argmax). Such an input always makes the sum non-finite, in
// any order (an Inf plus finite values stays an Inf, Infs of both signs give NaN), so only a
// non-finite y needs its row and column looked at: finite data never takes this path.
void ApplyNonfiniteRule(const float* x, int64_t dim, const float* proj, int64_t columns, float* y) {
  int row_finite = -1;  // unknown until a non-finite y asks
  for (int64_t c = 0; c < columns; ++c) {
    if (std::isfinite(y[c]) || std::isnan(y[c])) continue;
    if (row_finite < 0) row_finite = AllFinite(x, dim, 1) ? 1 : 0;
    if (!row_finite || !AllFinite(proj + c, dim, columns)) y[c] = std::numeric_limits<float>::quiet_NaN();
  }
}

void RunItem(void* data, size_t item) {
  const Job& job = *static_cast<const Job*>(data);
  const ArgmaxHashShape& s = *job.shape;
  const int64_t bh = static_cast<int64_t>(item) / job.items_per_head;
  const int64_t b = bh / s.heads, h = bh % s.heads;
  const int64_t begin = (static_cast<int64_t>(item) % job.items_per_head) * kRowsPerItem;
  const int64_t end = std::min(s.length, begin + kRowsPerItem);
  const float* proj = job.projection + h * s.dim * s.columns;
  const int64_t per_round = s.columns / s.num_hash;
  const int64_t padded = (s.columns + 2 * kLanes - 1) / (2 * kLanes) * (2 * kLanes);
  int32_t padding = 1;
  for (int32_t size : *job.sizes) padding *= size;

  std::vector<float> projected(static_cast<size_t>(kRows * padded));
  std::vector<float> block(static_cast<size_t>(kRows * s.dim), 0.0f);
  for (int64_t n0 = begin; n0 < end; n0 += kRows) {
    const int64_t rows = std::min(kRows, end - n0);
    const float* x = job.vector + (bh * s.length + n0) * s.dim;
    if (rows < kRows) {  // a short last block: copy it beside zero rows
      std::fill(block.begin(), block.end(), 0.0f);
      std::copy(x, x + rows * s.dim, block.begin());
      x = block.data();
    }
#ifdef BUCKETRT_HAVE_AVX2_VARIANT
    if (job.avx2) {
      avx2::Project(x, s.dim, proj, s.columns, padded, projected.data());
    } else
#endif
    {
      generic::Project(x, s.dim, proj, s.columns, padded, projected.data());
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = n0 + r;
      int32_t* out = job.buckets + (bh * s.num_hash) * s.length + n;  // [b, h, round, n]
      if (job.mask[b * s.length + n] == 0) {
        for (int64_t k = 0; k < s.num_hash; ++k) out[k * s.length] = padding;
        continue;
      }
      ApplyNonfiniteRule(x + r * s.dim, s.dim, proj, s.columns, projected.data() + r * padded);
      for (int64_t k = 0; k < s.num_hash; ++k) {
        const float* yr = projected.data() + r * padded + k * per_round;
        int64_t bucket = 0, stride = 1, start = 0;
        for (int32_t size : *job.sizes) {
          const int64_t half = size / 2;
          // argmax over concat(y_f, -y_f): the positive half, then the negated one; strict '>'
          // keeps the first maximum, and the first NaN is the maximum, like torch.argmax (a NaN
          // y_i is met in the positive half first, and -y_i is NaN too).
          int64_t best = 0;
          float best_value = yr[start];
          bool nan = std::isnan(best_value);
          for (int64_t i = 1; i < half && !nan; ++i) {
            if (std::isnan(yr[start + i])) {
              best = i, nan = true;
            } else if (yr[start + i] > best_value) {
              best_value = yr[start + i], best = i;
            }
          }
          for (int64_t i = 0; i < half && !nan; ++i) {
            if (-yr[start + i] > best_value) best_value = -yr[start + i], best = half + i;
          }
          bucket += stride * best;
          stride *= size;
          start += half;
        }
        out[k * s.length] = static_cast<int32_t>(bucket);
      }
    }
  }
}

}  // namespace

ArgmaxHashShape ArgmaxHashShapeOf(const Attributes& attrs, const Bindings& env) {
  ArgmaxHashShape s;
  const auto dims = spec::ArgmaxHash::Dims::From(env);
  s.batch = dims.B;
  s.heads = dims.H;
  s.length = dims.N;
  s.dim = dims.D;
  s.columns = dims.C;
  s.num_hash = attrs.Int("num_hash");
  s.factors = dims.F;
  return s;
}

std::string CheckBucketSizes(const int32_t* sizes, int64_t count, int64_t num_hash, int64_t columns) {
  if (count < 1) return "ArgmaxHash: input 'bucket_sizes' must not be empty";
  int64_t total = 1, sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (sizes[i] < 2 || sizes[i] % 2) {
      return Format("ArgmaxHash: input 'bucket_sizes' must hold even sizes >= 2, got %s", SizesRepr(sizes, count).c_str());
    }
    total *= sizes[i];
    if (total >= (int64_t{1} << 31) - 1) {
      return Format("ArgmaxHash: input 'bucket_sizes' %s: the bucket count must be below 2^31 - 1",
                    SizesRepr(sizes, count).c_str());
    }
    sum += sizes[i];
  }
  int64_t needed = 0;
  if (!CheckedMul(num_hash, sum / 2, &needed)) return SizeOverflowError("ArgmaxHash", "num_hash * sum(bucket_sizes) / 2");
  if (columns != needed) {
    return Format(
        "ArgmaxHash: input 'projection' has %lld columns, but num_hash=%lld rounds of bucket_sizes %s need "
        "num_hash * sum(bucket_sizes) / 2 = %lld",
        static_cast<long long>(columns), static_cast<long long>(num_hash), SizesRepr(sizes, count).c_str(),
        static_cast<long long>(needed));
  }
  return {};
}

void ArgmaxHash(const ArgmaxHashShape& shape, const int32_t* mask, const float* vector, const float* projection,
                const std::vector<int32_t>& sizes, int32_t* buckets, const ParallelFor& parallel) {
  const int64_t items_per_head = (shape.length + kRowsPerItem - 1) / kRowsPerItem;
  const int64_t items = shape.batch * shape.heads * items_per_head;
  if (items == 0) return;
  Job job{&shape, mask, vector, projection, &sizes, buckets, items_per_head, UseAvx2()};
  parallel(RunItem, static_cast<size_t>(items), &job);
}

}  // namespace bucketrt::cpu
