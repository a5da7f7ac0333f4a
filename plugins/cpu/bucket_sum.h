// BucketSum on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py `bucket_sum`:
// per group g, sum[g, c, :] adds the rows n with bucket[g, n] == c in order n = 0, 1, ... (the
// reference's index_add_ order, so single-threaded sums round alike), weight_sum likewise.
#pragma once

#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

struct BucketSumShape {
  int64_t groups = 0;       // G
  int64_t rows = 0;         // N
  int64_t dim = 0;          // D
  int64_t num_buckets = 0;  // C
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
BucketSumShape BucketSumShapeOf(const Attributes& attrs, const Bindings& env);

// Every bucket id must lie in [0, num_buckets); "" when valid, else the reference's wording.
std::string CheckBuckets(const BucketSumShape& shape, const int32_t* bucket);

// The error for ids spanning [lo, hi] ("" when that lies in [0, num_buckets)): CheckBuckets' words,
// for a backend that finds the range on its own (the CUDA kernel, on the device).
std::string BucketRangeError(const BucketSumShape& shape, int32_t lo, int32_t hi);

// All tensors dense row-major; the outputs need no initialisation. Groups run in parallel.
void BucketSum(const BucketSumShape& shape, const int32_t* bucket, const float* weight, const float* vector,
               float* sum, float* weight_sum, const ParallelFor& parallel);

}  // namespace bucketrt::cpu
