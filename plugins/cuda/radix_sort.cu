// CUB's radix sort, compiled once for every kernel that sorts (see radix_sort.h).
#include "cuda/radix_sort.h"

#include <cub/device/device_radix_sort.cuh>

namespace bucketrt::cuda {

cudaError_t RadixSortPairsTempBytes(int64_t items, int key_bits, size_t* bytes) {
  *bytes = 0;
  if (items == 0) return cudaSuccess;
  return cub::DeviceRadixSort::SortPairs(nullptr, *bytes, static_cast<const uint64_t*>(nullptr),
                                         static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                         static_cast<int32_t*>(nullptr), items, 0, key_bits, cudaStream_t{});
}

cudaError_t RadixSortPairs(void* temp, size_t temp_bytes, const uint64_t* keys_in, uint64_t* keys_out,
                           const int32_t* values_in, int32_t* values_out, int64_t items, int key_bits,
                           cudaStream_t stream) {
  return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, values_in, values_out, items, 0,
                                         key_bits, stream);
}

}  // namespace bucketrt::cuda
