// ExpertFFNInt8 on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `expert_ffn_int8` (catalogue.py's text).
//
// Four passes over the listed tokens, each split over ORT's workers:
//   1. quantize each listed token's hidden row (uint8 codes, zero point, scale);
//   2. tiles (one expert, at most `tile_rows` consecutive entries of `order`, one slice of d_ff):
//      int8 GEMM, dequantize, activation, into h [listed, F] (float);
//   3. quantize each row of h;
//   4. tiles (one expert, rows, one slice of d_model): int8 GEMM, dequantize, times the gate, into
//      the output rows.
// A row is quantized whole before any GEMM reads it (the scale is the row's), and every sum is an
// exact int32 sum: the tiles and slices (the CPU count's) change no bit of the result.
#pragma once

#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"
#include "cpu/expert_ffn.h"

namespace bucketrt::cpu {

struct ExpertFfnInt8Shape {
  int64_t tokens = 0;  // B*S
  int64_t dim = 0;     // D
  int64_t ff = 0;      // F
  int64_t num_experts = 0;
};

ExpertFfnInt8Shape ExpertFfnInt8ShapeOf(const Attributes& attrs, const Bindings& env);

// D and F within the exact-int32 bound (catalogue.py MAX_INT8_SUM_LENGTH): "" or the error.
std::string CheckExpertFfnInt8Shape(const ExpertFfnInt8Shape& shape);

struct ExpertFfnInt8Plan {
  int64_t listed = 0;
  int64_t tile_rows = 0;
  int64_t ff_chunks = 1;   // slices of F in pass 2
  int64_t dim_chunks = 1;  // slices of D in pass 4
  int64_t workers = 1;
  int64_t max_width = 0;          // widest slice of either layer
  size_t scratch_per_worker = 0;  // bytes: one tile's int32 sums and the weights' row sums
  size_t scratch_bytes(const ExpertFfnInt8Shape& s) const;
};

ExpertFfnInt8Plan PlanExpertFfnInt8(const ExpertFfnInt8Shape& shape, const int32_t* counts, int64_t max_workers);

// scratch: plan.scratch_bytes(shape) bytes, 64-byte aligned or not.
void ExpertFfnInt8(const ExpertFfnInt8Shape& shape, const ExpertFfnInt8Plan& plan, Activation act,
                   const float* hidden, const int32_t* order, const int32_t* counts, const float* gate,
                   const int8_t* wi, const float* wi_scale, const int8_t* wo, const float* wo_scale, float* out,
                   void* scratch, ParallelFor parallel_for);

// ---- the int8 GEMM, one definition per instruction set (cpu/int8_gemm.cc) ------------------------
// acc[r * ldc + n] = sum_k x[r * k_len + k] * w[n * k_len + k] for r < rows, n < cols: uint8 rows
// times int8 rows (nn.Linear's layout, k contiguous in both), exact int32 sums (k_len at most
// spec::kMaxInt8SumLength); and colsum[n] = sum_k w[n * k_len + k], the weights' row sums, which
// the rows' zero points multiply (sum_k (q - zp) w = sum_k q w - zp sum_k w).
#define BUCKETRT_INT8_GEMM_ARGS                                                                                   \
  const uint8_t *x, int64_t rows, const int8_t *w, int64_t cols, int64_t k_len, int32_t *acc, int64_t ldc, \
      int32_t *colsum
using Int8GemmFn = void (*)(BUCKETRT_INT8_GEMM_ARGS);
void Int8GemmGeneric(BUCKETRT_INT8_GEMM_ARGS);
void Int8GemmAvx2(BUCKETRT_INT8_GEMM_ARGS);        // widened to int16 by shifts, vpmaddwd
void Int8GemmAvx512Vnni(BUCKETRT_INT8_GEMM_ARGS);  // vpdpbusd
// The widest the CPU runs within BUCKETRT_SIMD's cap, and its name, as benchmarks print it.
Int8GemmFn PickInt8Gemm(const char** name = nullptr);

// The AMX form of the same GEMM (Sapphire Rapids and later: tiles of 16 weight rows x 64 k times
// 16 rows x 64 k, 16 x 16 int32 sums per instruction): x's rows are packed once per task (the
// tiles' layout, four k per 32-bit lane, padded with zeros to 16 rows and 64 k), then each weight
// row is read where it lies. The packing appends a row of ones, whose sums are the weights' row
// sums (colsum). Exact int32 sums like the others, so bit-identical to them.
// Whether the CPU has AMX-INT8, BUCKETRT_SIMD allows it and the kernel granted this process the
// tiles' state (arch_prctl), looked at once.
bool Int8AmxUsable();
// Bytes of the packed form of `rows` rows of k_len codes (with the row of ones).
int64_t Int8AmxPackedBytes(int64_t rows, int64_t k_len);
void PackInt8RowsAmx(const uint8_t* x, int64_t rows, int64_t k_len, uint8_t* packed);
// acc[r * ldc + n] = sum_k x[r][k] w[n][k] for r < rows, n < cols, and colsum[n] = sum_k w[n][k].
void Int8GemmAmx(const uint8_t* packed, int64_t rows, const int8_t* w, int64_t cols, int64_t k_len, int32_t* acc,
                 int64_t ldc, int32_t* colsum);

// One row's activation quantization (reference.quantize_rows): k_len floats into uint8 codes, the
// row's scale and zero point; a row with a NaN or Inf gets codes 0, scale NaN, zero point 0.
#define BUCKETRT_QUANTIZE_ROW_ARGS const float *x, int64_t k_len, uint8_t *q, float *scale, int32_t *zero_point
using QuantizeRowFn = void (*)(BUCKETRT_QUANTIZE_ROW_ARGS);
void QuantizeRowGeneric(BUCKETRT_QUANTIZE_ROW_ARGS);
void QuantizeRowAvx2(BUCKETRT_QUANTIZE_ROW_ARGS);
void QuantizeRowAvx512(BUCKETRT_QUANTIZE_ROW_ARGS);
QuantizeRowFn PickQuantizeRow(const char** name = nullptr);  // as PickInt8Gemm

// The activations of ExpertFFN's tiles (cpu/expert_ffn_tile.cc), in place on rows x cols floats
// with row stride `stride`, one definition per instruction set like the tiles.
#define BUCKETRT_EXPERT_ACTIVATE_ARGS Activation act, float *data, int64_t rows, int64_t cols, int64_t stride
void ExpertActivateGeneric(BUCKETRT_EXPERT_ACTIVATE_ARGS);
void ExpertActivateAvx2(BUCKETRT_EXPERT_ACTIVATE_ARGS);
void ExpertActivateAvx512(BUCKETRT_EXPERT_ACTIVATE_ARGS);
using ExpertActivateFn = void (*)(BUCKETRT_EXPERT_ACTIVATE_ARGS);
ExpertActivateFn PickExpertActivate(const char** name = nullptr);  // as PickExpertTile

}  // namespace bucketrt::cpu
