// Top1Dispatch on the GPU: a plain launcher (device pointers, the shape, a caller-provided
// workspace, a stream). Semantics: src/bucketrt/ops/reference.py `top1_dispatch`; the outputs are
// the CPU kernel's (cpu/top1_dispatch.cc), integers and copied probabilities, so they are equal.
//
// Four kernels, no floating-point arithmetic and no atomics:
//  1. one thread per token: expert0 = the first maximum of its probabilities (the first NaN if any,
//     as torch.argmax), gate = that probability (copied, T as is);
//  2. one thread per (sequence b, expert e) walks the sequence in order: priority = the running
//     count of e's tokens, expert = e while it is within capacity, else -1; kept[b, e] = the tokens
//     it kept, min(count, capacity);
//  3. one block: counts[e] = sum_b kept[b, e], then an exclusive scan over e and b gives each
//     (b, e) its first slot in `order`, base[b, e] = sum_{e' < e} counts[e'] + sum_{b' < b} kept[b', e],
//     and the number of kept tokens;
//  4. one thread per token: a kept token b * S + s of expert e and priority p goes to slot
//     base[b, e] + p - 1 (the p - 1 earlier tokens of e in its sequence are all kept); slots from the
//     number of kept tokens on get -1. The kept slots are a permutation, so no two threads write one.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/top1_dispatch.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

// Workspace bytes the launch needs (int32 per token and two per (sequence, expert)), from the shape.
size_t Top1DispatchWorkspaceBytes(const cpu::Top1DispatchShape& shape);

// Enqueues Top1Dispatch on `stream`. `shape` must have passed cpu::CheckTop1DispatchTokens. `probs`
// and `gate` are T (`type`) tensors; all tensors dense row-major on the device. Returns the first
// launch error, if any.
cudaError_t Top1Dispatch(const cpu::Top1DispatchShape& shape, FloatType type, const void* probs, int32_t* expert,
                         void* gate, int32_t* priority, int32_t* counts, int32_t* order, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream);

}  // namespace bucketrt::cuda
