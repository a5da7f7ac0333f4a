// Four floats as one value: an SSE/NEON register through GCC and Clang's vector extension, so that
// the kernels' inner loops are whole-vector loads, adds and multiplies on any target without
// -march flags (the wheel must run on every x86-64); a plain struct with the same operations on
// other compilers (or with -DBUCKETRT_PORTABLE_F4, which the tests of that path can use).
#pragma once

#include <cstring>

namespace bucketrt::cpu {

#if (defined(__GNUC__) || defined(__clang__)) && !defined(BUCKETRT_PORTABLE_F4)
typedef float F4 __attribute__((vector_size(16)));
#else
struct F4 {
  float v[4];
  F4& operator+=(const F4& o) {
    for (int i = 0; i < 4; ++i) v[i] += o.v[i];
    return *this;
  }
  friend F4 operator+(F4 a, const F4& b) { return a += b; }
  friend F4 operator*(const F4& a, const F4& b) {
    F4 r;
    for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] * b.v[i];
    return r;
  }
};
#endif

inline F4 Splat4(float x) { return F4{x, x, x, x}; }

// Unaligned load/store (memcpy compiles to one movups).
inline F4 Load4(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store4(float* p, const F4& v) { std::memcpy(p, &v, sizeof v); }

}  // namespace bucketrt::cpu
