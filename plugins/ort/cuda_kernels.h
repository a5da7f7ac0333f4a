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

class CudaKernel {
 public:
  CudaKernel(const spec::OpSpec& op, Attributes attrs);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept;

 private:
  void Compute(Ort::KernelContext& ctx);
  const spec::OpSpec& op_;
  Attributes attrs_;
};

struct CudaSpecOp : Ort::CustomOpBase<CudaSpecOp, CudaKernel, /*WithStatus=*/true> {
  CudaSpecOp(const spec::OpSpec& op, spec::DType float_type, const RegistrationOptions& options);

  const char* GetName() const { return op_.name; }
  const char* GetExecutionProviderType() const { return kCudaProvider; }

  size_t GetInputTypeCount() const { return static_cast<size_t>(op_.num_inputs); }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return ToOrt(spec::Concrete(op_.inputs[index].dtype, float_type_));
  }
  size_t GetOutputTypeCount() const { return static_cast<size_t>(op_.num_outputs); }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return ToOrt(spec::Concrete(op_.outputs[index].dtype, float_type_));
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const noexcept;

 private:
  const spec::OpSpec& op_;
  spec::DType float_type_;
  RegistrationOptions options_;
};

}  // namespace bucketrt::ort
