// Top1Dispatch on the CPU, free of any runtime. Semantics: src/bucketrt/ops/reference.py
// `top1_dispatch` (Switch Transformer routing as transformers 5.x computes it).
#pragma once

#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

struct Top1DispatchShape {
  int64_t batch = 0;
  int64_t length = 0;
  int64_t num_experts = 0;
  int64_t capacity = 0;
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
Top1DispatchShape Top1DispatchShapeOf(const Attributes& attrs, const Bindings& env);

// Token indices are int32 (order holds flat indices b * S + s): "" when B * S fits, else the error.
std::string CheckTop1DispatchTokens(const Top1DispatchShape& shape);

// probs [B, S, E] -> expert, gate, priority, order [B, S], counts [E]. Sequences are independent
// (capacity is per sequence) and run in parallel; the expert-major token list is one counting
// pass over the B*S tokens afterwards.
void Top1Dispatch(const Top1DispatchShape& shape, const float* probs, int32_t* expert, float* gate, int32_t* priority,
                  int32_t* counts, int32_t* order, ParallelFor parallel_for);

}  // namespace bucketrt::cpu
