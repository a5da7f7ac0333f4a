// ArgmaxHash on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `argmax_hash`: y = vector[b, h, n] . projection[h] ([D, C], C = num_hash * S, round-major); per
// round and factor f, bucket digit = argmax over concat(y_f, -y_f) (first maximum); digits combine
// mixed-radix over the factor sizes; masked rows get the padding bucket prod(sizes). A NaN
// projection is the maximum (the first NaN wins), as torch.argmax takes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bucketrt/parallel.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

struct ArgmaxHashShape {
  int64_t batch = 0;    // B
  int64_t heads = 0;    // H
  int64_t length = 0;   // N
  int64_t dim = 0;      // D
  int64_t columns = 0;  // C
  int64_t num_hash = 0;
  int64_t factors = 0;  // F, the entries of bucket_sizes (the CUDA kernel reads them on the device)
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
ArgmaxHashShape ArgmaxHashShapeOf(const Attributes& attrs, const Bindings& env);

// Checks the bucket sizes (each even >= 2, product below 2^31 - 1) and C == num_hash * sum / 2,
// with the reference's wording; "" when valid.
std::string CheckBucketSizes(const int32_t* sizes, int64_t count, int64_t num_hash, int64_t columns);

// All tensors dense row-major. `buckets` is [B, H, num_hash, N].
void ArgmaxHash(const ArgmaxHashShape& shape, const int32_t* mask, const float* vector, const float* projection,
                const std::vector<int32_t>& sizes, int32_t* buckets, const ParallelFor& parallel);

}  // namespace bucketrt::cpu
