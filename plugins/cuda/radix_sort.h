// The one radix sort the CUDA kernels use (LSHCumulation's sorted way, BucketSum, TopKExperts'
// grouping of its pairs): CUB's stable DeviceRadixSort::SortPairs of 64-bit keys with int32 values,
// in a translation unit of its own so that CUB's sort is compiled once, and so that a test can link
// a stand-in for the size query (tests/radix_sort_stub.cc: CUB's formula, no device) in its place.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace bucketrt::cuda {

// The temporary storage SortPairs needs for `items` pairs sorted on bits [0, key_bits). Needs a
// current CUDA device (CUB asks it for its architecture). Never smaller when `items` or
// `key_bits` grows (CUB's bins, lookback and extra buffers all grow with them): the workspace
// plans rely on it.
cudaError_t RadixSortPairsTempBytes(int64_t items, int key_bits, size_t* bytes);

// Sorts `items` (key, value) pairs on bits [0, key_bits), stably, from keys_in/values_in into
// keys_out/values_out on `stream`; `temp` holds at least RadixSortPairsTempBytes(items, key_bits).
cudaError_t RadixSortPairs(void* temp, size_t temp_bytes, const uint64_t* keys_in, uint64_t* keys_out,
                           const int32_t* values_in, int32_t* values_out, int64_t items, int key_bits,
                           cudaStream_t stream);

}  // namespace bucketrt::cuda
