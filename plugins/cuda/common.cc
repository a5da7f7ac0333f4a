#include "cuda/common.h"

#include "bucketrt/validate.h"

namespace bucketrt::cuda {

std::string CudaErrorText(const char* op, const char* what, cudaError_t error) {
  if (error == cudaSuccess) return {};
  return Format("%s: CUDA error in %s: %s (%s)", op, what, cudaGetErrorName(error), cudaGetErrorString(error));
}

}  // namespace bucketrt::cuda
