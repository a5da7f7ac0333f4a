// The experts' activation functions on the device (included by .cu files only): ExpertFFN's and
// TopKExperts' kernels. reference.EXPERT_ACTIVATIONS' formulas in float32; clamps by comparisons,
// so that a NaN stays NaN as in torch.clamp (fminf/fmaxf would return the bound).
#pragma once

#include "bucketrt/op_specs.h"
#include "cpu/expert_ffn.h"

namespace bucketrt::cuda {

inline constexpr float kSqrt2 = 1.4142135623730951f;                         // math.sqrt(2.0)
inline constexpr float kSqrt2OverPi = 0.7978845608028654f;                   // math.sqrt(2.0 / math.pi)
inline constexpr float kLaplaceScale = static_cast<float>(0.282095 * 1.4142135623730951);  // 0.282095 * math.sqrt(2.0)

__device__ __forceinline__ float Relu(float x) { return x < 0.0f ? 0.0f : x; }
__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// torch's softplus: linear above the threshold 20.
__device__ __forceinline__ float Softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float Gelu(float x) { return 0.5f * x * (1.0f + erff(x / kSqrt2)); }
// torch.clamp: a NaN stays NaN (fminf/fmaxf would return the bound).
__device__ __forceinline__ float Clamp(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }
// torch.clamp(x, max=hi): likewise.
__device__ __forceinline__ float ClampMax(float x, float hi) { return x > hi ? hi : x; }

// Every function of spec::Activation has a case below (-Werror=switch; the count is checked too).
static_assert(spec::kNumActivations == 16, "catalogue.py's ACTIVATION_FUNCTIONS changed: give every function a case");
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
__device__ __forceinline__ float Activate(cpu::Activation act, float x) {
  switch (act) {
    case cpu::Activation::kRelu: return Relu(x);
    case cpu::Activation::kGelu: return Gelu(x);
    case cpu::Activation::kGelu10: return Clamp(Gelu(x), -10.0f, 10.0f);
    case cpu::Activation::kGeluTanh: return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    case cpu::Activation::kQuickGelu: return x * Sigmoid(1.702f * x);
    case cpu::Activation::kSilu: return x * Sigmoid(x);
    case cpu::Activation::kRelu2: {
      const float r = Relu(x);
      return r * r;
    }
    case cpu::Activation::kRelu6: return Clamp(x, 0.0f, 6.0f);
    case cpu::Activation::kLeakyRelu: return x >= 0.0f ? x : 0.01f * x;
    case cpu::Activation::kSigmoid: return Sigmoid(x);
    case cpu::Activation::kTanh: return tanhf(x);
    case cpu::Activation::kHardswish: return x * Clamp(x + 3.0f, 0.0f, 6.0f) / 6.0f;
    case cpu::Activation::kMish: return x * tanhf(Softplus(x));
    case cpu::Activation::kLaplace: return 0.5f * (1.0f + erff((x - 0.707107f) / kLaplaceScale));
    case cpu::Activation::kSqrtSoftplus: return sqrtf(Softplus(x));
    case cpu::Activation::kLinear: return x;
  }
  return x;
}
#pragma GCC diagnostic pop

}  // namespace bucketrt::cuda
