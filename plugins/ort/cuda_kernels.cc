#include "ort/cuda_kernels.h"

#include "cuda/ops.h"

namespace bucketrt::ort {

namespace {

// Reports in flight per stream before the host waits for the oldest: a bound on how far the host
// may run ahead of the device (ORT's own end-of-run synchronisation, on by default, keeps one).
constexpr size_t kMaxPendingReports = 16;

void ThrowIf(const std::string& error, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  if (!error.empty()) throw Ort::Exception(std::string(error), code);
}

// Whether `stream` is being captured into a CUDA graph (ORT's enable_cuda_graph): nothing may then
// allocate, wait, or leave work whose result the host would read (replays never run host code).
std::string IsCapturing(const char* op, cudaStream_t stream, bool* capturing) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  std::string error = cuda::CudaErrorText(op, "querying the stream's capture", cudaStreamIsCapturing(stream, &status));
  *capturing = status != cudaStreamCaptureStatusNone;
  return error;
}

// cudaEventRecord, or in a capture an event-record node that records the real event at every replay.
cudaError_t RecordEvent(cudaEvent_t event, cudaStream_t stream, bool capturing) {
  return capturing ? cudaEventRecordWithFlags(event, stream, cudaEventRecordExternal) : cudaEventRecord(event, stream);
}

}  // namespace

CudaKernel::CudaKernel(const spec::OpSpec& op, Attributes attrs, bool sync_checks)
    : op_(op), attrs_(std::move(attrs)), sync_checks_(sync_checks) {
  ThrowIf(cuda::CheckAttributes(op_, attrs_));
}

// Releases without waiting: the workspace goes back to its pool in stream order after its last
// use (recorded on the compute stream; cudaStreamPerThread, which outlives ORT's streams, waits
// for that event). The report slots' pinned memory goes with cudaFreeHost (ReportQueue's
// destructor), which may wait for the device: once, when the session is destroyed, never per run.
CudaKernel::~CudaKernel() {
  for (StreamState& s : streams_) {
    cudaSetDevice(s.device);
    if (s.workspace != nullptr) {
      if (s.pooled) {
        cudaStreamWaitEvent(cudaStreamPerThread, s.last_use, 0);
        cudaFreeAsync(s.workspace, cudaStreamPerThread);
      } else {
        cudaFree(s.workspace);
      }
    }
    if (s.last_use != nullptr) cudaEventDestroy(s.last_use);
  }
}

CudaKernel::StreamState::StreamState(cudaStream_t s, int d, Reports::ErrorText error_text)
    : stream(s), device(d), reports(kMaxPendingReports, std::move(error_text)) {}

CudaKernel::StreamState& CudaKernel::StateFor(cudaStream_t stream, int device) {
  for (StreamState& s : streams_) {
    if (s.stream == stream) return s;
  }
  const char* op = op_.name;
  StreamState& state = streams_.emplace_back(
      stream, device, [op](const char* what, cudaError_t status) { return cuda::CudaErrorText(op, what, status); });
  ThrowIf(cuda::CudaErrorText(op_.name, "creating an event",
                              cudaEventCreateWithFlags(&state.last_use, cudaEventDisableTiming)),
          ORT_FAIL);
  return state;
}

std::string CudaKernel::ReadReport(const Bindings& env, const void* report) const {
  return cuda::ReportError(op_, attrs_, env, report);
}

// Grows the stream's workspace to `bytes`, stream-ordered: the old buffer returns to the pool once
// the launches already enqueued with it are done, the new one is ready for the next launch. A
// device without memory pools falls back to cudaMalloc, which needs a wait before the old
// buffer's cudaFree: on growth only, never on a run whose shapes fit.
std::string CudaKernel::EnsureWorkspace(StreamState& s, size_t bytes, bool capturing) {
  if (bytes <= s.workspace_bytes) return {};
  if (capturing) {
    return Format(
        "%s: the workspace must grow to %zu bytes while the stream is captured into a CUDA graph; run the "
        "captured shapes once before capturing (ONNX Runtime's warm-up runs do)",
        op_.name, bytes);
  }
  int pools = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, s.device);
  cudaError_t status = cudaSuccess;
  if (s.workspace != nullptr) {
    if (s.pooled) {
      status = cudaFreeAsync(s.workspace, s.stream);
    } else {
      status = cudaStreamSynchronize(s.stream);
      if (status == cudaSuccess) status = cudaFree(s.workspace);
    }
    s.workspace = nullptr;
    s.workspace_bytes = 0;
    if (status != cudaSuccess) return cuda::CudaErrorText(op_.name, "releasing the workspace", status);
  }
  s.pooled = pools != 0;
  status = s.pooled ? cudaMallocAsync(&s.workspace, bytes, s.stream) : cudaMalloc(&s.workspace, bytes);
  if (status != cudaSuccess) {
    s.workspace = nullptr;
    return Format("%s: could not allocate %zu bytes of GPU workspace (%s)", op_.name, bytes,
                  cudaGetErrorString(status));
  }
  s.workspace_bytes = bytes;
  return {};
}

void CudaKernel::Compute(Ort::KernelContext& ctx) {
  OrtInputs in;
  Bindings env;
  BindOrtInputs(op_, attrs_, ctx, &in, &env);
  // Every input lives on the EP's device (OrtMemTypeDefault).
  const int device = in.values[0].GetTensorMemoryInfo().GetDeviceId();
  ThrowIf(cuda::CudaErrorText(op_.name, "selecting the device", cudaSetDevice(device)), ORT_FAIL);
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
  bool capturing = false;
  ThrowIf(IsCapturing(op_.name, stream, &capturing), ORT_FAIL);

  std::lock_guard<std::mutex> lock(mutex_);
  StreamState& state = StateFor(stream, device);
  const Reports::Reader read = [this](const Bindings& e, const void* report) { return ReadReport(e, report); };
  // An earlier run's data error fails this run, before anything is enqueued. Not while capturing:
  // querying an event is not among the calls a capture allows for sure (cudaStreamCaptureModeGlobal,
  // ORT's, forbids the "potentially unsafe" ones), and a failed call would invalidate the capture;
  // the reports wait for the next uncaptured run.
  if (!capturing) {
    const std::string error = state.reports.Collect(read);
    if (!error.empty()) {
      ThrowIf(error + " (in an earlier run of this node: the CUDA kernels report data errors at the node's next "
                      "run; the session config entry bucketrt.cuda_sync_checks=1 reports them in the same run)");
    }
  }
  ThrowIf(EnsureWorkspace(state, workspace_bytes, capturing), ORT_FAIL);
  ThrowIf(cuda::Launch(op_, attrs_, env, inputs, outputs, state.workspace, state.workspace_bytes, stream), ORT_FAIL);
  ThrowIf(cuda::CudaErrorText(op_.name, "recording the workspace's use", RecordEvent(state.last_use, stream, capturing)),
          ORT_FAIL);

  // The data report, unless capturing: a replayed graph never runs this code, so nothing would read
  // a captured report (the kernels stay in bounds on any data either way).
  const size_t report_bytes = cuda::ReportBytes(op_, attrs_, env);
  if (report_bytes == 0 || capturing) return;
  Reports::Slot* slot = nullptr;
  ThrowIf(state.reports.Take(report_bytes, read, &slot));
  ThrowIf(cuda::EnqueueReport(op_, attrs_, env, inputs, state.workspace, slot->host, stream), ORT_FAIL);
  ThrowIf(cuda::CudaErrorText(op_.name, "recording the data check", cudaEventRecord(slot->landed, stream)), ORT_FAIL);
  state.reports.Submit(*slot, env);
  if (sync_checks_) ThrowIf(state.reports.Wait(*slot, read));  // opt-in: this run's data error fails this run
}

}  // namespace bucketrt::ort
