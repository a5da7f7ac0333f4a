// The CUDA ops as every caller drives them: the ONNX Runtime CUDA EP glue (ort/cuda_kernels.cc),
// the C-ABI harness (cuda/harness.cc) and the TensorRT plugins (trt_plugins/). After the shared spec checks
// (ResolveAttributes, BindInputs in bucketrt/validate.h), a call is
//
//   CheckAttributes (once per node) -> Plan (shapes only: op checks, workspace bytes)
//     -> Launch (enqueue on the caller's stream) -> CheckData (optional: synchronises, reports
//        errors only the data shows, e.g. LSHCumulation's out-of-range codes)
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

// After Launch on `stream` with the same workspace: errors the inputs' data shows ("" if none).
// Synchronises `stream` when the op has such checks; returns at once otherwise.
std::string CheckData(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, const void* const* inputs,
                      const void* workspace, cudaStream_t stream);

}  // namespace bucketrt::cuda
