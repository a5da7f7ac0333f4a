// ExpertFFN on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py `expert_ffn`.
//
// Work is proportional to the tokens listed: the listed tokens are cut into tiles (one expert,
// at most `tile_rows` consecutive entries of `order`); a tile gathers its tokens' rows, runs the
// expert's two GEMMs through Eigen (cpu/expert_ffn_tile.cc, compiled once per instruction set),
// and writes gate-scaled rows back to those tokens. Tokens not listed are zeroed. Workers (one
// scratch slot each) pull tiles from a shared counter, so experts of uneven load balance out.
#pragma once

#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"

namespace bucketrt::cpu {

// Index into spec.EXPERT_ACTIVATIONS order is not relied on: names are mapped in expert_ffn.cc.
enum class Activation {
  kRelu, kGelu, kGelu10, kGeluTanh, kQuickGelu, kSilu, kRelu2, kRelu6, kLeakyRelu, kSigmoid, kTanh,
  kHardswish, kMish, kLaplace, kSqrtSoftplus, kLinear
};

// "" and the activation for a transformers ACT2FN name the spec allows; an error otherwise.
std::string ParseActivation(const std::string& name, Activation* out);

struct ExpertFfnShape {
  int64_t tokens = 0;  // B*S
  int64_t dim = 0;     // D
  int64_t ff = 0;      // F
  int64_t num_experts = 0;
};

struct ExpertFfnPlan {
  int64_t tile_rows = 0;
  int64_t workers = 0;
  int64_t tiles = 0;
  size_t scratch_floats_per_worker = 0;
  size_t scratch_floats() const { return scratch_floats_per_worker * static_cast<size_t>(workers); }
};

// Checks counts (>= 0, summing to at most B*S) and order (the listed entries in [0, B*S), no token
// twice); returns "" or a message naming the op and the input. Fills *listed.
std::string CheckExpertDispatch(const char* op, const int32_t* order, const int32_t* counts, int64_t tokens,
                                int64_t num_experts, int64_t* listed);

ExpertFfnPlan PlanExpertFfn(const ExpertFfnShape& shape, const int32_t* counts, int64_t max_workers);

void ExpertFfn(const ExpertFfnShape& shape, const ExpertFfnPlan& plan, Activation act, const float* hidden,
               const int32_t* order, const int32_t* counts, const float* gate, const float* wi, const float* wo,
               float* out, float* scratch, ParallelFor parallel_for);

// One tile: out[tokens[r]] = gate[tokens[r]] * act(hidden[tokens[r]] wi^T) wo^T for r < rows.
// scratch holds rows*(2*dim + ff) floats. One definition per instruction set (expert_ffn_tile.cc).
using ExpertTileFn = void (*)(const float* hidden, int64_t dim, int64_t ff, const float* wi, const float* wo,
                              const int32_t* tokens, int64_t rows, const float* gate, Activation act, float* out,
                              float* scratch);
void ExpertTileGeneric(const float*, int64_t, int64_t, const float*, const float*, const int32_t*, int64_t,
                       const float*, Activation, float*, float*);
void ExpertTileAvx2(const float*, int64_t, int64_t, const float*, const float*, const int32_t*, int64_t,
                    const float*, Activation, float*, float*);
void ExpertTileAvx512(const float*, int64_t, int64_t, const float*, const float*, const int32_t*, int64_t,
                      const float*, Activation, float*, float*);

}  // namespace bucketrt::cpu
