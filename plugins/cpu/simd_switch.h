// The one environment switch of the CPU kernels, read once per process.
#pragma once

#include <cstdlib>
#include <cstring>

namespace bucketrt::cpu {

// BUCKETRT_SIMD=generic forces the baseline code where the CPU has wider instructions (a switch for
// testing and comparing it). Read at the first kernel call after the library is loaded; changing
// it later has no effect until the library is unloaded (ONNX Runtime does so with the last session
// that registered it) and loaded again.
inline bool SimdForcedGeneric() {
  static const bool generic = [] {
    const char* choice = std::getenv("BUCKETRT_SIMD");
    return choice != nullptr && std::strcmp(choice, "generic") == 0;
  }();
  return generic;
}

}  // namespace bucketrt::cpu
