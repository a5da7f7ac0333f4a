// The CUDA kernels as ONNX Runtime's CUDA execution provider sees them: one generic kernel over
// the CUDA op table (cuda/ops.h), registered per (op, T) with GetExecutionProviderType() =
// "CUDAExecutionProvider". Thin by design: the spec checks and launchers are the ones the C-ABI
// harness tests run; this file only maps ORT's tensors and stream onto them.
//
// Per run, without waiting for the device (so that the host runs ahead, sessions overlap and ORT
// can capture the run into a CUDA graph, `enable_cuda_graph`): read the data reports of this
// node's earlier runs that have landed (an event query) and fail with the first data error; bind
// the inputs, plan, allocate the outputs (ORT's); launch on KernelContext::GetGPUComputeStream()
// over a workspace the kernel keeps per stream (grown stream-ordered, never freed per run); enqueue
// the data report into pinned host memory, with an event after it.
//
// So a data error (an out-of-range code, a negative bucket, bad dispatch counts) fails the node's
// next run, not its own: the kernels stay in bounds on any data, so the bad run's outputs are
// wrong but nothing else is harmed. The session config entry "bucketrt.cuda_sync_checks" = "1"
// makes every run wait for its report and fail itself (the old behaviour: one host wait per node
// with data checks). Under CUDA-graph capture no report is enqueued: replays never reach the host
// code, so a captured graph reports no data error (docs/cuda.md). The report slots per stream
// are ort/cuda_reports.h's ReportQueue.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

#include "ort/cuda_reports.h"
#include "ort/op_base.h"

namespace bucketrt::ort {

// The one CUDA kernel, for every op of the CUDA op table (registered by ort/register.cc as
// SpecCustomOp with provider kCudaProvider).
class CudaKernel final : public NodeKernel {
 public:
  CudaKernel(const spec::OpSpec& op, Attributes attrs, bool sync_checks);
  ~CudaKernel() override;
  CudaKernel(const CudaKernel&) = delete;
  CudaKernel& operator=(const CudaKernel&) = delete;

 protected:
  void Compute(Ort::KernelContext& ctx) override;

 private:
  using Reports = ReportQueue<CudaReportDevice, Bindings>;
  // What the kernel keeps per compute stream: ORT may run a session's concurrent runs on several
  // streams, and a workspace may be reused only in one stream's order.
  struct StreamState {
    StreamState(cudaStream_t s, int d, Reports::ErrorText error_text);
    cudaStream_t stream;
    int device;
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
    bool pooled = false;             // workspace from cudaMallocAsync (else cudaMalloc)
    cudaEvent_t last_use = nullptr;  // after the last launch that used the workspace
    Reports reports;                 // this stream's data reports (ort/cuda_reports.h)
  };

  StreamState& StateFor(cudaStream_t stream, int device);
  std::string EnsureWorkspace(StreamState& state, size_t bytes, bool capturing);
  std::string ReadReport(const Bindings& env, const void* report) const;

  const spec::OpSpec& op_;
  Attributes attrs_;
  const bool sync_checks_;
  std::mutex mutex_;  // ORT may call Compute of one node from several threads at once
  std::deque<StreamState> streams_;  // a deque: states keep their address as streams are added
};

}  // namespace bucketrt::ort
