// The CPU kernels as ORT sees them: attribute handling at creation, op-specific checks, then the
// pure kernels of plugins/cpu/. One class per op, named <Op>Kernel after the spec's op name: the
// generated op table (BUCKETRT_FOR_EACH_OP, ort/register.cc) declares and registers each. A kernel
// keeps no state of its own: it reads the node's resolved attributes, which Compute gets.
#pragma once

#include "ort/op_base.h"

namespace bucketrt::ort {

// Per op of the catalogue: its constructor checks the attributes beyond the spec's (at kernel
// creation), Compute runs it (ort/kernels.cc). Declared from the generated op table, so that an op
// added to the catalogue (catalogue.py) without its CPU kernel fails to link, naming <Op>Kernel.
#define BUCKETRT_DECLARE_CPU_KERNEL(Op)                                                                \
  class Op##Kernel {                                                                                    \
   public:                                                                                              \
    static const spec::OpSpec& Spec() { return spec::k##Op; }                                          \
    explicit Op##Kernel(const Attributes& attrs);                                                       \
    void Compute(CpuRun& run, const OrtInputs& inputs, const Attributes& attrs, const Bindings& env); \
  };
BUCKETRT_FOR_EACH_OP(BUCKETRT_DECLARE_CPU_KERNEL)
#undef BUCKETRT_DECLARE_CPU_KERNEL

}  // namespace bucketrt::ort
