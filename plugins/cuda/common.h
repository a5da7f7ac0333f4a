// What every CUDA launcher shares: the float type of an op's T tensors and the carving of a
// caller-provided workspace. Plain C++ over the CUDA runtime API: no framework types, so that the
// ONNX Runtime CUDA EP, the C-ABI harness and the TensorRT plugins call the same launchers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace bucketrt::cuda {

// The element type of an op's "float" (T) tensors. Kernels compute in float32 either way.
enum class FloatType { kFloat32, kFloat16 };

inline size_t FloatBytes(FloatType type) { return type == FloatType::kFloat16 ? 2 : 4; }

// Workspace slices are 256-byte aligned (cudaMalloc's alignment), so any element type fits.
inline constexpr size_t kWorkspaceAlign = 256;

inline size_t AlignUp(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

// Lays out consecutive aligned slices: first with base == nullptr to count the bytes a plan needs,
// then over the real workspace to get the slices' addresses, in the same order.
class WorkspaceLayout {
 public:
  explicit WorkspaceLayout(void* base = nullptr) : base_(static_cast<char*>(base)) {}
  template <class T>
  T* Take(size_t count) {
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += AlignUp(count * sizeof(T));
    return p;
  }
  size_t bytes() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

// "" for cudaSuccess, else "<op>: CUDA error in <what>: <name> (<description>)".
std::string CudaErrorText(const char* op, const char* what, cudaError_t error);

}  // namespace bucketrt::cuda
