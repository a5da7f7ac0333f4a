// ExpertFFN on the GPU: a plain launcher (device pointers, the shape, a caller-provided workspace,
// a stream). Semantics: src/bucketrt/ops/reference.py `expert_ffn`:
//
//   out[t] = gate[t] * (act(hidden[t] · wi[e]^T) · wo[e]^T) for the tokens t that `order` lists
//   for expert e (counts[e] of them, experts in order), 0 for every other token.
//
// `counts` and `order` stay on the device (the host never reads them: no synchronisation). A
// one-block kernel turns counts into each expert's rows of `order` (prefix sums, clamped to
// [0, B*S]) and row tiles of 64; then two grouped GEMMs whose blocks find their (expert, row
// tile) by binary search over the tiles' prefix sums (grid sized for the worst case,
// ceil(B*S / 64) + E row tiles; blocks past the work exit), so the cost follows the tokens listed:
//   1. h[i] = act(hidden[order[i]] · wi[e]^T) for the listed rows i, into a [B*S, F] float32
//      workspace (rows in listed order);
//   2. out[order[i]] = gate[order[i]] * (h[i] · wo[e]^T), over an output zeroed first.
// Tiles of 64 x 64 outputs, 16 of the inner dim at a time through shared memory, 4 x 4 outputs per
// thread, float32 fused multiply-adds (no TF32, no tensor cores): float16 inputs are widened
// exactly, `out` rounded once. The activation is one of cpu::Activation, its formula the
// reference's, in float32. No floating-point atomics: bitwise reproducible run to run.
//
// Bad dispatch data (negative counts, counts summing past B*S, ids outside [0, B*S)) never makes
// an access out of bounds: counts are clamped as above, a row whose id is out of range reads zeros
// and writes nothing. ExpertFfnReportError reports them afterwards in the CPU kernel's words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/expert_ffn.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

// Workspace bytes the launch needs (shape only): the schedule (3 * E + 1 int64) and the
// [B*S, F] float32 intermediate.
size_t ExpertFfnWorkspaceBytes(const cpu::ExpertFfnShape& shape);

// Enqueues ExpertFFN on `stream`. hidden [B*S, D], gate [B*S], wi [E, F, D], wo [E, D, F] and
// out [B*S, D] are T (`type`) tensors; order [B*S] and counts [E] int32; all dense row-major on the
// device. Returns the first launch error, if any.
cudaError_t ExpertFfn(const cpu::ExpertFfnShape& shape, cpu::Activation act, FloatType type, const void* hidden,
                      const int32_t* order, const int32_t* counts, const void* gate, const void* wi, const void* wo,
                      void* out, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// The dispatch check's report (cuda/ops.h: Report): counts (E int32) then order (B*S int32), which
// cpu::CheckExpertDispatch reads on the host (a duplicate id needs the whole list).
inline size_t ExpertFfnReportBytes(const cpu::ExpertFfnShape& shape) {
  return static_cast<size_t>(shape.num_experts + shape.tokens) * sizeof(int32_t);
}

// Enqueues the copies of counts and order into `report` (pinned host memory). Never waits.
cudaError_t EnqueueExpertFfnReport(const cpu::ExpertFfnShape& shape, const int32_t* order, const int32_t* counts,
                                   void* report, cudaStream_t stream);

// Host only, once the report has landed: "" or the error cpu::CheckExpertDispatch finds.
std::string ExpertFfnReportError(const cpu::ExpertFfnShape& shape, const void* report);

}  // namespace bucketrt::cuda
