// ExpertFFN on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py `expert_ffn`.
//
// Work is proportional to the tokens listed: the listed tokens are cut into tiles (one expert,
// at most `tile_rows` consecutive entries of `order`, one of `chunks` slices of d_ff); a tile
// gathers its tokens' rows and runs the expert's two GEMMs on its slice through Eigen
// (cpu/expert_ffn_tile.cc, compiled once per instruction set), writing a partial sum per slice.
// A second pass adds the slices, scales by the gate and writes each listed token's row; tokens
// not listed are zeroed. Slicing d_ff gives the workers equal work when experts are few or
// uneven, and splits a decoding step's single-token GEMVs, without packing any weight twice.
// Workers (one scratch slot each) pull tiles, largest first, from a shared counter.
#pragma once

#include <cstdint>
#include <string>

#include "bucketrt/op_specs.h"
#include "bucketrt/parallel.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

// The activation functions and their names are catalogue.py's EXPERT_ACTIVATIONS, through the generated
// header; the kernels (expert_ffn_tile.cc, cuda/expert_ffn.cu) switch over every function, and
// -Werror=switch there makes a function added to the spec without a kernel a compile error.
using Activation = spec::Activation;

// "" and the function of a name the spec lists (spec::kActivationNames); an error otherwise, naming
// the op (ExpertFFN where none is given).
std::string ParseActivation(const std::string& name, Activation* out);
std::string ParseActivation(const char* op, const std::string& name, Activation* out);

struct ExpertFfnShape {
  int64_t tokens = 0;  // B*S
  int64_t dim = 0;     // D
  int64_t ff = 0;      // F
  int64_t num_experts = 0;
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
ExpertFfnShape ExpertFfnShapeOf(const Attributes& attrs, const Bindings& env);

struct ExpertFfnPlan {
  int64_t tile_rows = 0;
  int64_t chunks = 1;  // slices of d_ff
  int64_t workers = 0;
  int64_t tiles = 0;
  int64_t listed = 0;
  size_t scratch_floats_per_worker = 0;
  // Worker slots, then one [listed, D] partial sum per slice.
  size_t partial_floats() const { return static_cast<size_t>(chunks * listed * dim); }
  size_t scratch_floats() const { return scratch_floats_per_worker * static_cast<size_t>(workers) + partial_floats(); }
  int64_t dim = 0;
};

// Checks counts (>= 0, summing to at most B*S) and order (the listed entries in [0, B*S), no token
// twice); returns "" or a message naming the op and the input. Fills *listed.
std::string CheckExpertDispatch(const char* op, const int32_t* order, const int32_t* counts, int64_t tokens,
                                int64_t num_experts, int64_t* listed);

ExpertFfnPlan PlanExpertFfn(const ExpertFfnShape& shape, const int32_t* counts, int64_t max_workers);

void ExpertFfn(const ExpertFfnShape& shape, const ExpertFfnPlan& plan, Activation act, const float* hidden,
               const int32_t* order, const int32_t* counts, const float* gate, const float* wi, const float* wo,
               float* out, float* scratch, ParallelFor parallel_for);

// One tile: partial[r] = act(hidden[tokens[r]] wi[f0:f1]^T) wo[:, f0:f1]^T for r < rows (one
// expert's weights). scratch holds rows*(dim + f1 - f0) floats. One definition per instruction
// set (expert_ffn_tile.cc).
#define BUCKETRT_EXPERT_TILE_ARGS                                                                            \
  const float *hidden, int64_t dim, int64_t ff, const float *wi, const float *wo, const int32_t *tokens,  \
      int64_t rows, int64_t f0, int64_t f1, Activation act, float *partial, float *scratch
using ExpertTileFn = void (*)(BUCKETRT_EXPERT_TILE_ARGS);
void ExpertTileGeneric(BUCKETRT_EXPERT_TILE_ARGS);
void ExpertTileAvx2(BUCKETRT_EXPERT_TILE_ARGS);
void ExpertTileAvx512(BUCKETRT_EXPERT_TILE_ARGS);
// The widest tile the CPU runs within BUCKETRT_SIMD's cap (picked once), and its name.
ExpertTileFn PickExpertTile(const char** name = nullptr);

}  // namespace bucketrt::cpu
