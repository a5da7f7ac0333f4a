// How the pure kernels run work in parallel without depending on a runtime: the caller passes a
// parallel-for. ORT's KernelContext::ParallelFor fits it directly; Serial() runs in the caller.
#pragma once

#include <cstddef>

namespace bucketrt {

struct ParallelFor {
  // Calls fn(data, i) for every i in [0, total), possibly concurrently, and returns when all are
  // done. fn must not throw.
  void (*run)(void* context, void (*fn)(void*, size_t), size_t total, void* data);
  void* context;

  void operator()(void (*fn)(void*, size_t), size_t total, void* data) const { run(context, fn, total, data); }

  static ParallelFor Serial() { return {&RunSerial, nullptr}; }

 private:
  // A named function rather than a lambda: nvcc's front end (CUDA 13) rejects the lambda's
  // conversion to a function pointer here, and CUDA sources include this header.
  static void RunSerial(void*, void (*fn)(void*, size_t), size_t total, void* data) {
    for (size_t i = 0; i < total; ++i) fn(data, i);
  }
};

}  // namespace bucketrt
