// MaskedAttention on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `masked_attention` (a decoder's attention: grouped key/value heads, a key mask, sink logits).
//
// Two phases, each through the parallel-for:
//  1. survey: per (b, s), the first and last key the query attends and whether it attends every key
//     between them (a causal, padded or sliding-window mask does);
//  2. attend: per (b, key/value head, block of queries), the keys from the block's first attended key
//     to its last (its span: half of a causal prefill's keys on average, none beyond it is read),
//     whether the span's values are all finite, and per query head of the group one tile
//     (masked_attention_tile.cc): the logits in one product, each row's softmax over its own keys, the
//     weighted values in a second product.
// The block's logits stay in the worker's scratch, sized to stay in cache.
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

struct MaskedAttentionShape {
  int64_t batch = 0, heads = 0, kv_heads = 0, queries = 0, keys = 0, dim = 0, value_dim = 0;
  float scale = 1.0f;
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
MaskedAttentionShape MaskedAttentionShapeOf(const Attributes& attrs, const Bindings& env);

// H a multiple of N, in the reference's words; "" when valid.
std::string CheckMaskedAttentionShape(const MaskedAttentionShape& shape);

// One tile: `rows` queries of one head (q, row stride dim) against the `width` keys of their block's
// span (k [width, dim], v [width, value_dim]). Row r attends keys [lo[r], hi[r]) of the span (none
// when hi <= lo), every one of them when dense[r], else those where mask[r * mask_stride + c] != 0.
// Writes out[r * ldo + j] for j < value_dim; values_finite false: the span's values hold an Inf or a
// NaN, and keys of weight 0 are skipped one by one instead of multiplied. scores: rows * width floats.
#define BUCKETRT_ATTENTION_TILE_ARGS                                                                          \
  const float *q, int64_t rows, int64_t dim, const float *k, int64_t width, const float *v, int64_t value_dim, \
      float scale, float sink, const int32_t *lo, const int32_t *hi, const uint8_t *dense, const int32_t *mask, \
      int64_t mask_stride, bool values_finite, float *out, int64_t ldo, float *scores
using AttentionTileFn = void (*)(BUCKETRT_ATTENTION_TILE_ARGS);
void AttentionTileGeneric(BUCKETRT_ATTENTION_TILE_ARGS);
void AttentionTileAvx2(BUCKETRT_ATTENTION_TILE_ARGS);
void AttentionTileAvx512(BUCKETRT_ATTENTION_TILE_ARGS);

struct MaskedAttentionPlan {
  int64_t block = 1;   // queries per task
  int64_t blocks = 0;  // per (b, n): ceil(S / block)
  int64_t num_workers = 1;
  AttentionTileFn tile = nullptr;
  size_t worker_floats = 0;  // per worker: one tile's logits (block * T)
  // Before the workers': per (b, s) first and last attended key (int32 each, counted as floats) and
  // the dense flag (a byte).
  size_t shared_floats = 0;
  size_t scratch_floats() const { return shared_floats + static_cast<size_t>(num_workers) * worker_floats; }
};

// The block size and scratch for `max_workers` workers, after CheckMaskedAttentionShape.
std::string PlanMaskedAttention(const MaskedAttentionShape& shape, int64_t max_workers, MaskedAttentionPlan* plan);

// All tensors dense row-major float32 (float16 is widened by the caller); `scratch` holds
// plan.scratch_floats() floats.
void MaskedAttention(const MaskedAttentionShape& shape, const MaskedAttentionPlan& plan, const float* query,
                     const float* key, const float* value, const int32_t* mask, const float* sinks, float* out,
                     float* scratch, const ParallelFor& parallel);

}  // namespace bucketrt::cpu
