// TopKExpertsInt8 on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `topk_experts_int8` (catalogue.py's text): TopKExperts' routing with ExpertFFNInt8's layers.
//
// TopKExperts' passes (cpu/top_k_experts.h), with ExpertFFNInt8's int8 machinery
// (cpu/expert_ffn_int8.h: the row quantizer and the int8 GEMM, each picked per instruction set):
// the tokens in blocks of a size set by the shape; per block
//   1. TopKExperts' stable counting sort of the live (token, pick) pairs by expert;
//   2. each sorted row's hidden row quantized (uint8 codes, scale, zero point);
//   3. tasks (one expert, at most 256 of its rows, one slice of F, cut as TopKExperts cuts them):
//      the int8 GEMM of the slice's gate rows and up rows, dequantized, their biases, the gating
//      (ExpertFFN's activation code and the clamps), into a [rows, F] buffer;
//   4. each row of that buffer quantized;
//   5. tasks (one expert, rows, one slice of D): the int8 GEMM, dequantized, the bias, into y;
//   6. TopKExperts' sum over each token's picks, in order.
// Every sum is an exact int32 sum and every other step one float32 operation per element on
// values that do not depend on the split: the blocks, tasks and workers change no bit.
#pragma once

#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"
#include "cpu/expert_ffn_int8.h"
#include "cpu/top_k_experts.h"

namespace bucketrt::cpu {

// The dims are TopKExperts' (T, K, D, F, G, E), its errors naming TopKExpertsInt8.
using TopKExpertsInt8Shape = TopKExpertsShape;

TopKExpertsInt8Shape TopKExpertsInt8ShapeOf(const Attributes& attrs, const Bindings& env);

// TopKExperts' G against F and the gating, and D and F within the exact-int32 bound (catalogue.py
// MAX_INT8_SUM_LENGTH): "" or the error, in the reference's words.
std::string CheckTopKExpertsInt8Shape(const TopKExpertsInt8Shape& shape, const TopKExpertsConfig& config);

struct TopKExpertsInt8Plan {
  int64_t block_tokens = 0;  // tokens per block (the shape's, not the CPUs')
  int64_t ff_slice = 0;      // the widest slice of F a first-projection task takes
  int64_t dim_slice = 0;     // of D, a second-projection task
  int64_t workers = 1;       // scratch slots (who pulls the tasks; no effect on the result)
  size_t block_bytes = 0;    // one block's rows: codes, scales, activations, outputs
  size_t worker_bytes = 0;   // per slot: a task's int32 sums, its weights' row sums, its up half
  size_t scratch_bytes() const { return 64 + block_bytes + static_cast<size_t>(workers) * worker_bytes; }
};

// max_workers: the scratch slots the caller can offer (ORT's pool). "" or the error (sizes that
// overflow int64).
std::string PlanTopKExpertsInt8(const TopKExpertsInt8Shape& shape, int64_t max_workers, TopKExpertsInt8Plan* plan);

// hidden [T, D], expert_weight [T, K], out [T, D], the scales and biases float32; gate_up [E, G, D]
// and down [E, D, F] int8. expert_index must have passed CheckTopKExpertsIndex. scratch:
// plan.scratch_bytes() bytes, aligned or not.
void TopKExpertsInt8(const TopKExpertsInt8Shape& shape, const TopKExpertsInt8Plan& plan,
                     const TopKExpertsConfig& config, const float* hidden, const int32_t* expert_index,
                     const float* expert_weight, const int8_t* gate_up, const float* gate_up_scale,
                     const float* gate_up_bias, const int8_t* down, const float* down_scale, const float* down_bias,
                     float* out, void* scratch, ParallelFor parallel_for);

}  // namespace bucketrt::cpu
