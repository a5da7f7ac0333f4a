// The one environment switch of the CPU kernels, read once per process.
#pragma once

#include <cstdlib>
#include <cstring>

namespace bucketrt::cpu {

// BUCKETRT_SIMD caps the instruction sets the kernels pick from (a switch for testing and comparing
// the variants on one CPU): "generic" forces the baseline code, "avx2" allows AVX2 but no AVX-512
// (so a CPU with AVX-512 VNNI also runs, and its tests check, the AVX2 variants); unset or anything
// else, the widest the CPU has. Read at the first kernel call after the library is loaded; changing
// it later has no effect until the library is unloaded (ONNX Runtime does so with the last session
// that registered it) and loaded again.
enum class SimdCap { kGeneric, kAvx2, kWidest };

inline SimdCap SimdCapFromEnv() {
  static const SimdCap cap = [] {
    const char* choice = std::getenv("BUCKETRT_SIMD");
    if (choice == nullptr) return SimdCap::kWidest;
    if (std::strcmp(choice, "generic") == 0) return SimdCap::kGeneric;
    if (std::strcmp(choice, "avx2") == 0) return SimdCap::kAvx2;
    return SimdCap::kWidest;
  }();
  return cap;
}

inline bool SimdForcedGeneric() { return SimdCapFromEnv() == SimdCap::kGeneric; }
// Whether AVX-512 variants may be picked (where the CPU has them).
inline bool SimdAllowsAvx512() { return SimdCapFromEnv() == SimdCap::kWidest; }

// What a per-instruction-set picker chose (looked at once per process): the function and its name,
// as BucketrtCpuVariants() reports it.
template <typename Fn>
struct SimdChoice {
  Fn fn;
  const char* name;
};

}  // namespace bucketrt::cpu
