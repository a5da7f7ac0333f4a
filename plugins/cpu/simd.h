// Short float vectors for the kernels' inner loops, without -march flags (the wheel must run on
// every x86-64).
//
//  * F4, F8: four and eight floats (I4, I8: int32 masks) through GCC and Clang's vector
//    extension, SSE/NEON and AVX registers. Other compilers (or -DBUCKETRT_PORTABLE_F4, which the
//    tests of that path can use) get kernels on plain floats instead.
//  * cpu/vec.inc: Vec<V>, the few operations the kernels need (load, store, splat, compare,
//    transpose) over V = float, F4 or F8, so that one kernel template serves every width.
//  * AVX2 variants (x86, GCC or Clang): a kernel's templates are compiled a second time between
//    BUCKETRT_AVX2_BEGIN and BUCKETRT_AVX2_END, in their own namespace, so that everything there,
//    helpers included, is AVX2 code; UseAvx2() picks that copy at run time, and older CPUs run the
//    baseline (SSE2) one. (A baseline template merely inlined into a target("avx2") function does
//    not do: GCC has already lowered its 8-wide operations, splats especially, for SSE.)
//  * AllFinite: whether a buffer holds no Inf or NaN.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cpu/simd_switch.h"

#if (defined(__GNUC__) || defined(__clang__)) && !defined(BUCKETRT_PORTABLE_F4)
#define BUCKETRT_VECTOR_EXT 1
#endif

#if defined(BUCKETRT_VECTOR_EXT) && (defined(__x86_64__) || defined(__i386__)) && !defined(BUCKETRT_NO_AVX2)
#define BUCKETRT_HAVE_AVX2_VARIANT 1
#ifdef __clang__
#define BUCKETRT_AVX2_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2\"))), apply_to = function)")
#define BUCKETRT_AVX2_END _Pragma("clang attribute pop")
#else
#define BUCKETRT_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2\")")
#define BUCKETRT_AVX2_END _Pragma("GCC pop_options")
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BUCKETRT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define BUCKETRT_ALWAYS_INLINE inline
#endif

namespace bucketrt::cpu {

#ifdef BUCKETRT_VECTOR_EXT
typedef float F4 __attribute__((vector_size(16)));
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I4 __attribute__((vector_size(16)));
typedef int32_t I8 __attribute__((vector_size(32)));
// Lane permutation of two vectors a, b of type T (indices into their concatenation; I the int
// vector of the same shape).
#ifdef __clang__
#define BUCKETRT_SHUFFLE(I, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define BUCKETRT_SHUFFLE(I, a, b, ...) __builtin_shuffle(a, b, I{__VA_ARGS__})
#endif
#endif

// Whether to take the AVX2 variants: the CPU and OS support AVX2, and BUCKETRT_SIMD is not
// "generic".
inline bool UseAvx2() {
#ifdef BUCKETRT_HAVE_AVX2_VARIANT
  static const bool cpu = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return cpu && !SimdForcedGeneric();
#else
  return false;
#endif
}

// Whether none of `count` floats (every `stride`-th from x) is an Inf or a NaN: exponent bits all
// set, tested in integer operations without a branch, so that a contiguous buffer's loop (stride 1
// where inlined) vectorizes. memcpy is how C++17 reads a float's bits.
inline bool AllFinite(const float* x, int64_t count, int64_t stride = 1) {
  uint32_t special = 0;
  for (int64_t j = 0; j < count; ++j) {
    uint32_t bits;
    std::memcpy(&bits, x + j * stride, sizeof bits);
    special |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return special == 0;
}

}  // namespace bucketrt::cpu
