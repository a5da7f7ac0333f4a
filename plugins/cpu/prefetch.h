// A software prefetch ahead of a weight stream, for the kernels that read weights from memory once
// per call (a decoding step's experts), where the hardware's prefetchers fall behind.
#pragma once

#include <cstdint>

#include <immintrin.h>  // _mm_prefetch: SSE, on every x86-64

namespace bucketrt::cpu {

// Asks for the cache line `ahead` bytes past `at` (a line just read) into L2. The sum is taken in
// integers: it may lie past the tensor, where a pointer may not be formed, and a prefetch of any
// address does nothing but fill the cache, never faults.
inline void PrefetchAhead(const void* at, uintptr_t ahead) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(at) + ahead), _MM_HINT_T1);
}

}  // namespace bucketrt::cpu
