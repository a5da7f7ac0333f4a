// The CUDA kernels as ONNX Runtime's CUDA execution provider sees them: one generic kernel over
// the CUDA op table (cuda/ops.h), registered per (op, T) with GetExecutionProviderType() =
// "CUDAExecutionProvider". Thin by design: the spec checks and launchers are the ones the C-ABI
// harness tests run; this file only maps ORT's tensors, stream and allocator onto them.
//
// Per run: bind the inputs (BindOrtInputs), plan, allocate the outputs (device memory, from ORT)
// and the workspace (from the kernel context's allocator for the inputs' device), launch on
// KernelContext::GetGPUComputeStream(), then the data checks, which synchronise that stream where
// an op has them (LSHCumulation's code range), before the workspace goes back to ORT.
#pragma once

#include "ort/op_base.h"

namespace bucketrt::ort {

// The one CUDA kernel, for every op of the CUDA op table (registered by ort/register.cc as
// SpecCustomOp with provider kCudaProvider).
class CudaKernel final : public NodeKernel {
 public:
  CudaKernel(const spec::OpSpec& op, Attributes attrs);

 protected:
  void Compute(Ort::KernelContext& ctx) override;

 private:
  const spec::OpSpec& op_;
  Attributes attrs_;
};

}  // namespace bucketrt::ort
