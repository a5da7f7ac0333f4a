// The CPU kernels as ORT sees them: attribute handling at creation, op-specific checks, then the
// pure kernels of plugins/cpu/.
#pragma once

#include "ort/op_base.h"
#include "cpu/expert_ffn.h"

namespace bucketrt::ort {

class LshCumulationKernel {
 public:
  static const spec::OpSpec& Spec() { return spec::kLSHCumulation; }
  explicit LshCumulationKernel(const Attributes& attrs);
  void Compute(Ort::KernelContext& ctx, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env);
};

class SignHashKernel {
 public:
  static const spec::OpSpec& Spec() { return spec::kSignHash; }
  explicit SignHashKernel(const Attributes& attrs);
  void Compute(Ort::KernelContext& ctx, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env);
};

class Top1DispatchKernel {
 public:
  static const spec::OpSpec& Spec() { return spec::kTop1Dispatch; }
  explicit Top1DispatchKernel(const Attributes& attrs);
  void Compute(Ort::KernelContext& ctx, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env);
};

class ExpertFfnKernel {
 public:
  static const spec::OpSpec& Spec() { return spec::kExpertFFN; }
  explicit ExpertFfnKernel(const Attributes& attrs);
  void Compute(Ort::KernelContext& ctx, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env);

 private:
  cpu::Activation act_;
};

class ArgmaxHashKernel {
 public:
  static const spec::OpSpec& Spec() { return spec::kArgmaxHash; }
  explicit ArgmaxHashKernel(const Attributes& attrs);
  void Compute(Ort::KernelContext& ctx, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env);
};

class BucketSumKernel {
 public:
  static const spec::OpSpec& Spec() { return spec::kBucketSum; }
  explicit BucketSumKernel(const Attributes& attrs);
  void Compute(Ort::KernelContext& ctx, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env);
};

class SortedChunkAttentionKernel {
 public:
  static const spec::OpSpec& Spec() { return spec::kSortedChunkAttention; }
  explicit SortedChunkAttentionKernel(const Attributes& attrs);
  void Compute(Ort::KernelContext& ctx, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env);

 private:
  int64_t max_length_;  // the plan's, not the shape's
};

}  // namespace bucketrt::ort
