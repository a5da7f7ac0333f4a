// A stand-in for plugins/cuda/radix_sort.cu in tests that plan without a GPU
// (tests/trt_workspace_check.cc): RadixSortPairsTempBytes by CUB's own formula instead of CUB's
// query, which asks the device for its architecture. Linked before the kernel archive, so the
// archive's radix_sort.cu object is never pulled in.
//
// The formula: CUB 3.0 (CUDA 13.0), cub/device/dispatch/dispatch_radix_sort.cuh, the onesweep path
// every architecture since sm_60 takes for 64-bit keys (InvokeOnesweep; ONESWEEP_RADIX_BITS = 8,
// sm_90's tile of 384 threads x 30 items for 4-byte values, portions of 2^28 - 1 items rounded
// down to tiles), its five allocations aliased by detail::AliasTemporaries (each rounded up to 256
// bytes, plus 255): bins, lookback, the extra key and value buffers (SortPairs does not overwrite
// its input; none when one pass suffices) and counters. An empty problem needs 1 byte (Invoke).
#include <cstddef>
#include <cstdint>

#include "cuda/radix_sort.h"

namespace bucketrt::cuda {

cudaError_t RadixSortPairsTempBytes(int64_t items, int key_bits, size_t* bytes) {
  *bytes = 0;
  if (items == 0) return cudaSuccess;  // as radix_sort.cu: nothing to sort, nothing asked of CUB
  constexpr int64_t kRadixBits = 8, kDigits = int64_t{1} << kRadixBits, kTile = 384 * 30;
  constexpr int64_t kPortion = ((int64_t{1} << 28) - 1) / kTile * kTile;
  constexpr int64_t kOffsetBytes = 8, kAtomicBytes = 4;  // OffsetT for int64 items; PortionOffsetT
  const int64_t passes = (key_bits + kRadixBits - 1) / kRadixBits;
  const int64_t portions = (items + kPortion - 1) / kPortion;
  const int64_t blocks = ((items < kPortion ? items : kPortion) + kTile - 1) / kTile;
  const int64_t sizes[] = {portions * passes * kDigits * kOffsetBytes, blocks * kDigits * kAtomicBytes,
                           passes <= 1 ? 0 : items * 8, passes <= 1 ? 0 : items * 4, portions * passes * kAtomicBytes};
  size_t total = 0;
  for (int64_t size : sizes) total += (static_cast<size_t>(size) + 255) / 256 * 256;
  *bytes = total + 255;
  return cudaSuccess;
}

cudaError_t RadixSortPairs(void*, size_t, const uint64_t*, uint64_t*, const int32_t*, int32_t*, int64_t, int,
                           cudaStream_t) {
  return cudaErrorNotSupported;  // planning only: nothing here sorts
}

}  // namespace bucketrt::cuda
