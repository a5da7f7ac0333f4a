#include "ort/cuda_kernels.h"

#include "cuda/ops.h"

namespace bucketrt::ort {

namespace {

// Device memory from ORT's allocator for the inputs' device, returned on destruction once the
// stream is done with it (ORT's allocator is not ordered on our stream).
class DeviceWorkspace {
 public:
  DeviceWorkspace(Ort::KernelContext& ctx, const OrtMemoryInfo* device, size_t bytes, cudaStream_t stream,
                  const char* op)
      : stream_(stream) {
    if (bytes == 0) return;
    allocator_ = ctx.GetAllocator(*device);
    if (allocator_ == nullptr) throw Ort::Exception(Format("%s: no allocator for the CUDA device", op), ORT_FAIL);
    data_ = allocator_->Alloc(allocator_, bytes);
    if (data_ == nullptr) {
      Ort::GetApi().ReleaseAllocator(allocator_);
      allocator_ = nullptr;
      throw Ort::Exception(Format("%s: could not allocate %zu bytes of GPU workspace", op, bytes), ORT_FAIL);
    }
  }
  ~DeviceWorkspace() {
    if (allocator_ == nullptr) return;
    cudaStreamSynchronize(stream_);  // an error here surfaces at the next CUDA call of the session
    allocator_->Free(allocator_, data_);
    Ort::GetApi().ReleaseAllocator(allocator_);
  }
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
  void* data() const { return data_; }

 private:
  cudaStream_t stream_;
  OrtAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
};

void ThrowIf(const std::string& error, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  if (!error.empty()) throw Ort::Exception(std::string(error), code);
}

}  // namespace

CudaKernel::CudaKernel(const spec::OpSpec& op, Attributes attrs) : op_(op), attrs_(std::move(attrs)) {
  ThrowIf(cuda::CheckAttributes(op_, attrs_));
}

void CudaKernel::Compute(Ort::KernelContext& ctx) {
  OrtInputs in;
  Bindings env;
  BindOrtInputs(op_, attrs_, ctx, &in, &env);
  // Every input lives on the EP's device (OrtMemTypeDefault); the workspace comes from there too.
  const Ort::ConstMemoryInfo device = in.values[0].GetTensorMemoryInfo();
  ThrowIf(cuda::CudaErrorText(op_.name, "selecting the device", cudaSetDevice(device.GetDeviceId())), ORT_FAIL);
  size_t workspace_bytes = 0;
  ThrowIf(cuda::Plan(op_, attrs_, env, &workspace_bytes));

  const void* inputs[OrtInputs::kMax] = {};
  for (int i = 0; i < in.count; ++i) inputs[i] = in.values[i].GetTensorRawData();
  void* outputs[OrtInputs::kMax] = {};
  for (int i = 0; i < op_.num_outputs; ++i) {
    const spec::TensorSpec& t = op_.outputs[i];
    int64_t dims[4];
    for (int a = 0; a < t.rank; ++a) dims[a] = env[t.dims[a]];
    outputs[i] = ctx.GetOutput(static_cast<size_t>(i), dims, static_cast<size_t>(t.rank)).GetTensorMutableRawData();
  }
  cudaStream_t stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
  DeviceWorkspace workspace(ctx, device, workspace_bytes, stream, op_.name);
  ThrowIf(cuda::Launch(op_, attrs_, env, inputs, outputs, workspace.data(), workspace_bytes, stream), ORT_FAIL);
  // Data errors are input errors; they need the workspace, freed only after this (it synchronises).
  ThrowIf(cuda::CheckData(op_, attrs_, env, inputs, workspace.data(), stream));
}

}  // namespace bucketrt::ort
