// LinearInt8 on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `linear_int8` (catalogue.py's text): one linear layer as the int8 experts compute theirs.
//
// The rows in blocks of a size set by the shape; per block
//   1. each row quantized (uint8 codes, scale, zero point: ExpertFFNInt8's row quantizer);
//   2. tasks (at most 256 rows, one slice of N, cut as TopKExperts cuts an expert's): the int8 GEMM
//      of the slice's weight rows, dequantized, the bias (int8_layer.h), into the output.
// A decoding step (one row) is N / slice tasks over the weights, which the workers stream once.
// Every sum is an exact int32 sum and every other step one float32 operation per element on
// values that do not depend on the split: the blocks, tasks and workers change no bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"
#include "bucketrt/validate.h"

namespace bucketrt::cpu {

struct LinearInt8Shape {
  int64_t rows = 0;  // B*S
  int64_t k_len = 0;  // K
  int64_t n_len = 0;  // N
};

LinearInt8Shape LinearInt8ShapeOf(const Attributes& attrs, const Bindings& env);

// K within the exact-int32 bound (catalogue.py MAX_INT8_SUM_LENGTH): "" or the error, in the
// reference's words.
std::string CheckLinearInt8Shape(const LinearInt8Shape& shape);

struct LinearInt8Plan {
  int64_t block_rows = 0;  // rows per block (the shape's, not the CPUs')
  int64_t workers = 1;     // scratch slots (who pulls the tasks; no effect on the result)
  size_t block_bytes = 0;  // one block's codes, scales and zero points
  size_t worker_bytes = 0;
  size_t scratch_bytes() const { return 64 + block_bytes + static_cast<size_t>(workers) * worker_bytes; }
};

// max_workers: the scratch slots the caller can offer (ORT's pool). "" or the error (sizes that
// overflow).
std::string PlanLinearInt8(const LinearInt8Shape& shape, int64_t max_workers, LinearInt8Plan* plan);

// input [rows, K], weight_scale [N], bias [N], out [rows, N] float32; weight [N, K] int8.
// scratch: plan.scratch_bytes() bytes, aligned or not.
void LinearInt8(const LinearInt8Shape& shape, const LinearInt8Plan& plan, const float* input, const int8_t* weight,
                const float* weight_scale, const float* bias, float* out, void* scratch, ParallelFor parallel_for);

}  // namespace bucketrt::cpu
