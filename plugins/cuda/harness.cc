// A C ABI over the CUDA op table, for tests and benchmarks driven from Python (ctypes + torch CUDA
// tensors): the spec checks and launchers the ORT CUDA EP glue runs, without ONNX Runtime.
//
//   BucketrtCudaPlan: checks a call, returns its workspace bytes and its outputs' dtypes and shapes;
//   BucketrtCudaRun:  checks it again and runs it on the caller's stream;
//   BucketrtCudaReportBytes / BucketrtCudaEnqueueReport / BucketrtCudaReportError: the data checks
//     without a wait (cuda/ops.h: ReportBytes, EnqueueReport, ReportError), as the ORT CUDA EP
//     drives them; ReportBytes and ReportError are host only (no device needed).
//
// A call is described by the op's name, per input its dtype name ("int32", "float32", "float16",
// or anything else, which the checks reject), rank and dims (all inputs' dims concatenated), and
// the attributes given, as "name=i:8;name=s:hadamard;name=f:8.0" (i: int, s: string, f: float).
// Both return "" on success, else the error (the CPU kernels' words); the text stays valid until
// the calling thread's next call.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/ops.h"

#define BUCKETRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace bucketrt::cuda {
namespace {

struct Call {
  const spec::OpSpec* op = nullptr;
  Attributes attrs;
  Bindings env;
  std::vector<TensorDesc> inputs;
};

const char* Result(std::string text) {
  thread_local std::string storage;
  storage = std::move(text);
  return storage.c_str();
}

std::string ParseAttributes(const spec::OpSpec& op, const char* text, std::vector<RawAttribute>* raw) {
  raw->assign(static_cast<size_t>(op.num_attributes), RawAttribute());
  std::vector<std::string> names;
  std::string all = text ? text : "";
  size_t start = 0;
  while (start < all.size()) {
    size_t end = all.find(';', start);
    if (end == std::string::npos) end = all.size();
    const std::string item = all.substr(start, end - start);
    start = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos || item.size() < eq + 3 || item[eq + 2] != ':') {
      return Format("%s: malformed attribute '%s' (expected name=i:VALUE, name=s:VALUE or name=f:VALUE)", op.name,
                    item.c_str());
    }
    const std::string name = item.substr(0, eq), value = item.substr(eq + 3);
    const char kind = item[eq + 1];
    int index = -1;
    for (int i = 0; i < op.num_attributes; ++i) {
      if (name == op.attributes[i].name) index = i;
    }
    names.push_back(name);
    if (index < 0) continue;  // CheckAttributeNames reports it, unless it is a routing attribute
    RawAttribute& r = (*raw)[static_cast<size_t>(index)];
    char* rest = nullptr;
    if (kind == 'i') {
      r.kind = RawAttribute::Kind::kInt;
      r.int_value = std::strtoll(value.c_str(), &rest, 10);
    } else if (kind == 'f') {
      r.kind = RawAttribute::Kind::kFloat;
      r.float_value = std::strtod(value.c_str(), &rest);
    } else if (kind == 's') {
      r.kind = RawAttribute::Kind::kString;
      r.string_value = value;
    } else if (kind == 'I' || kind == 'F') {  // lists, comma-separated: kept to be refused as the wrong type
      r.kind = kind == 'I' ? RawAttribute::Kind::kInts : RawAttribute::Kind::kFloats;
      size_t at = 0;
      while (at < value.size()) {
        size_t comma = value.find(',', at);
        if (comma == std::string::npos) comma = value.size();
        const std::string element = value.substr(at, comma - at);
        at = comma + 1;
        char* end = nullptr;
        if (kind == 'I') {
          r.int_values.push_back(std::strtoll(element.c_str(), &end, 10));
        } else {
          r.float_values.push_back(std::strtod(element.c_str(), &end));
        }
        if (element.empty() || *end != '\0') {
          return Format("%s: malformed attribute '%s' (not a list of numbers)", op.name, item.c_str());
        }
      }
    } else if (kind == 'o') {  // another kind (a tensor, a graph): refused as the wrong type
      r.kind = RawAttribute::Kind::kOther;
    } else {
      return Format("%s: malformed attribute '%s' (kind must be i, s, f, I, F or o)", op.name, item.c_str());
    }
    if (rest != nullptr && (*rest != '\0' || value.empty())) {
      return Format("%s: malformed attribute '%s' (not a number)", op.name, item.c_str());
    }
  }
  return CheckAttributeNames(op, names);
}

// The shared checks of Plan and Run: op lookup, attributes, input binding.
std::string Prepare(const char* op_name, int num_inputs, const char* const* dtypes, const int* ranks,
                    const int64_t* dims, const char* attributes, Call* call) {
  for (const spec::OpSpec* op : spec::kAllOps) {
    if (op_name && std::strcmp(op->name, op_name) == 0) call->op = op;
  }
  if (call->op == nullptr) return Format("bucketrt: no op named '%s'", op_name ? op_name : "");
  const spec::OpSpec& op = *call->op;
  if (!HasKernel(op)) return Format("%s: this build has no CUDA kernel for it", op.name);
  std::vector<RawAttribute> raw;
  std::string error = ParseAttributes(op, attributes, &raw);
  if (error.empty()) error = ResolveAttributes(op, raw, &call->attrs);
  if (error.empty()) error = CheckAttributes(op, call->attrs);
  if (!error.empty()) return error;
  if (num_inputs < 0) num_inputs = 0;
  call->inputs.resize(static_cast<size_t>(num_inputs));
  int64_t offset = 0;
  for (int i = 0; i < num_inputs; ++i) {
    TensorDesc& d = call->inputs[static_cast<size_t>(i)];
    d.dtype = dtypes[i];
    d.rank = ranks[i];
    d.dims = dims + offset;
    offset += ranks[i] > 0 ? ranks[i] : 0;
  }
  return BindInputs(op, call->attrs, call->inputs.data(), num_inputs, &call->env);
}

// Selects the device, then plans. Input errors the plan finds (shapes) come before a device
// error, so that a machine without a GPU still reports them; a plan that needs the device (the
// LSHCumulation sort) reports its own CUDA error there.
std::string PlanOnDevice(const Call& call, int device, size_t* workspace_bytes) {
  const std::string device_error = CudaErrorText(call.op->name, "selecting the device", cudaSetDevice(device));
  const std::string error = Plan(*call.op, call.attrs, call.env, workspace_bytes);
  return error.empty() ? device_error : error;
}

}  // namespace
}  // namespace bucketrt::cuda

BUCKETRT_EXPORT const char* BucketrtCudaPlan(const char* op, int num_inputs, const char* const* dtypes, const int* ranks,
                                             const int64_t* dims, const char* attributes, int device,
                                             size_t* workspace_bytes, int max_outputs, int* output_dtypes,
                                             int* output_ranks, int64_t* output_dims) {
  using namespace bucketrt;
  cuda::Call call;
  std::string error = cuda::Prepare(op, num_inputs, dtypes, ranks, dims, attributes, &call);
  if (error.empty()) error = cuda::PlanOnDevice(call, device, workspace_bytes);
  if (!error.empty()) return cuda::Result(error);
  if (max_outputs < call.op->num_outputs) {
    return cuda::Result(Format("%s: room for %d outputs, it has %d", call.op->name, max_outputs, call.op->num_outputs));
  }
  for (int i = 0; i < call.op->num_outputs; ++i) {
    const spec::TensorSpec& t = call.op->outputs[i];
    output_dtypes[i] = static_cast<int>(spec::Concrete(t.dtype, call.env.float_type()));
    output_ranks[i] = t.rank;
    for (int a = 0; a < 4; ++a) output_dims[i * 4 + a] = a < t.rank ? call.env[t.dims[a]] : 0;
  }
  return cuda::Result({});
}

BUCKETRT_EXPORT const char* BucketrtCudaRun(const char* op, int num_inputs, const char* const* dtypes, const int* ranks,
                                            const int64_t* dims, const void* const* inputs, int num_outputs,
                                            void* const* outputs, const char* attributes, int device, void* stream_ptr,
                                            void* workspace, size_t workspace_bytes, int synchronous) {
  using namespace bucketrt;
  cuda::Call call;
  std::string error = cuda::Prepare(op, num_inputs, dtypes, ranks, dims, attributes, &call);
  size_t needed = 0;
  if (error.empty()) error = cuda::PlanOnDevice(call, device, &needed);
  if (error.empty() && num_outputs != call.op->num_outputs) {
    error = Format("%s: expected %d outputs, got %d", call.op->name, call.op->num_outputs, num_outputs);
  }
  if (!error.empty()) return cuda::Result(error);
  const spec::OpSpec& spec_op = *call.op;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  bool owned = false;
  if (workspace == nullptr && needed > 0) {
    error = cuda::CudaErrorText(spec_op.name, "allocating the workspace", cudaMallocAsync(&workspace, needed, stream));
    if (!error.empty()) return cuda::Result(error);
    owned = true;
    workspace_bytes = needed;
  } else if (workspace_bytes < needed) {
    return cuda::Result(Format("%s: the workspace has %zu bytes, the call needs %zu", spec_op.name, workspace_bytes,
                               needed));
  }
  error = cuda::Launch(spec_op, call.attrs, call.env, inputs, outputs, workspace, workspace_bytes, stream);
  if (error.empty() && synchronous) {
    error = cuda::CheckData(spec_op, call.attrs, call.env, inputs, workspace, stream);
    if (error.empty()) {
      cudaError_t status = cudaStreamSynchronize(stream);
      if (status == cudaSuccess) status = cudaGetLastError();
      error = cuda::CudaErrorText(spec_op.name, "running the kernels", status);
    }
  }
  if (owned) {
    const std::string freed =
        cuda::CudaErrorText(spec_op.name, "freeing the workspace", cudaFreeAsync(workspace, stream));
    if (error.empty()) error = freed;
  }
  return cuda::Result(error);
}

BUCKETRT_EXPORT const char* BucketrtCudaReportBytes(const char* op, int num_inputs, const char* const* dtypes,
                                                    const int* ranks, const int64_t* dims, const char* attributes,
                                                    size_t* report_bytes) {
  using namespace bucketrt;
  cuda::Call call;
  *report_bytes = 0;
  std::string error = cuda::Prepare(op, num_inputs, dtypes, ranks, dims, attributes, &call);
  if (error.empty()) *report_bytes = cuda::ReportBytes(*call.op, call.attrs, call.env);
  return cuda::Result(error);
}

BUCKETRT_EXPORT const char* BucketrtCudaEnqueueReport(const char* op, int num_inputs, const char* const* dtypes,
                                                      const int* ranks, const int64_t* dims,
                                                      const void* const* inputs, const char* attributes, int device,
                                                      void* stream, const void* workspace, void* report) {
  using namespace bucketrt;
  cuda::Call call;
  std::string error = cuda::Prepare(op, num_inputs, dtypes, ranks, dims, attributes, &call);
  if (error.empty()) error = cuda::CudaErrorText(call.op->name, "selecting the device", cudaSetDevice(device));
  if (error.empty()) {
    error = cuda::EnqueueReport(*call.op, call.attrs, call.env, inputs, workspace, report,
                                static_cast<cudaStream_t>(stream));
  }
  return cuda::Result(error);
}

BUCKETRT_EXPORT const char* BucketrtCudaReportError(const char* op, int num_inputs, const char* const* dtypes,
                                                    const int* ranks, const int64_t* dims, const char* attributes,
                                                    const void* report) {
  using namespace bucketrt;
  cuda::Call call;
  std::string error = cuda::Prepare(op, num_inputs, dtypes, ranks, dims, attributes, &call);
  if (error.empty()) error = cuda::ReportError(*call.op, call.attrs, call.env, report);
  return cuda::Result(error);
}
