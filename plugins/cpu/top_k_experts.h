// TopKExperts on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `topk_experts` (catalogue.py's text).
//
// Work is proportional to the tokens' picks (T x K), never to T x E. The tokens are taken in
// blocks (of a size set by the shape alone, bounding the scratch); per block:
//   1. a stable counting sort of the block's live (token, pick) pairs by expert (expert E: no
//      expert, left out), each expert's rows in (token, pick) order, and each token's hidden row
//      gathered into that order;
//   2. tasks (one expert, a block of at most 256 of its rows, one slice of F: about 128 columns
//      for a block of fewer than kPanelFromRows rows, as in decoding, where the dot products stream
//      the weights and the workers share them; 512 for more): the first projection's gate and up
//      rows of the slice through the SIMD tiles (cpu/expert_ffn_tile.cc, one copy per instruction
//      set: with AVX-512 dot products for a few rows and the panel GEMM for more, Eigen's GEMM
//      otherwise), their biases, the gating and ExpertFFN's activation code, into a [rows, F] buffer;
//   3. tasks (one expert, rows, one slice of D): the second projection and its bias, into each
//      pair's row y (the gathered rows' buffer, reused);
//   4. per token, out = sum over its live picks j = 0, 1, ... in order of weight * y_j (from 0).
// Every element is one dot product over the whole of D (or F), and the blocks, tiles and slices
// follow the shapes and the expert indices only: the result does not depend on the thread count
// or the CPUs, which only decide how many workers pull the tasks. float16 weights and biases are
// widened per task into the worker's scratch (only what the task reads).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/parallel.h"
#include "cpu/expert_ffn.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

// The gatings and their names are catalogue.py's EXPERT_GATINGS, through the generated header;
// the kernels switch over every one (-Werror=switch).
using Gating = spec::Gating;

struct TopKExpertsShape {
  int64_t tokens = 0;       // T
  int64_t picks = 0;        // K
  int64_t dim = 0;          // D
  int64_t ff = 0;           // F
  int64_t width = 0;        // G: 2F for the glu gatings, F for none
  int64_t num_experts = 0;  // E
  // The op the errors name: TopKExpertsInt8 shares these checks and its routing.
  const char* op = spec::kTopKExperts.name;
};

// The shape of one call: the spec's bindings (after BindInputs) and resolved attributes.
TopKExpertsShape TopKExpertsShapeOf(const Attributes& attrs, const Bindings& env);

// The resolved attributes as the kernels take them.
struct TopKExpertsConfig {
  Activation act = Activation::kSilu;
  Gating gating = Gating::kGlu;
  float limit = 0.0f;
};

// The op's checks beyond the spec's, in reference.check_topk_experts_attributes' words: the limit
// against the gating (at kernel creation: attributes alone), fills *config; "" or the error.
std::string CheckTopKExpertsAttributes(const Attributes& attrs, TopKExpertsConfig* config,
                                       const char* op = spec::kTopKExperts.name);
// G against F and the gating (at run time: the dims): "" or the error.
std::string CheckTopKExpertsShape(const TopKExpertsShape& shape, const TopKExpertsConfig& config);

// expert_index [T, K] within [0, E] (E: no expert): "" or the error naming the first value outside
// it (row-major order) and its position, in the reference's words.
std::string CheckTopKExpertsIndex(const TopKExpertsShape& shape, const int32_t* expert_index);
// That error for the value `index` at flat position `flat` of [T, K] (the CUDA kernel's data report
// gives the first such pair).
std::string TopKExpertsIndexError(const TopKExpertsShape& shape, int64_t flat, int64_t index);

struct TopKExpertsPlan {
  int64_t block_tokens = 0;  // tokens per block (the shape's, not the CPUs')
  int64_t ff_slice = 0;      // the most columns of F a first-projection task takes
  int64_t dim_slice = 0;     // the most columns of D a second-projection task takes
  int64_t workers = 1;       // scratch slots (who pulls the tasks; no effect on the result)
  bool half_weights = false;
  size_t worker_floats = 0;  // per slot: the panel GEMM's scratch, then the rest
  size_t panel_floats = 0;   // the panel GEMM's, at the slot's start
  int64_t dim = 0, ff = 0, picks = 0;
  // Per block: the gathered rows / outputs y [block_tokens * K, D] and the activations [.., F];
  // then the worker slots.
  size_t block_floats() const { return static_cast<size_t>(block_tokens * picks * (dim + ff)); }
  size_t scratch_floats() const { return block_floats() + worker_floats * static_cast<size_t>(workers); }
};

// max_workers: the scratch slots the caller can offer (ORT's pool); half_weights: gate_up, down
// and their biases are float16 (IEEE binary16 bits), widened per task. "" or the error (sizes that
// overflow int64).
std::string PlanTopKExperts(const TopKExpertsShape& shape, int64_t max_workers, bool half_weights,
                            TopKExpertsPlan* plan);

// hidden [T, D], expert_weight [T, K] and out [T, D] are float32 (the caller widens and narrows
// float16 ones); gate_up [E, G, D], gate_up_bias [E, G], down [E, D, F], down_bias [E, D] are
// float32 or, with plan.half_weights, float16 bits. expert_index must have passed
// CheckTopKExpertsIndex. scratch: plan.scratch_floats() floats.
void TopKExperts(const TopKExpertsShape& shape, const TopKExpertsPlan& plan, const TopKExpertsConfig& config,
                 const float* hidden, const int32_t* expert_index, const float* expert_weight, const void* gate_up,
                 const void* gate_up_bias, const void* down, const void* down_bias, float* out, float* scratch,
                 ParallelFor parallel_for);

// ---- the routing, shared with TopKExpertsInt8 (cpu/top_k_experts_int8.cc) -----------------------
// Rows of one expert per task, at most: the tile's GEMM gains little beyond, and its scratch stays
// in L2.
constexpr int64_t kExpertRowBlock = 256;

// One block of tokens' live (token, pick) pairs sorted by expert (step 1): where each expert's rows
// are in the sorted order (the experts that have rows, ascending, each one's first row and count),
// which sorted row each pair went to and which token each sorted row is. Kept per run, reset per
// block for the experts listed only, so that a block costs in proportion to its picks, never to E.
struct ExpertGroups {
  std::vector<int64_t> count, first;  // [E]: zero for an expert without rows in the block
  std::vector<int64_t> experts;       // the experts with rows, ascending
  std::vector<int64_t> position;      // (token of the block, pick) -> sorted row, or -1 for no expert
  std::vector<int64_t> token;         // sorted row -> token (of the whole input)
  int64_t live = 0;                   // sorted rows
  void Reset(int64_t num_experts, int64_t block_pairs);
};
// The stable counting sort of `tokens` tokens' picks (index: their [tokens, K] expert indices,
// checked; the first is token first_token) by expert, E (no expert) left out.
void GroupPicksByExpert(const int32_t* index, int64_t first_token, int64_t tokens, int64_t picks,
                        int64_t num_experts, ExpertGroups* groups);
// One task of a projection: one expert, `rows` of its sorted rows from `start`, columns
// [col0, col0 + cols) of the output.
struct ExpertTask {
  int64_t expert;
  int64_t start;
  int64_t rows;
  int64_t col0;
  int64_t cols;
};
// Every task of one projection with `columns` outputs (the rows and slices set by the groups and
// the shape alone, never by the workers), largest first.
void MakeExpertTasks(const ExpertGroups& groups, int64_t columns, std::vector<ExpertTask>* tasks);
// The widest slice MakeExpertTasks cuts from `columns` (what a worker's scratch must hold).
int64_t WidestExpertSlice(int64_t columns);
// Step 4: out[t] = sum over the block's token t's live picks j in order of weight[t, j] * y[row],
// from 0; y [live, dim] in sorted order, weight [tokens, K] and out [tokens, dim] the block's.
void CombinePicks(const ExpertGroups& groups, const float* weight, const float* y, float* out, int64_t tokens,
                  int64_t picks, int64_t dim, int64_t workers, ParallelFor parallel_for);

// ---- the tiles, one definition per instruction set (cpu/expert_ffn_tile.cc) ---------------------
// First projection of `rows` gathered rows x [rows, dim] on one slice of `width` columns of F:
// a[r, c] = gating(x[r] . w_gate[c] + b_gate[c], x[r] . w_up[c] + b_up[c]) for c < width, into a
// (row stride lda); w_gate / w_up are [width, dim] (row stride dim), w_up and b_up unused for
// gating none. scratch: rows * width floats.
#define BUCKETRT_TOPK_FIRST_ARGS                                                                              \
  const float *x, int64_t rows, int64_t dim, const float *w_gate, const float *b_gate, const float *w_up,    \
      const float *b_up, int64_t width, Activation act, Gating gating, float limit, float *a, int64_t lda, \
      float *scratch, float *panel
// Second projection: y[r, c] = a[r] . w[c] + b[c] for c < width, a [rows, ff] (row stride lda),
// w [width, ff] (row stride ff), y row stride ldy. Both: panel, PanelScratchFloats(width) floats.
#define BUCKETRT_TOPK_SECOND_ARGS                                                                               \
  const float *a, int64_t rows, int64_t ff, int64_t lda, const float *w, const float *b, int64_t width, float *y, \
      int64_t ldy, float *panel
// The AVX-512 tiles' panel GEMM (expert_ffn_tile.cc) from this many rows of one task (fewer: one
// dot product per row and weight row, which streams the weights at memory speed), its depth chunk,
// and its scratch for a task of at most kExpertRowBlock rows and `columns` outputs: the product
// transposed (a gate and an up projection: two), then one depth chunk of the rows, packed.
constexpr int64_t kPanelFromRows = 8;
constexpr int64_t kPanelDepth = 512;
constexpr int64_t PanelScratchFloats(int64_t columns) { return (2 * columns + kPanelDepth) * kExpertRowBlock; }
using TopKFirstFn = void (*)(BUCKETRT_TOPK_FIRST_ARGS);
using TopKSecondFn = void (*)(BUCKETRT_TOPK_SECOND_ARGS);
void TopKFirstGeneric(BUCKETRT_TOPK_FIRST_ARGS);
void TopKFirstAvx2(BUCKETRT_TOPK_FIRST_ARGS);
void TopKFirstAvx512(BUCKETRT_TOPK_FIRST_ARGS);
void TopKSecondGeneric(BUCKETRT_TOPK_SECOND_ARGS);
void TopKSecondAvx2(BUCKETRT_TOPK_SECOND_ARGS);
void TopKSecondAvx512(BUCKETRT_TOPK_SECOND_ARGS);
// The widest pair within BUCKETRT_SIMD's cap, by ExpertFFN's tile's rule (the same instruction
// sets: BucketrtCpuVariants' expert_ffn_tile names it).
struct TopKTiles {
  TopKFirstFn first;
  TopKSecondFn second;
};
TopKTiles PickTopKTiles();

// float16 bits -> float32, exactly (F16C where the CPU has it).
void WidenHalfBits(const uint16_t* src, float* dst, int64_t count);

}  // namespace bucketrt::cpu
