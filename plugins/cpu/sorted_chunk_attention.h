// SortedChunkAttention on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `sorted_chunk_attention` (Reformer's LSH attention; local attention with one round of constant
// buckets).
//
// Three phases, each through the parallel-for:
//  1. sort: per (b, h, round), a stable counting sort of the positions by bucket (buckets are small
//     integers; a comparison sort takes over when the largest bucket is far above N);
//  2. attend: per (b, h, chunk of the sorted order), the chunk's window of keys and values is
//     gathered once (keys transposed, so that the score loop runs along keys and vectorises
//     without reassociating sums), then every query takes a softmax over it;
//  3. combine: per (b, h, position), the rounds' outputs weighted by softmax of their log-sum-exps.
// Plain attention (N <= chunk_length) is the special case of one round, one chunk, no neighbours.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

inline constexpr float kMaskedScore = -1e9f;
// Softmax weights below the smallest normal float (2^-126) are 0, and a key or round of weight 0
// contributes nothing, whatever its value (reference.WEIGHT_FLOOR).
inline constexpr float kWeightFloor = 1.17549435e-38f;
inline constexpr float kSelfScore = -1e5f;

struct ChunkAttentionShape {
  int64_t batch = 0, heads = 0, length = 0, dim = 0, rounds = 0;
  int64_t chunk_length = 0, chunks_before = 0, chunks_after = 0;
  bool causal = false, mask_self = false;
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
ChunkAttentionShape ChunkAttentionShapeOf(const Attributes& attrs, const Bindings& env);

struct ChunkAttentionPlan {
  bool plain = false;        // N <= chunk_length
  int64_t rounds = 1;        // effective rounds (1 when plain)
  int64_t chunk = 0;         // slots per chunk (N when plain)
  int64_t window = 0;        // keys per query: chunk * (1 + before + after) (N when plain)
  int64_t chunks_per_head = 0;
  int64_t num_workers = 1;
  bool avx2 = false;         // run the AVX2 copy of the chunk kernel (UseAvx2() when planned)
  size_t worker_floats = 0;  // per worker: transposed keys, values, scores
  // Scratch beyond the workers': positions (int32, counted as floats), per-round outputs and
  // log-sum-exps (only when rounds > 1).
  size_t shared_floats = 0;
  size_t scratch_floats() const { return shared_floats + static_cast<size_t>(num_workers) * worker_floats; }
};

// The error for a negative bucket (outside plain attention), in the reference's words.
inline constexpr const char* kNegativeBucketsError = "SortedChunkAttention: input 'buckets' must be >= 0";

// Checks attributes and length rules beyond the spec, with the reference's wording; "" when valid.
std::string PlanChunkAttention(const ChunkAttentionShape& shape, int64_t max_length, int64_t max_workers,
                               ChunkAttentionPlan* plan);

// Returns "" or the reference's error for negative buckets. All tensors dense row-major;
// `scratch` holds plan.scratch_floats() floats.
std::string ChunkAttention(const ChunkAttentionShape& shape, const ChunkAttentionPlan& plan, const float* query,
                           const float* key, const float* value, const int32_t* mask, const int32_t* buckets,
                           float* out, float* scratch, const ParallelFor& parallel);

}  // namespace bucketrt::cpu
