// ExpertFFNInt8's GEMM: uint8 activation rows times int8 weight rows, exact int32 sums. One
// definition per instruction set, each compiled for its own target by a function attribute (no
// global -m flags: the library must load on every x86-64), picked at run time by CPUID.
//
//  * Generic: plain loops (what a CPU without AVX2, or BUCKETRT_SIMD=generic, runs).
//  * AVX2: widen to int16 (vpmovzxbw / vpmovsxbw) and vpmaddwd: 16 products per instruction, each
//    pair summed in int32 without saturation. vpmaddubsw would take twice as many per instruction
//    but saturates its int16 pair sums (255 * 127 * 2 > 32767), which would break exactness.
//  * AVX-512 VNNI: vpdpbusd, 64 uint8 x int8 products per instruction summed by fours into int32,
//    exact.
// Every path computes the same integers, so the result does not depend on the CPU.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/expert_ffn_int8.h"
#include "cpu/simd_switch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BUCKETRT_INT8_X86 1
#endif

namespace bucketrt::cpu {

void Int8GemmGeneric(const uint8_t* x, int64_t rows, const int8_t* w, int64_t cols, int64_t k_len, int32_t* acc,
                     int64_t ldc) {
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

#ifdef BUCKETRT_INT8_X86

namespace {

// R rows by C weight rows, 16 k per step; the k_len % 16 tail in scalar code.
template <int R, int C>
__attribute__((target("avx2"))) inline void Avx2Block(const uint8_t* x, const int8_t* w, int64_t k_len, int32_t* acc,
                                                      int64_t ldc) {
  __m256i sums[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) sums[r][c] = _mm256_setzero_si256();
  const int64_t body = k_len - k_len % 16;
  for (int64_t k = 0; k < body; k += 16) {
    __m256i wv[C];
    for (int c = 0; c < C; ++c) {
      wv[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + c * k_len + k)));
    }
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + r * k_len + k)));
      for (int c = 0; c < C; ++c) sums[r][c] = _mm256_add_epi32(sums[r][c], _mm256_madd_epi16(xv, wv[c]));
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      const __m128i half = _mm_add_epi32(_mm256_castsi256_si128(sums[r][c]), _mm256_extracti128_si256(sums[r][c], 1));
      const __m128i quad = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0x4e));
      int32_t sum = _mm_cvtsi128_si32(_mm_add_epi32(quad, _mm_shuffle_epi32(quad, 0xb1)));
      for (int64_t k = body; k < k_len; ++k) {
        sum += static_cast<int32_t>(x[r * k_len + k]) * static_cast<int32_t>(w[c * k_len + k]);
      }
      acc[r * ldc + c] = sum;
    }
  }
}

// R rows by C weight rows, 64 k per step, the tail through masked loads (zeros add nothing).
template <int R, int C>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline void VnniBlock(const uint8_t* x, const int8_t* w,
                                                                             int64_t k_len, int32_t* acc,
                                                                             int64_t ldc) {
  __m512i sums[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) sums[r][c] = _mm512_setzero_si512();
  for (int64_t k = 0; k < k_len; k += 64) {
    const int64_t left = k_len - k;
    const __mmask64 mask = left >= 64 ? ~__mmask64{0} : ((__mmask64{1} << left) - 1);
    __m512i wv[C];
    for (int c = 0; c < C; ++c) wv[c] = _mm512_maskz_loadu_epi8(mask, w + c * k_len + k);
    for (int r = 0; r < R; ++r) {
      const __m512i xv = _mm512_maskz_loadu_epi8(mask, x + r * k_len + k);
      for (int c = 0; c < C; ++c) sums[r][c] = _mm512_dpbusd_epi32(sums[r][c], xv, wv[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r * ldc + c] = _mm512_reduce_add_epi32(sums[r][c]);
}

// Every row against C weight rows: blocks of R rows, single rows at the end. The weight rows
// (C * k_len bytes) stay in L1 while every row block reads them.
#define BUCKETRT_INT8_TILER(NAME, BLOCK, TARGET)                                                                    \
  template <int R, int C>                                                                                        \
  TARGET inline void NAME##Rows(const uint8_t* x, int64_t rows, const int8_t* w, int64_t k_len, int32_t* acc,    \
                                int64_t ldc) {                                                                   \
    int64_t r = 0;                                                                                               \
    for (; r + R <= rows; r += R) BLOCK<R, C>(x + r * k_len, w, k_len, acc + r * ldc, ldc);                      \
    for (; r < rows; ++r) BLOCK<1, C>(x + r * k_len, w, k_len, acc + r * ldc, ldc);                              \
  }

BUCKETRT_INT8_TILER(Avx2, Avx2Block, __attribute__((target("avx2"))))
BUCKETRT_INT8_TILER(Vnni, VnniBlock, __attribute__((target("avx512f,avx512bw,avx512vnni"))))
#undef BUCKETRT_INT8_TILER

}  // namespace

__attribute__((target("avx2"))) void Int8GemmAvx2(const uint8_t* x, int64_t rows, const int8_t* w, int64_t cols,
                                                  int64_t k_len, int32_t* acc, int64_t ldc) {
  // 4 rows x 2 weight rows: 8 accumulators, 2 weights and 1 row in 11 of the 16 ymm registers.
  int64_t n = 0;
  for (; n + 2 <= cols; n += 2) Avx2Rows<4, 2>(x, rows, w + n * k_len, k_len, acc + n, ldc);
  for (; n < cols; ++n) Avx2Rows<4, 1>(x, rows, w + n * k_len, k_len, acc + n, ldc);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) void Int8GemmAvx512Vnni(const uint8_t* x, int64_t rows,
                                                                               const int8_t* w, int64_t cols,
                                                                               int64_t k_len, int32_t* acc,
                                                                               int64_t ldc) {
  // 4 rows x 4 weight rows: 16 accumulators, 4 weights and 1 row of the 32 zmm registers.
  int64_t n = 0;
  for (; n + 4 <= cols; n += 4) VnniRows<4, 4>(x, rows, w + n * k_len, k_len, acc + n, ldc);
  for (; n < cols; ++n) VnniRows<4, 1>(x, rows, w + n * k_len, k_len, acc + n, ldc);
}

#else  // not x86-64 GCC/Clang: the generic loops serve every name

void Int8GemmAvx2(BUCKETRT_INT8_GEMM_ARGS) { Int8GemmGeneric(x, rows, w, cols, k_len, acc, ldc); }
void Int8GemmAvx512Vnni(BUCKETRT_INT8_GEMM_ARGS) { Int8GemmGeneric(x, rows, w, cols, k_len, acc, ldc); }

#endif

Int8GemmFn PickInt8Gemm(const char** name) {
  struct Choice {
    Int8GemmFn fn;
    const char* name;
  };
  static const Choice choice = [] {
    if (SimdForcedGeneric()) return Choice{Int8GemmGeneric, "generic"};
#ifdef BUCKETRT_INT8_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni")) {
      return Choice{Int8GemmAvx512Vnni, "avx512vnni"};
    }
    if (__builtin_cpu_supports("avx2")) return Choice{Int8GemmAvx2, "avx2"};
#endif
    return Choice{Int8GemmGeneric, "generic"};
  }();
  if (name != nullptr) *name = choice.name;
  return choice.fn;
}

}  // namespace bucketrt::cpu
