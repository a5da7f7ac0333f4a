// SignHash on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py `sign_hash`.
//
// Row r of the batch uses projection[r % G].
//  * hadamard: D a power of two, P = max(1, ceil(num_hash / (D / L))) parts. For part p,
//    y = H(d3 * H(d2 * H(d1 * x))) with H the unnormalised Sylvester-Hadamard transform (in-place
//    butterflies (a, b) -> (a + b, a - b) on pairs (i, i + h), h = 1, 2, 4, ...), d_r =
//    projection[g, r * P + p, :]. Hash j of part p (index p * (D / L) + j < num_hash) has bit i =
//    [y[j * L + i] > 0]. The butterflies run in the reference's order, so codes match it exactly.
//  * gaussian: y = x . projection[g] ([D, num_hash * L]); hash h has bit i = [y[h * L + i] > 0].
// code = sum_i bit_i 2^i; masked rows get 0.
//
// Implementation (cpu/sign_hash_kernels.inc): work items are up to 64 rows of one batch row,
// pulled by the workers from a shared counter. Hadamard transposes blocks of W vectors (W = the
// SIMD width: 8 with AVX2, 4 with SSE2/NEON, 1 without the vector extension) into a [D][W]
// buffer, so that every diagonal multiply and butterfly is one lane-wise vector operation (in
// passes of three stages held in registers), and packs the code bits lane-wise. Gaussian runs
// register tiles of 4 rows x 2W columns, column panels outermost. The float operations and their
// order are the same for every width, so the AVX2 and baseline variants give identical codes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

struct SignHashShape {
  int64_t batch = 0;   // B
  int64_t length = 0;  // N
  int64_t dim = 0;     // D
  int64_t groups = 0;  // G, projection dim 0
  int64_t proj_rows = 0;  // projection dim 1
  int64_t proj_cols = 0;  // projection dim 2
  int64_t num_hash = 0;
  int64_t code_len = 0;  // L
  bool hadamard = true;
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
SignHashShape SignHashShapeOf(const Attributes& attrs, const Bindings& env);

struct SignHashPlan {
  int64_t parts = 1;     // hadamard: P
  int64_t per_part = 1;  // hadamard: D / L codes per part
  bool avx2 = false;     // run the AVX2 variant (UseAvx2() at planning time)
  int64_t rows_per_item = 1;  // rows of one batch row per work item
  int64_t items_per_batch = 1;
  int64_t num_items = 0;
  int64_t num_workers = 1;
  size_t floats_per_worker = 0;
  size_t scratch_floats() const { return static_cast<size_t>(num_workers) * floats_per_worker; }
};

// Checks what the generic spec validation cannot (G | B, hadamard D a power of two and L <= D,
// projection shape; the attributes' bounds, L <= 30 among them, are ResolveAttributes') with the reference's wording; returns "" and fills *plan when valid.
std::string PlanSignHash(const SignHashShape& shape, int64_t max_workers, SignHashPlan* plan);

// All tensors dense row-major; `scratch` holds plan.scratch_floats() floats (any content).
void SignHash(const SignHashShape& shape, const SignHashPlan& plan, const int32_t* mask, const float* vector,
              const float* projection, int32_t* hash, float* scratch, const ParallelFor& parallel);

}  // namespace bucketrt::cpu
