// SignHash on the GPU: a plain launcher (device pointers, the shape, a stream). Semantics:
// src/bucketrt/ops/reference.py `sign_hash`; the checks are the CPU kernel's (cpu::PlanSignHash),
// which every caller runs first and whose plan (P, D / L) the launcher takes.
//
//  * hadamard: one warp hashes one row (D >= 32: lane l holds elements e * 32 + l, e < D / 32) or
//    32 / D rows (D < 32: D lanes per row). Butterflies on pairs (i, i + h), h = 1, 2, 4, ... in
//    the reference's order: h < 32 across lanes (shuffles), h >= 32 within a lane. Each element
//    sees exactly the reference's float operations (x * d, a + b, a - b, rounded to nearest, never
//    fused), so the codes equal the reference's bit for bit. Sign bits are gathered with warp
//    ballots; code j takes bits [j * L, j * L + L) of the part's transform. Elements live in
//    registers up to D = 1024, beyond that in the workspace (SignHashWorkspaceBytes).
//  * gaussian: a block computes 16 rows x (a tile of whole hashes) of x . projection[g], the sum
//    over d in order with separate multiply and add (the CPU kernel's arithmetic: identical
//    codes), then packs the bits of each hash with shared-memory atomics.
// float16 inputs are widened exactly and hashed in float32. Masked rows get code 0.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/sign_hash.h"
#include "cuda/common.h"

namespace bucketrt::cuda {

// Workspace bytes the launch needs (0 except for hadamard with D > 1024).
size_t SignHashWorkspaceBytes(const cpu::SignHashShape& shape);

// Enqueues SignHash on `stream`. `shape` must have passed cpu::PlanSignHash, whose `plan` gives the
// hadamard parts. `vector` and `projection` are T (`type`) tensors; all tensors dense row-major on
// the device. Returns the launch error, if any (cudaSuccess otherwise).
cudaError_t SignHash(const cpu::SignHashShape& shape, const cpu::SignHashPlan& plan, FloatType type,
                     const int32_t* mask, const void* vector, const void* projection, int32_t* hash,
                     void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace bucketrt::cuda
