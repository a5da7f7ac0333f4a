#include "cpu/top1_dispatch.h"

#include "bucketrt/op_specs.h"

#include <climits>
#include <cmath>
#include <vector>

#include "bucketrt/validate.h"

namespace bucketrt::cpu {
namespace {

struct Job {
  const Top1DispatchShape* shape;
  const float* probs;
  int32_t* expert;
  float* gate;
  int32_t* priority;
};

// One sequence: argmax per token (the first maximum, and the first NaN if any, like torch.argmax),
// then each token's rank among the earlier tokens of the sequence that chose the same expert.
void RouteSequence(void* data, size_t b) {
  const Job& job = *static_cast<const Job*>(data);
  const int64_t S = job.shape->length, E = job.shape->num_experts, cap = job.shape->capacity;
  std::vector<int64_t> seen(static_cast<size_t>(E), 0);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t t = static_cast<int64_t>(b) * S + s;
    const float* p = job.probs + t * E;
    int64_t best = 0;
    if (!std::isnan(p[0])) {
      for (int64_t e = 1; e < E; ++e) {
        if (std::isnan(p[e])) {
          best = e;
          break;
        }
        if (p[e] > p[best]) best = e;
      }
    }
    const int64_t rank = ++seen[static_cast<size_t>(best)];
    job.gate[t] = p[best];
    job.priority[t] = static_cast<int32_t>(rank);
    job.expert[t] = rank <= cap ? static_cast<int32_t>(best) : -1;
  }
}

}  // namespace

Top1DispatchShape Top1DispatchShapeOf(const Attributes& attrs, const Bindings& env) {
  Top1DispatchShape s;
  const auto dims = spec::Top1Dispatch::Dims::From(env);
  s.batch = dims.B;
  s.length = dims.S;
  s.num_experts = dims.E;
  s.capacity = attrs.Int("expert_capacity");
  return s;
}

std::string CheckTop1DispatchTokens(const Top1DispatchShape& shape) {
  // Checked: the dims may be an optimisation profile's bounds (TensorRT plans before any data).
  int64_t tokens = 0;
  if (!CheckedMul(shape.batch, shape.length, &tokens) || tokens > INT32_MAX) {
    return Format("Top1Dispatch: input 'probs' has %lld x %lld tokens, more than int32 indices address",
                  static_cast<long long>(shape.batch), static_cast<long long>(shape.length));
  }
  return {};
}

void Top1Dispatch(const Top1DispatchShape& shape, const float* probs, int32_t* expert, float* gate, int32_t* priority,
                  int32_t* counts, int32_t* order, ParallelFor parallel_for) {
  Job job{&shape, probs, expert, gate, priority};
  parallel_for(RouteSequence, static_cast<size_t>(shape.batch), &job);

  // Counting sort of the kept tokens by expert; ascending token index within an expert.
  const int64_t tokens = shape.batch * shape.length, E = shape.num_experts;
  std::vector<int64_t> next(static_cast<size_t>(E) + 1, 0);
  for (int64_t e = 0; e < E; ++e) counts[e] = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    if (expert[t] >= 0) ++counts[expert[t]];
  }
  for (int64_t e = 0; e < E; ++e) next[static_cast<size_t>(e) + 1] = next[static_cast<size_t>(e)] + counts[e];
  for (int64_t t = 0; t < tokens; ++t) {
    if (expert[t] >= 0) order[next[static_cast<size_t>(expert[t])]++] = static_cast<int32_t>(t);
  }
  for (int64_t i = next[static_cast<size_t>(E) - 1]; i < tokens; ++i) order[i] = -1;
}

}  // namespace bucketrt::cpu
