// ExpertFFNInt8's per-instruction-set primitives: the int8 GEMM (uint8 activation rows times int8
// weight rows, exact int32 sums) and the row quantization. One definition per instruction set, each
// compiled for its own target by a function attribute (no global -m flags: the library must load on
// every x86-64), picked at run time by CPUID within BUCKETRT_SIMD's cap.
//
//  * Generic: plain loops (what a CPU without AVX2, or BUCKETRT_SIMD=generic, runs).
//  * AVX2: widen to int16 by shifts and vpmaddwd: 16 products per instruction, each pair summed in
//    int32 without saturation. vpmaddubsw would take twice as many per instruction but saturates its
//    int16 pair sums (255 * 127 * 2 > 32767), which would break exactness.
//  * AVX-512 VNNI: vpdpbusd, 64 uint8 x int8 products per instruction summed by fours into int32,
//    exact.
//  * AMX-INT8: tdpbsud, 16 x 16 x 64 int8 x uint8 products per instruction, exact (below).
// Every path computes the same integers, and the quantizers the same float32 operations (IEEE
// division, round to nearest even) in the same order per element, so the result does not depend
// on the CPU.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/expert_ffn_int8.h"
#include "cpu/simd_switch.h"

#include <cmath>
#include <limits>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "cpu/prefetch.h"
#define BUCKETRT_INT8_X86 1
#endif

namespace bucketrt::cpu {
namespace {

// The scalar steps every quantizer shares (the SIMD ones vectorize the per-element loops only).
inline float RowScale(float lo, float hi) {
  const float s = hi / 255.0f - lo / 255.0f;
  return s == 0.0f ? 1.0f : s;
}
inline float RowZeroPoint(float lo, float s) { return std::clamp(std::nearbyint(-lo / s), 0.0f, 255.0f); }
inline uint8_t QuantizeOne(float x, float s, float zp) {
  return static_cast<uint8_t>(std::clamp(std::nearbyint(x / s) + zp, 0.0f, 255.0f));
}
// A row's range over [0, max] and [min, 0], and whether it is finite, element by element.
struct RowRange {
  float lo = 0.0f, hi = 0.0f;
  bool finite = true;
  void Add(const float* x, int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      finite &= std::isfinite(x[k]);
      lo = std::min(lo, x[k]);
      hi = std::max(hi, x[k]);
    }
  }
};
inline void NonFiniteRow(int64_t k_len, uint8_t* q, float* scale, int32_t* zero_point) {
  std::memset(q, 0, static_cast<size_t>(k_len));
  *scale = std::numeric_limits<float>::quiet_NaN();
  *zero_point = 0;
}

}  // namespace

void Int8GemmGeneric(BUCKETRT_INT8_GEMM_ARGS) {
  for (int64_t n = 0; n < cols; ++n) {
    const int8_t* wn = w + n * k_len;
    int32_t sum = 0;
    for (int64_t k = 0; k < k_len; ++k) sum += wn[k];
    colsum[n] = sum;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* xr = x + r * k_len;
    for (int64_t n = 0; n < cols; ++n) {
      const int8_t* wn = w + n * k_len;
      int32_t sum = 0;
      for (int64_t k = 0; k < k_len; ++k) sum += static_cast<int32_t>(xr[k]) * static_cast<int32_t>(wn[k]);
      acc[r * ldc + n] = sum;
    }
  }
}

// One row's quantization, step for step as reference.quantize_rows (each a float32 operation).
void QuantizeRowGeneric(const float* x, int64_t k_len, uint8_t* q, float* scale, int32_t* zero_point) {
  RowRange range;
  range.Add(x, 0, k_len);
  if (!range.finite) {
    NonFiniteRow(k_len, q, scale, zero_point);
    return;
  }
  const float s = RowScale(range.lo, range.hi);
  const float zp = RowZeroPoint(range.lo, s);
  for (int64_t k = 0; k < k_len; ++k) q[k] = QuantizeOne(x[k], s, zp);
  *scale = s;
  *zero_point = static_cast<int32_t>(zp);
}

#ifdef BUCKETRT_INT8_X86

namespace {

// The decoding path's prefetch distance in weight rows (32 KiB at K = 1024), and the most rows it
// serves: more rows reuse each weight enough to hide its load. (Both instruction sets' GEMMs.)
constexpr int64_t kPrefetchRows = 32;
constexpr int64_t kPrefetchMaxRows = 4;
inline int64_t PrefetchOffset(int64_t rows, int64_t k_len) { return rows <= kPrefetchMaxRows ? kPrefetchRows * k_len : 0; }

// The totals of four vectors' lanes, in that order: 5 instructions where four reductions one by one
// took about 24 (1-row blocks at K = 1024 on Zen 3, one thread, weights from memory: 9.2 to 10.1
// GB/s).
__attribute__((target("avx2"))) inline __m128i Avx2Totals(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i quads = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(quads), _mm256_extracti128_si256(quads, 1));
}

// R rows by C weight rows, 32 k per step; the k_len % 32 tail in scalar code. kSums: the block also
// sums the weight rows (into colsum); `prefetch` (bytes; 0: none): it asks for the weights' lines
// that far on into L2 as it reads them (VnniGemm's comment says why and how far).
//
// 32 bytes loaded as 16 words are widened to int16 by shifts: a weight's even bytes by a shift
// left and an arithmetic shift right, its odd bytes by an arithmetic shift right; a row's by a
// mask and a logical shift. Then vpmaddwd of evens with evens and odds with odds. vpmovsxbw /
// vpmovzxbw, which cross the 128-bit lanes, held a 4-row block to 12 GB/s of weights on Zen 3
// against 14 GB/s for the shifts (2 threads, K = 1024, weights from memory).
template <int R, int C, bool kSums>
__attribute__((target("avx2"))) inline void Avx2Block(const uint8_t* x, const int8_t* w, int64_t k_len, int32_t* acc,
                                                      int64_t ldc, int32_t* colsum, int64_t prefetch) {
  static_assert(R >= 1 && C >= 1, "a block has rows and weight rows");
  __m256i sums[R][C], wsums[C];
  for (int c = 0; c < C; ++c) {
    wsums[c] = _mm256_setzero_si256();
    for (int r = 0; r < R; ++r) sums[r][c] = _mm256_setzero_si256();
  }
  const __m256i low_bytes = _mm256_set1_epi16(0xff), ones = _mm256_set1_epi16(1);
  const int64_t body = k_len - k_len % 32;
  for (int64_t k = 0; k < body; k += 32) {
    __m256i even[C], odd[C];
    for (int c = 0; c < C; ++c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * k_len + k));
      even[c] = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
      odd[c] = _mm256_srai_epi16(v, 8);
      if constexpr (kSums) {
        wsums[c] = _mm256_add_epi32(wsums[c], _mm256_madd_epi16(_mm256_add_epi16(even[c], odd[c]), ones));
      }
      if (prefetch && k % 64 == 0) PrefetchAhead(w + c * k_len + k, static_cast<uintptr_t>(prefetch));
    }
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + r * k_len + k));
      const __m256i x_even = _mm256_and_si256(xv, low_bytes), x_odd = _mm256_srli_epi16(xv, 8);
      for (int c = 0; c < C; ++c) {
        sums[r][c] = _mm256_add_epi32(
            sums[r][c], _mm256_add_epi32(_mm256_madd_epi16(x_even, even[c]), _mm256_madd_epi16(x_odd, odd[c])));
      }
    }
  }
  // The totals four vectors at a time (the weights' sums as one more row), then the k_len % 32 tail.
  constexpr int kCount = (R + (kSums ? 1 : 0)) * C, kPadded = (kCount + 3) / 4 * 4;
  __m256i all[kPadded];
  for (int i = 0; i < kPadded; ++i) {
    all[i] = i < R * C ? sums[i / C][i % C] : (i < kCount ? wsums[i - R * C] : _mm256_setzero_si256());
  }
  alignas(16) int32_t totals[kPadded];
  for (int i = 0; i < kPadded; i += 4) {
    _mm_store_si128(reinterpret_cast<__m128i*>(totals + i), Avx2Totals(all[i], all[i + 1], all[i + 2], all[i + 3]));
  }
  for (int c = 0; c < C; ++c) {
    const int8_t* wc = w + c * k_len;
    if constexpr (kSums) {
      int32_t sum = totals[R * C + c];
      for (int64_t k = body; k < k_len; ++k) sum += wc[k];
      colsum[c] = sum;
    }
    for (int r = 0; r < R; ++r) {
      int32_t sum = totals[r * C + c];
      for (int64_t k = body; k < k_len; ++k) sum += static_cast<int32_t>(x[r * k_len + k]) * static_cast<int32_t>(wc[k]);
      acc[r * ldc + c] = sum;
    }
  }
}

// Lane-sum steps for a reduction tree: PairSums(a, b) has, per 128-bit lane, partial sums of a, b,
// a, b; QuadSums(p, q) of two such, partial sums of a, b, c, d per 128-bit lane; HalfSums(u, v) of
// two quads, their 128-bit lanes added in pairs (u's two halves, then v's). HalfSums of two
// HalfSums puts 16 vectors' totals in one register (45 instructions against 16 reduce_add's ~150).
#define BUCKETRT_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
// GCC 12's AVX-512 intrinsics pass a self-initialized `__Y = __Y` as the unused merge source, which
// -Wmaybe-uninitialized reports once per inlined call: a false positive, silenced for these kernels.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
BUCKETRT_VNNI_TARGET inline __m512i PairSums(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}
BUCKETRT_VNNI_TARGET inline __m512i QuadSums(__m512i p, __m512i q) {
  return _mm512_add_epi32(_mm512_unpacklo_epi64(p, q), _mm512_unpackhi_epi64(p, q));
}
BUCKETRT_VNNI_TARGET inline __m512i HalfSums(__m512i u, __m512i v) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(u, v, 0x88), _mm512_shuffle_i32x4(u, v, 0xdd));
}

// acc += the uint8 x int8 dot products of a and b by fours. GCC 12 compiles the intrinsic
// (_mm512_dpbusd_epi32) with a copy of the accumulator in and out of another register around every
// instruction, and spilled an array of accumulators to the stack; the accumulating form here
// ("+v": the register is read and written) keeps each in its register.
#if defined(__GNUC__) && !defined(__clang__)
#define BUCKETRT_DPBUSD(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#else
#define BUCKETRT_DPBUSD(acc, a, b) acc = _mm512_dpbusd_epi32(acc, a, b)
#endif
#define BUCKETRT_VNNI_ROW(ACC0, ACC1, ACC2, ACC3, XV) \
  BUCKETRT_DPBUSD(ACC0, XV, b0);                      \
  BUCKETRT_DPBUSD(ACC1, XV, b1);                      \
  BUCKETRT_DPBUSD(ACC2, XV, b2);                      \
  BUCKETRT_DPBUSD(ACC3, XV, b3)

// The lines `ahead` bytes on from w (a line of the first of 4 weight rows) and from the other 3
// rows' (k_len apart), into L2.
inline void PrefetchColumn(const int8_t* w, int64_t ahead, int64_t k_len) {
  for (int64_t i = 0; i < 4; ++i) PrefetchAhead(w + i * k_len, static_cast<uintptr_t>(ahead));
}

// 4 rows x 4 weight rows: 16 accumulators, 4 weights and 1 row of the 32 zmm registers; 64 k per
// step, the k_len % 64 tail through masked loads (zeros add nothing). One 128-bit store per row.
// `prefetch` (bytes; 0: none): the weights' lines that far on are prefetched as they are read.
BUCKETRT_VNNI_TARGET inline void Vnni4x4(const uint8_t* x, const int8_t* w, int64_t k_len, int32_t* acc,
                                         int64_t ldc, int64_t prefetch) {
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,
          c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
  const uint8_t *x0 = x, *x1 = x + k_len, *x2 = x + 2 * k_len, *x3 = x + 3 * k_len;
  const int8_t *w0 = w, *w1 = w + k_len, *w2 = w + 2 * k_len, *w3 = w + 3 * k_len;
#define BUCKETRT_VNNI_4X4_STEP(LOAD)                                      \
  {                                                                       \
    const __m512i b0 = LOAD(w0 + k), b1 = LOAD(w1 + k);                   \
    const __m512i b2 = LOAD(w2 + k), b3 = LOAD(w3 + k);                   \
    __m512i a = LOAD(x0 + k);                                             \
    BUCKETRT_VNNI_ROW(c00, c01, c02, c03, a);                             \
    a = LOAD(x1 + k);                                                     \
    BUCKETRT_VNNI_ROW(c10, c11, c12, c13, a);                             \
    a = LOAD(x2 + k);                                                     \
    BUCKETRT_VNNI_ROW(c20, c21, c22, c23, a);                             \
    a = LOAD(x3 + k);                                                     \
    BUCKETRT_VNNI_ROW(c30, c31, c32, c33, a);                             \
    if (prefetch) PrefetchColumn(w0 + k, prefetch, k_len);               \
  }
  const int64_t body = k_len - k_len % 64;
  int64_t k = 0;
#define BUCKETRT_LOAD(p) _mm512_loadu_si512(p)
  for (; k < body; k += 64) BUCKETRT_VNNI_4X4_STEP(BUCKETRT_LOAD)
#undef BUCKETRT_LOAD
  if (k < k_len) {
    const __mmask64 m = (__mmask64{1} << (k_len - k)) - 1;
#define BUCKETRT_LOAD(p) _mm512_maskz_loadu_epi8(m, p)
    BUCKETRT_VNNI_4X4_STEP(BUCKETRT_LOAD)
#undef BUCKETRT_LOAD
  }
#undef BUCKETRT_VNNI_4X4_STEP
  // Lane r * 4 + c: row r, weight row c.
  const __m512i total = HalfSums(
      HalfSums(QuadSums(PairSums(c00, c01), PairSums(c02, c03)), QuadSums(PairSums(c10, c11), PairSums(c12, c13))),
      HalfSums(QuadSums(PairSums(c20, c21), PairSums(c22, c23)), QuadSums(PairSums(c30, c31), PairSums(c32, c33))));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(acc), _mm512_extracti32x4_epi32(total, 0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(acc + ldc), _mm512_extracti32x4_epi32(total, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(acc + 2 * ldc), _mm512_extracti32x4_epi32(total, 2));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(acc + 3 * ldc), _mm512_extracti32x4_epi32(total, 3));
}

// 1 row x 4 weight rows (the rows % 4 left, and the weights' row sums against a row of ones).
BUCKETRT_VNNI_TARGET inline void Vnni1x4(const uint8_t* x, const int8_t* w, int64_t k_len, int32_t* acc,
                                         int64_t /*ldc*/, int64_t prefetch) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
  const int8_t *w0 = w, *w1 = w + k_len, *w2 = w + 2 * k_len, *w3 = w + 3 * k_len;
  for (int64_t k = 0; k < k_len; k += 64) {
    const __mmask64 m = k_len - k >= 64 ? ~__mmask64{0} : ((__mmask64{1} << (k_len - k)) - 1);
    const __m512i b0 = _mm512_maskz_loadu_epi8(m, w0 + k), b1 = _mm512_maskz_loadu_epi8(m, w1 + k);
    const __m512i b2 = _mm512_maskz_loadu_epi8(m, w2 + k), b3 = _mm512_maskz_loadu_epi8(m, w3 + k);
    const __m512i a = _mm512_maskz_loadu_epi8(m, x + k);
    BUCKETRT_VNNI_ROW(c0, c1, c2, c3, a);
    if (prefetch) PrefetchColumn(w0 + k, prefetch, k_len);
  }
  const __m512i quad = QuadSums(PairSums(c0, c1), PairSums(c2, c3));
  const __m512i half = HalfSums(quad, quad);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(acc), _mm512_castsi512_si128(HalfSums(half, half)));
}
#undef BUCKETRT_VNNI_ROW
#undef BUCKETRT_DPBUSD

// R rows x 1 weight row (the cols % 4 left).
template <int R>
BUCKETRT_VNNI_TARGET inline void VnniCol(const uint8_t* x, const int8_t* w, int64_t k_len, int32_t* acc,
                                         int64_t ldc) {
  __m512i sums[R];
  for (int r = 0; r < R; ++r) sums[r] = _mm512_setzero_si512();
  for (int64_t k = 0; k < k_len; k += 64) {
    const __mmask64 m = k_len - k >= 64 ? ~__mmask64{0} : ((__mmask64{1} << (k_len - k)) - 1);
    const __m512i b = _mm512_maskz_loadu_epi8(m, w + k);
    for (int r = 0; r < R; ++r) sums[r] = _mm512_dpbusd_epi32(sums[r], _mm512_maskz_loadu_epi8(m, x + r * k_len + k), b);
  }
  for (int r = 0; r < R; ++r) acc[r * ldc] = _mm512_reduce_add_epi32(sums[r]);
}

// Every row against C weight rows (L1 holds their C * k_len bytes while every row block reads
// them): the first block of up to 4 rows also sums the weight rows and, for a decoding step's few
// rows, prefetches; then blocks of 4 rows and single rows.
template <int C>
__attribute__((target("avx2"))) inline void Avx2Rows(const uint8_t* x, int64_t rows, const int8_t* w, int64_t k_len,
                                                     int32_t* acc, int64_t ldc, int32_t* colsum, int64_t prefetch) {
  switch (std::min<int64_t>(rows, 4)) {
    case 0: Int8GemmGeneric(x, 0, w, C, k_len, acc, ldc, colsum); return;  // the sums alone
    case 1: Avx2Block<1, C, true>(x, w, k_len, acc, ldc, colsum, prefetch); break;
    case 2: Avx2Block<2, C, true>(x, w, k_len, acc, ldc, colsum, prefetch); break;
    case 3: Avx2Block<3, C, true>(x, w, k_len, acc, ldc, colsum, prefetch); break;
    default: Avx2Block<4, C, true>(x, w, k_len, acc, ldc, colsum, prefetch); break;
  }
  int64_t r = std::min<int64_t>(rows, 4);
  for (; r + 4 <= rows; r += 4) Avx2Block<4, C, false>(x + r * k_len, w, k_len, acc + r * ldc, ldc, nullptr, 0);
  for (; r < rows; ++r) Avx2Block<1, C, false>(x + r * k_len, w, k_len, acc + r * ldc, ldc, nullptr, 0);
}

}  // namespace

__attribute__((target("avx2"))) void Int8GemmAvx2(BUCKETRT_INT8_GEMM_ARGS) {
  // Pairs of weight rows: at 4 rows, 8 accumulators, 2 weight sums, 4 widened weights and 2 widened
  // rows fill the 16 ymm registers.
  const int64_t prefetch = PrefetchOffset(rows, k_len);
  int64_t n = 0;
  for (; n + 2 <= cols; n += 2) Avx2Rows<2>(x, rows, w + n * k_len, k_len, acc + n, ldc, colsum + n, prefetch);
  for (; n < cols; ++n) Avx2Rows<1>(x, rows, w + n * k_len, k_len, acc + n, ldc, colsum + n, prefetch);
}

namespace {

// The weights' row sums, as the GEMM of this row of ones (the longest k_len the GEMMs take).
const uint8_t* OnesRow() {
  static const std::vector<uint8_t> ones(spec::kMaxInt8SumLength, 1);
  return ones.data();
}

BUCKETRT_VNNI_TARGET void VnniGemm(const uint8_t* x, int64_t rows, const int8_t* w, int64_t cols, int64_t k_len,
                                   int32_t* acc, int64_t ldc) {
  // Blocks of 4 weight rows: the rows in blocks of 4, then one at a time; the cols % 4 last. The
  // weight rows (4 * k_len bytes) stay in L1 while every row block reads them.
  //
  // With a decoding step's few rows (at most kPrefetchMaxRows) the GEMM waits on memory: each weight
  // line is read from memory once, by one or a few instructions. The first row block over each 4
  // weight rows (the weights' row sums against the row of ones, which Int8GemmAvx512Vnni runs
  // first) asks for the same lines kPrefetchRows further on, into L2, as it goes. That runs past the
  // weights given, into the next rows of the same tensor: most often the next pass (its next 32
  // weight rows, or the caller's next slice of them), and a prefetch never faults. The rows' own
  // pass right after asks for the same lines again, one instruction per line that finds them in
  // flight or in L2. (Zen 4, 2 threads, one TopKExpertsInt8 node of a Mixtral-like layer at 4
  // tokens: 2.9 to 1.4-1.9 ms. Bounding the
  // prefetch to the weights given was slower, 2.5-3.0 ms: the first rows of each call then waited
  // on memory; 16 rows ahead gained less, 1.8 ms, and 64 no more than 32.)
  const int64_t offset = PrefetchOffset(rows, k_len);
  int64_t n = 0;
  for (; n + 4 <= cols; n += 4) {
    const int8_t* wn = w + n * k_len;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) Vnni4x4(x + r * k_len, wn, k_len, acc + r * ldc + n, ldc, r ? 0 : offset);
    for (; r < rows; ++r) Vnni1x4(x + r * k_len, wn, k_len, acc + r * ldc + n, ldc, r ? 0 : offset);
  }
  for (; n < cols; ++n) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) VnniCol<4>(x + r * k_len, w + n * k_len, k_len, acc + r * ldc + n, ldc);
    for (; r < rows; ++r) VnniCol<1>(x + r * k_len, w + n * k_len, k_len, acc + r * ldc + n, ldc);
  }
}

}  // namespace

// Each 32 weight rows' sums (the GEMM of a row of ones) and then the rows' GEMM, which finds those
// weights (at K = 4096, 128 KiB) in the cache.
BUCKETRT_VNNI_TARGET void Int8GemmAvx512Vnni(BUCKETRT_INT8_GEMM_ARGS) {
  constexpr int64_t kColsPerPass = 32;
  for (int64_t c = 0; c < cols; c += kColsPerPass) {
    const int64_t n = std::min(kColsPerPass, cols - c);
    VnniGemm(OnesRow(), 1, w + c * k_len, n, k_len, colsum + c, n);
    VnniGemm(x, rows, w + c * k_len, n, k_len, acc + c, ldc);
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// 8 floats per step; the k_len % 8 tail in scalar code. Division and rounding (vdivps, vroundps to
// nearest even) are the scalar code's IEEE operations, lane by lane.
__attribute__((target("avx2"))) void QuantizeRowAvx2(BUCKETRT_QUANTIZE_ROW_ARGS) {
  const int64_t body = k_len - k_len % 8;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 lo8 = _mm256_setzero_ps(), hi8 = _mm256_setzero_ps();
  __m256 finite8 = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  for (int64_t k = 0; k < body; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    finite8 = _mm256_and_ps(finite8, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), inf, _CMP_LT_OQ));
    lo8 = _mm256_min_ps(lo8, v);
    hi8 = _mm256_max_ps(hi8, v);
  }
  alignas(32) float lo_lanes[8], hi_lanes[8];
  _mm256_store_ps(lo_lanes, lo8);
  _mm256_store_ps(hi_lanes, hi8);
  RowRange range;
  range.Add(lo_lanes, 0, 8);  // the lanes' minima and maxima are finite where the row is
  range.Add(hi_lanes, 0, 8);
  range.finite = _mm256_movemask_ps(finite8) == 0xff;
  range.Add(x, body, k_len);
  if (!range.finite) {
    NonFiniteRow(k_len, q, scale, zero_point);
    return;
  }
  const float s = RowScale(range.lo, range.hi);
  const float zp = RowZeroPoint(range.lo, s);
  const __m256 s8 = _mm256_set1_ps(s), zp8 = _mm256_set1_ps(zp);
  const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
  for (int64_t k = 0; k < body; k += 8) {
    __m256 t = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + k), s8), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    t = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(t, zp8), zero), top);
    const __m256i i32 = _mm256_cvtps_epi32(t);
    const __m128i i16 = _mm_packus_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packus_epi16(i16, i16));
  }
  for (int64_t k = body; k < k_len; ++k) q[k] = QuantizeOne(x[k], s, zp);
  *scale = s;
  *zero_point = static_cast<int32_t>(zp);
}

// 16 floats per step, the tail through masked loads and stores (a zero lane leaves min <= 0 <= max
// as they were).
__attribute__((target("avx512f"))) void QuantizeRowAvx512(BUCKETRT_QUANTIZE_ROW_ARGS) {
  const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512 lo16 = _mm512_setzero_ps(), hi16 = _mm512_setzero_ps();
  __mmask16 finite = 0xffff;
  for (int64_t k = 0; k < k_len; k += 16) {
    const __mmask16 m = k_len - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k_len - k)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + k);
    finite = _mm512_mask_cmp_ps_mask(finite, _mm512_abs_ps(v), inf, _CMP_LT_OQ);
    lo16 = _mm512_min_ps(lo16, v);
    hi16 = _mm512_max_ps(hi16, v);
  }
  if (finite != 0xffff) {
    NonFiniteRow(k_len, q, scale, zero_point);
    return;
  }
  const float lo = std::min(0.0f, _mm512_reduce_min_ps(lo16));
  const float hi = std::max(0.0f, _mm512_reduce_max_ps(hi16));
  const float s = RowScale(lo, hi);
  const float zp = RowZeroPoint(lo, s);
  const __m512 s16 = _mm512_set1_ps(s), zp16 = _mm512_set1_ps(zp);
  const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);
  for (int64_t k = 0; k < k_len; k += 16) {
    const __mmask16 m = k_len - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k_len - k)) - 1);
    __m512 t = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + k), s16),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    t = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(t, zp16), zero), top);
    _mm512_mask_cvtusepi32_storeu_epi8(q + k, m, _mm512_cvtps_epu32(t));
  }
  *scale = s;
  *zero_point = static_cast<int32_t>(zp);
}


// ---- AMX -----------------------------------------------------------------------------------------
// Tiles 0-3 hold the sums (C: 16 weight rows x 16 rows of x, int32), 4-5 the weights (A: 16 weight
// rows x 64 k, int8, loaded where they lie, row stride k_len) and 6-7 the packed rows (B: 16 lines
// of four k for each of 16 rows, uint8). tdpbsud multiplies signed A by unsigned B: the weights
// times the codes, C = W x^T (the caller's acc transposed, written out per tile).
#define BUCKETRT_AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f")))

namespace {

constexpr int64_t kAmxTileRows = 16;
constexpr int64_t kAmxTileK = 64;

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// C(i, j) += A(i) B(j) for the NA weight tiles and NB row tiles of one step, tiles numbered as above.
template <int NA, int NB>
BUCKETRT_AMX_TARGET inline void AmxProducts() {
  _tile_dpbsud(0, 4, 6);
  if constexpr (NB > 1) _tile_dpbsud(1, 4, 7);
  if constexpr (NA > 1) _tile_dpbsud(2, 5, 6);
  if constexpr (NA > 1 && NB > 1) _tile_dpbsud(3, 5, 7);
}

// One block of NA x 16 weight rows (from n0) by NB x 16 packed rows (from group g0), over every k.
template <int NA, int NB>
BUCKETRT_AMX_TARGET void AmxBlock(const uint8_t* packed, int64_t group_bytes, int64_t g0, const int8_t* w, int64_t cols,
                                  int64_t n0, int64_t k_len, int32_t (*sums)[kAmxTileRows * kAmxTileRows]) {
  alignas(64) int8_t edge[2][kAmxTileRows * kAmxTileK];
  const int64_t k_pad = RoundUp(k_len, kAmxTileK);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t k0 = 0; k0 < k_pad; k0 += kAmxTileK) {
    for (int i = 0; i < NA; ++i) {
      const int64_t first = n0 + i * kAmxTileRows;
      const int8_t* src = w + first * k_len + k0;
      int64_t stride = k_len;
      if (first + kAmxTileRows > cols || k0 + kAmxTileK > k_len) {
        // An edge (the last weight rows, the last k): a zero-padded copy, never a read past w.
        const int64_t n_rows = std::min(kAmxTileRows, cols - first), k_cols = std::min(kAmxTileK, k_len - k0);
        std::memset(edge[i], 0, sizeof edge[i]);
        for (int64_t r = 0; r < n_rows; ++r) std::memcpy(edge[i] + r * kAmxTileK, src + r * k_len, static_cast<size_t>(k_cols));
        src = edge[i];
        stride = kAmxTileK;
      }
      if (i == 0) {
        _tile_loadd(4, src, stride);
      } else {
        _tile_loadd(5, src, stride);
      }
    }
    const uint8_t* b = packed + g0 * group_bytes + k0 * kAmxTileRows;
    _tile_loadd(6, b, kAmxTileK);
    if constexpr (NB > 1) _tile_loadd(7, b + group_bytes, kAmxTileK);
    AmxProducts<NA, NB>();
  }
  _tile_stored(0, sums[0], kAmxTileK);
  if constexpr (NB > 1) _tile_stored(1, sums[1], kAmxTileK);
  if constexpr (NA > 1) _tile_stored(2, sums[2], kAmxTileK);
  if constexpr (NA > 1 && NB > 1) _tile_stored(3, sums[3], kAmxTileK);
}

}  // namespace

bool Int8AmxUsable() {
  static const bool usable = [] {
#if defined(__linux__)
    if (!SimdAllowsAmx()) return false;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-int8")) return false;
    // Linux grants the tiles' 8 KiB of state per process on request (ARCH_REQ_XCOMP_PERM for
    // XFEATURE_XTILEDATA); without it the first tile instruction faults.
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
    return false;
#endif
  }();
  return usable;
}

int64_t Int8AmxPackedBytes(int64_t rows, int64_t k_len) {
  return RoundUp(rows + 1, kAmxTileRows) * RoundUp(k_len, kAmxTileK);
}

// Group g (rows 16g to 16g + 15; row `rows` is the row of ones, later ones zeros) is k_pad / 4 lines
// of 64 bytes; line l holds, for each of the group's 16 rows, its codes 4l to 4l + 3.
void PackInt8RowsAmx(const uint8_t* x, int64_t rows, int64_t k_len, uint8_t* packed) {
  const int64_t k_pad = RoundUp(k_len, kAmxTileK), total = RoundUp(rows + 1, kAmxTileRows);
  const int64_t group_bytes = k_pad * kAmxTileRows;
  std::memset(packed, 0, static_cast<size_t>(total * k_pad));
  for (int64_t r = 0; r <= rows; ++r) {
    uint8_t* dst = packed + (r / kAmxTileRows) * group_bytes + (r % kAmxTileRows) * 4;
    if (r == rows) {
      for (int64_t k = 0; k < k_len; ++k) dst[(k / 4) * kAmxTileK + k % 4] = 1;
      continue;
    }
    const uint8_t* src = x + r * k_len;
    int64_t k = 0;
    for (; k + 4 <= k_len; k += 4) std::memcpy(dst + k * kAmxTileRows, src + k, 4);
    for (; k < k_len; ++k) dst[(k / 4) * kAmxTileK + k % 4] = src[k];
  }
}

BUCKETRT_AMX_TARGET void Int8GemmAmx(const uint8_t* packed, int64_t rows, const int8_t* w, int64_t cols,
                                     int64_t k_len, int32_t* acc, int64_t ldc, int32_t* colsum) {
  AmxTileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = kAmxTileK;
    config.rows[t] = kAmxTileRows;
  }
  _tile_loadconfig(&config);
  const int64_t groups = RoundUp(rows + 1, kAmxTileRows) / kAmxTileRows;
  const int64_t group_bytes = RoundUp(k_len, kAmxTileK) * kAmxTileRows;
  alignas(64) int32_t sums[4][kAmxTileRows * kAmxTileRows];
  for (int64_t n0 = 0; n0 < cols; n0 += 2 * kAmxTileRows) {
    const bool two_a = n0 + kAmxTileRows < cols;
    for (int64_t g0 = 0; g0 < groups; g0 += 2) {
      const bool two_b = g0 + 1 < groups;
      if (two_a && two_b) {
        AmxBlock<2, 2>(packed, group_bytes, g0, w, cols, n0, k_len, sums);
      } else if (two_a) {
        AmxBlock<2, 1>(packed, group_bytes, g0, w, cols, n0, k_len, sums);
      } else if (two_b) {
        AmxBlock<1, 2>(packed, group_bytes, g0, w, cols, n0, k_len, sums);
      } else {
        AmxBlock<1, 1>(packed, group_bytes, g0, w, cols, n0, k_len, sums);
      }
      // Tile 2i + j: weight rows n0 + 16i.., packed rows 16 (g0 + j)..; element [n][r].
      for (int i = 0; i < (two_a ? 2 : 1); ++i) {
        for (int j = 0; j < (two_b ? 2 : 1); ++j) {
          const int32_t* tile = sums[2 * i + j];
          for (int64_t nn = 0; nn < kAmxTileRows; ++nn) {
            const int64_t n = n0 + i * kAmxTileRows + nn;
            if (n >= cols) break;
            for (int64_t rr = 0; rr < kAmxTileRows; ++rr) {
              const int64_t r = (g0 + j) * kAmxTileRows + rr;
              if (r < rows) {
                acc[r * ldc + n] = tile[nn * kAmxTileRows + rr];
              } else {
                if (r == rows) colsum[n] = tile[nn * kAmxTileRows + rr];
                break;
              }
            }
          }
        }
      }
    }
  }
  _tile_release();
}

#else  // not x86-64 GCC/Clang: the generic loops serve every name

void Int8GemmAvx2(BUCKETRT_INT8_GEMM_ARGS) { Int8GemmGeneric(x, rows, w, cols, k_len, acc, ldc, colsum); }
void Int8GemmAvx512Vnni(BUCKETRT_INT8_GEMM_ARGS) { Int8GemmGeneric(x, rows, w, cols, k_len, acc, ldc, colsum); }
void QuantizeRowAvx2(BUCKETRT_QUANTIZE_ROW_ARGS) { QuantizeRowGeneric(x, k_len, q, scale, zero_point); }
void QuantizeRowAvx512(BUCKETRT_QUANTIZE_ROW_ARGS) { QuantizeRowGeneric(x, k_len, q, scale, zero_point); }
bool Int8AmxUsable() { return false; }
int64_t Int8AmxPackedBytes(int64_t, int64_t) { return 0; }
void PackInt8RowsAmx(const uint8_t*, int64_t, int64_t, uint8_t*) {}
void Int8GemmAmx(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*, int64_t, int32_t*) {}

#endif

// The pickers, each looked at once per process.
Int8GemmFn PickInt8Gemm(const char** name) {
  static const auto choice = PickSimdVariant<Int8GemmFn>(Int8GemmGeneric, Int8GemmAvx2, Int8GemmAvx512Vnni,
                                                         "avx512vnni", kNeedsVnni);
  return choice.Take(name);
}

QuantizeRowFn PickQuantizeRow(const char** name) {
  static const auto choice =
      PickSimdVariant<QuantizeRowFn>(QuantizeRowGeneric, QuantizeRowAvx2, QuantizeRowAvx512, "avx512", {});
  return choice.Take(name);
}

ExpertActivateFn PickExpertActivate(const char** name) {
  static const auto choice = PickSimdVariant<ExpertActivateFn>(ExpertActivateGeneric, ExpertActivateAvx2,
                                                               ExpertActivateAvx512, "avx512", kNeedsFma);
  return choice.Take(name);
}

}  // namespace bucketrt::cpu
