// The one environment switch of the CPU kernels, read once per process.
#pragma once

#include <cstdlib>
#include <cstring>

namespace bucketrt::cpu {

// BUCKETRT_SIMD caps the instruction sets the kernels pick from (a switch for testing and comparing
// the variants on one CPU): "generic" forces the baseline code, "avx2" allows AVX2 but no AVX-512
// (so a CPU with AVX-512 VNNI also runs, and its tests check, the AVX2 variants), "avx512" allows
// AVX-512 but not AMX (the int8 GEMM's VNNI code on a CPU with AMX); unset or anything else, the
// widest the CPU has. Read at the first kernel call after the library is loaded; changing
// it later has no effect until the library is unloaded (ONNX Runtime does so with the last session
// that registered it) and loaded again.
enum class SimdCap { kGeneric, kAvx2, kAvx512, kWidest };

inline SimdCap SimdCapFromEnv() {
  static const SimdCap cap = [] {
    const char* choice = std::getenv("BUCKETRT_SIMD");
    if (choice == nullptr) return SimdCap::kWidest;
    if (std::strcmp(choice, "generic") == 0) return SimdCap::kGeneric;
    if (std::strcmp(choice, "avx2") == 0) return SimdCap::kAvx2;
    if (std::strcmp(choice, "avx512") == 0) return SimdCap::kAvx512;
    return SimdCap::kWidest;
  }();
  return cap;
}

inline bool SimdForcedGeneric() { return SimdCapFromEnv() == SimdCap::kGeneric; }
// Whether AVX-512 variants may be picked (where the CPU has them).
inline bool SimdAllowsAvx512() { return SimdCapFromEnv() >= SimdCap::kAvx512; }
// Whether AMX may be used (where the CPU and the kernel allow it).
inline bool SimdAllowsAmx() { return SimdCapFromEnv() == SimdCap::kWidest; }

// What a per-instruction-set picker chose (looked at once per process): the function and its name,
// as BucketrtCpuVariants() reports it.
template <typename Fn>
struct SimdChoice {
  Fn fn;
  const char* name;

  Fn Take(const char** name_out) const {
    if (name_out != nullptr) *name_out = name;
    return fn;
  }
};

// What a function's wider variants need besides AVX2 and AVX-512F themselves.
struct SimdNeeds {
  bool fma = false;   // both variants
  bool vnni = false;  // the AVX-512 one: AVX-512 BW and VNNI
};
constexpr SimdNeeds kNeedsFma{true, false};
constexpr SimdNeeds kNeedsVnni{false, true};

// The widest of a function's three variants that the CPU runs within BUCKETRT_SIMD's cap.
template <typename Fn>
SimdChoice<Fn> PickSimdVariant(Fn generic, Fn avx2, Fn avx512, const char* avx512_name, SimdNeeds needs) {
  if (SimdForcedGeneric()) return {generic, "generic"};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool fma = !needs.fma || __builtin_cpu_supports("fma");
  const bool vnni = !needs.vnni || (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"));
  if (fma && vnni && SimdAllowsAvx512() && __builtin_cpu_supports("avx512f")) return {avx512, avx512_name};
  if (fma && __builtin_cpu_supports("avx2")) return {avx2, "avx2"};
#else
  (void)avx2, (void)avx512, (void)avx512_name, (void)needs;
#endif
  return {generic, "generic"};
}

}  // namespace bucketrt::cpu
