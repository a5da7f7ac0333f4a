// One quantized linear layer over rows, as the int8 ops compute it (catalogue.py's L): the rows
// quantized whole (ExpertFFNInt8's row quantizer), then slices of weight rows through the int8 GEMM,
// dequantized with the rows' and the weights' scales, and a bias added. Shared by TopKExpertsInt8
// (each expert's two projections) and LinearInt8 (one layer, every row).
#pragma once

#include <cstddef>
#include <cstdint>

#include "bucketrt/parallel.h"
#include "cpu/expert_ffn_int8.h"

namespace bucketrt::cpu {

// Rows quantized: codes [rows, k_len], each row's scale and zero point.
struct QuantizedRows {
  uint8_t* q;
  float* scale;
  int32_t* zero_point;
};

// out's first `rows` rows quantized from source's rows (index null: row i is source row i; else
// source row index[i]), in chunks over the workers where there are enough elements.
void QuantizeRows(const float* source, const int64_t* index, int64_t k_len, int64_t rows, QuantizedRows out,
                  int64_t workers, ParallelFor parallel_for);

// A worker's buffers for one projection of at most `rows` rows by `cols` weight rows: the int32
// sums, the weights' row sums and, where the CPU has AMX, the rows packed in its tiles' layout.
struct Int8Slot {
  int32_t* acc;     // [rows, cols]
  int32_t* colsum;  // [cols]
  uint8_t* packed;  // Int8AmxPackedBytes(rows, k_len)
};
// Their bytes (each part 64-byte aligned).
size_t Int8SlotBytes(int64_t rows, int64_t cols, int64_t k_len);
Int8Slot Int8SlotAt(void* base, int64_t rows, int64_t cols);

size_t Align64(size_t bytes);

// dst[r * ld + c] = float(sum_k (q_r - zp_r) w[c * k_len + k]) * (s_r * scale[c]) + bias[c] for the
// rows r < rows from `start` of `in` and the weight rows c < cols from w: L of the reference, then
// the bias, each one float32 operation. `pack`: the rows are not in
// slot.packed yet (a second slice of the same rows may reuse the first's).
void ProjectInt8Rows(const QuantizedRows& in, int64_t start, int64_t rows, int64_t k_len, const int8_t* w,
                     const float* scale, const float* bias, int64_t cols, const Int8Slot& slot, float* dst, int64_t ld,
                     bool pack = true);

}  // namespace bucketrt::cpu
