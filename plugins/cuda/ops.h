// The CUDA ops as every caller drives them: the ONNX Runtime CUDA EP glue (ort/cuda_kernels.cc),
// the C-ABI harness (cuda/harness.cc) and the TensorRT plugins (trt_plugins/). After the shared spec checks
// (ResolveAttributes, BindInputs in bucketrt/validate.h), a call is
//
//   CheckAttributes (once per node) -> Plan (shapes only: op checks, workspace bytes)
//     -> Launch (enqueue on the caller's stream)
//     -> EnqueueReport (enqueue copies of what the data checks need into host memory; never waits)
//     -> ReportError (host only, once the report has landed: errors only the data shows, e.g.
//        LSHCumulation's out-of-range codes)
//
// The data checks are split so that no caller has to wait for the device on every call: the ORT
// CUDA EP reads a run's report at the node's next run (ort/cuda_kernels.cc), the harness and an
// opt-in session wait at once (CheckData), the TensorRT plugins skip it (enqueue must not wait).
//
// with every error worded as the CPU kernels word it. Tensors are device pointers in spec order;
// the caller allocates the outputs (dims from the spec under `env`) and the workspace.
#pragma once

#include <cstddef>
#include <string>

#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

// Whether this build has a CUDA kernel for `op`.
bool HasKernel(const spec::OpSpec& op);

// Op-specific attribute checks beyond the spec's ("" or the error).
std::string CheckAttributes(const spec::OpSpec& op, const Attributes& attrs);

// Op-specific shape checks and the workspace the launch needs ("" or the error). Needs a current
// CUDA device (some plans ask a library for its temporary storage), but touches no tensor.
std::string Plan(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, size_t* workspace_bytes);

// The most workspace Plan gives any binding whose every dim is at most `high`'s (and at least
// `low`'s, where given): what TensorRT allocates once for a whole optimisation profile. Plan at
// `high` for the ops whose workspace never shrinks when a dim grows, every op but LSHCumulation;
// "" or the error of planning `high` (a profile whose largest shapes cannot be planned has no
// bound).
std::string WorkspaceBound(const spec::OpSpec& op, const Attributes& attrs, const Bindings* low, const Bindings& high,
                           size_t* workspace_bytes);

// Enqueues the op on `stream` ("" or the error). `workspace` holds Plan's bytes.
std::string Launch(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, const void* const* inputs,
                   void* const* outputs, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Bytes of the op's data report for this binding; 0: the op has no data checks (or this shape
// reads no data they would check), and EnqueueReport / ReportError do nothing.
size_t ReportBytes(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env);

// After Launch on `stream` with the same inputs and workspace: enqueues on `stream` what the data
// checks need into `report`, ReportBytes of host memory the device can write (pinned, mapped:
// cudaHostAlloc; a kernel may write it). Never waits: the report has landed once `stream` has
// passed this point (an event recorded after it). "" or the launch error.
std::string EnqueueReport(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env,
                          const void* const* inputs, const void* workspace, void* report, cudaStream_t stream);

// Host only (no CUDA call), on a landed report: the error the inputs' data shows ("" if none), in
// the CPU kernel's words.
std::string ReportError(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, const void* report);

// EnqueueReport into pinned memory of its own, a wait for `stream`, ReportError: the synchronous
// check, for callers that want the error from the same call (the harness). Returns at once for an
// op without data checks.
std::string CheckData(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, const void* const* inputs,
                      const void* workspace, cudaStream_t stream);

}  // namespace bucketrt::cuda
