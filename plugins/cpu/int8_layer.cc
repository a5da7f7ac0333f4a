#include "cpu/int8_layer.h"

#include <algorithm>

namespace bucketrt::cpu {
namespace {

// Rows per quantization task; below this many elements a quantization pass runs in the caller.
constexpr int64_t kQuantizeRows = 32;
constexpr int64_t kSerialElements = int64_t{1} << 15;
// Rows of a projection from which the AMX GEMM takes it (where the CPU has AMX): below, most of its
// tiles' 16 rows would be padding, and a decoding step's few rows stream the weights at memory
// speed through VNNI alike.
constexpr int64_t kAmxFromRows = 16;

bool UsesAmx(int64_t rows) { return rows >= kAmxFromRows && Int8AmxUsable(); }

struct QuantizeJob {
  const float* source;
  const int64_t* index;
  int64_t k_len, rows;
  QuantizedRows out;
};

void QuantizeChunk(void* data, size_t chunk) {
  static const QuantizeRowFn quantize_row = PickQuantizeRow();  // the CPU and BUCKETRT_SIMD, once
  const QuantizeJob& job = *static_cast<const QuantizeJob*>(data);
  const int64_t begin = static_cast<int64_t>(chunk) * kQuantizeRows;
  const int64_t end = std::min(job.rows, begin + kQuantizeRows);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t src = job.index ? job.index[i] : i;
    quantize_row(job.source + src * job.k_len, job.k_len, job.out.q + i * job.k_len, job.out.scale + i,
                 job.out.zero_point + i);
  }
}

}  // namespace

size_t Align64(size_t bytes) { return (bytes + 63) / 64 * 64; }

void QuantizeRows(const float* source, const int64_t* index, int64_t k_len, int64_t rows, QuantizedRows out,
                  int64_t workers, ParallelFor parallel_for) {
  QuantizeJob job{source, index, k_len, rows, out};
  const int64_t chunks = (rows + kQuantizeRows - 1) / kQuantizeRows;
  if (chunks <= 1 || workers <= 1 || rows * k_len <= kSerialElements) {
    for (int64_t c = 0; c < chunks; ++c) QuantizeChunk(&job, static_cast<size_t>(c));
  } else {
    parallel_for(QuantizeChunk, static_cast<size_t>(chunks), &job);
  }
}

size_t Int8SlotBytes(int64_t rows, int64_t cols, int64_t k_len) {
  const int64_t packed = Int8AmxUsable() ? Int8AmxPackedBytes(rows, k_len) : 0;
  return Align64(sizeof(int32_t) * static_cast<size_t>(rows * cols)) +
         Align64(sizeof(int32_t) * static_cast<size_t>(cols)) + Align64(static_cast<size_t>(packed));
}

Int8Slot Int8SlotAt(void* base, int64_t rows, int64_t cols) {
  uint8_t* p = static_cast<uint8_t*>(base);
  Int8Slot slot;
  slot.acc = reinterpret_cast<int32_t*>(p);
  p += Align64(sizeof(int32_t) * static_cast<size_t>(rows * cols));
  slot.colsum = reinterpret_cast<int32_t*>(p);
  p += Align64(sizeof(int32_t) * static_cast<size_t>(cols));
  slot.packed = p;
  return slot;
}

void ProjectInt8Rows(const QuantizedRows& in, int64_t start, int64_t rows, int64_t k_len, const int8_t* w,
                     const float* scale, const float* bias, int64_t cols, const Int8Slot& slot, float* dst, int64_t ld,
                     bool pack) {
  static const Int8GemmFn gemm = PickInt8Gemm();  // the CPU and BUCKETRT_SIMD, looked at once
  const uint8_t* x = in.q + start * k_len;
  // The products' sums and the weights' row sums (their zero-point term).
  if (UsesAmx(rows)) {
    if (pack) PackInt8RowsAmx(x, rows, k_len, slot.packed);  // with the row of ones
    Int8GemmAmx(slot.packed, rows, w, cols, k_len, slot.acc, cols, slot.colsum);
  } else {
    gemm(x, rows, w, cols, k_len, slot.acc, cols, slot.colsum);
  }
  // The exact integer a - zp * colsum (|zp * colsum| <= 255 * 127 * 65536 < 2^53) in double, which
  // the compiler vectorizes on any x86-64 (the int64 form was one scalar conversion per element, 12%
  // of the kernel at a prefill's shapes); its rounding to float is the int64's.
  for (int64_t r = 0; r < rows; ++r) {
    const float s = in.scale[start + r];
    const double zp = in.zero_point[start + r];
    const int32_t* a = slot.acc + r * cols;
    float* o = dst + r * ld;
    for (int64_t c = 0; c < cols; ++c) {
      o[c] = static_cast<float>(static_cast<double>(a[c]) - zp * static_cast<double>(slot.colsum[c])) *
                 (s * scale[c]) +
             bias[c];
    }
  }
}

}  // namespace bucketrt::cpu
