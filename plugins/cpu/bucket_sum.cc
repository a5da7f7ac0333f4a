#include "cpu/bucket_sum.h"

#include "bucketrt/op_specs.h"

#include <algorithm>
#include <cstring>

#include "bucketrt/validate.h"

namespace bucketrt::cpu {

namespace {

// Groups per work item: LSG's groups are small (a chunk of 8..128 rows), so batch several to
// amortise the scheduling.
constexpr int64_t kTargetFloatsPerItem = int64_t{1} << 14;

struct Job {
  const BucketSumShape* shape;
  const int32_t* bucket;
  const float* weight;
  const float* vector;
  float* sum;
  float* weight_sum;
  int64_t groups_per_item;
};

void RunItem(void* data, size_t item) {
  const Job& job = *static_cast<const Job*>(data);
  const BucketSumShape& s = *job.shape;
  const int64_t first = static_cast<int64_t>(item) * job.groups_per_item;
  const int64_t last = std::min(s.groups, first + job.groups_per_item);
  for (int64_t g = first; g < last; ++g) {
    float* sum = job.sum + g * s.num_buckets * s.dim;
    float* weight_sum = job.weight_sum + g * s.num_buckets;
    std::memset(sum, 0, sizeof(float) * s.num_buckets * s.dim);
    std::memset(weight_sum, 0, sizeof(float) * s.num_buckets);
    const int32_t* bucket = job.bucket + g * s.rows;
    const float* weight = job.weight + g * s.rows;
    const float* vector = job.vector + g * s.rows * s.dim;
    for (int64_t n = 0; n < s.rows; ++n) {
      float* target = sum + int64_t{bucket[n]} * s.dim;
      const float* row = vector + n * s.dim;
      for (int64_t d = 0; d < s.dim; ++d) target[d] += row[d];
      weight_sum[bucket[n]] += weight[n];
    }
  }
}

}  // namespace

BucketSumShape BucketSumShapeOf(const Attributes& attrs, const Bindings& env) {
  BucketSumShape s;
  const auto dims = spec::BucketSum::Dims::From(env);
  s.groups = dims.G;
  s.rows = dims.N;
  s.dim = dims.D;
  s.num_buckets = attrs.Int("num_buckets");
  return s;
}

std::string CheckBuckets(const BucketSumShape& shape, const int32_t* bucket) {
  const int64_t total = shape.groups * shape.rows;
  if (total == 0) return {};
  const auto [lo, hi] = std::minmax_element(bucket, bucket + total);
  return BucketRangeError(shape, *lo, *hi);
}

std::string BucketRangeError(const BucketSumShape& shape, int32_t lo, int32_t hi) {
  if (lo < 0 || hi >= shape.num_buckets) {
    return Format("BucketSum: input 'bucket' has ids in [%d, %d], outside [0, num_buckets=%lld)", lo, hi,
                  static_cast<long long>(shape.num_buckets));
  }
  return {};
}

void BucketSum(const BucketSumShape& shape, const int32_t* bucket, const float* weight, const float* vector,
               float* sum, float* weight_sum, const ParallelFor& parallel) {
  if (shape.groups == 0) return;
  const int64_t per_group = std::max<int64_t>(1, (shape.rows + shape.num_buckets) * shape.dim);
  const int64_t groups_per_item = std::max<int64_t>(1, kTargetFloatsPerItem / per_group);
  const int64_t items = (shape.groups + groups_per_item - 1) / groups_per_item;
  Job job{&shape, bucket, weight, vector, sum, weight_sum, groups_per_item};
  parallel(RunItem, static_cast<size_t>(items), &job);
}

}  // namespace bucketrt::cpu
