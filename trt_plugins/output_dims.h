// Where each output dim of an op comes from, decided from the spec alone (no TensorRT types).
//
// TensorRT asks a plugin for its output shapes as expressions over the input dims
// (IPluginV3OneBuild::getOutputShapes) before any data exists, so every output dim symbol of the
// spec must be one of
//   * an int attribute of the op (a constant: SignHash's 'num_hash', BucketSum's 'num_buckets'), or
//   * a dim of some input (the first input, in spec order, carrying the symbol at some axis).
// An attribute wins when a symbol is both: BindInputs binds attributes first and requires an input
// dim of that name to equal it, and a constant gives TensorRT a static dim. The static_assert in
// spec_plugin.cc checks every op of the catalogue at compile time; tests/test_spec.py checks the
// same rule on the catalogue, so an op whose output size depends on data fails there first.
#pragma once

#include "bucketrt/spec_types.h"

namespace bucketrt::trt {

struct DimSource {
  enum class Kind { kNone, kAttribute, kInput };
  Kind kind = Kind::kNone;
  int index = -1;  // kAttribute: index into op.attributes; kInput: the input's index
  int axis = -1;   // kInput: the input's axis
};

constexpr bool SameSymbol(const char* a, const char* b) {
  while (*a != '\0' && *a == *b) {
    ++a;
    ++b;
  }
  return *a == *b;
}

constexpr DimSource OutputDimSource(const spec::OpSpec& op, const char* symbol) {
  DimSource source;
  for (int a = 0; a < op.num_attributes; ++a) {
    if (op.attributes[a].type == spec::AttrType::kInt && SameSymbol(op.attributes[a].name, symbol)) {
      source.kind = DimSource::Kind::kAttribute;
      source.index = a;
      return source;
    }
  }
  for (int i = 0; i < op.num_inputs; ++i) {
    for (int axis = 0; axis < op.inputs[i].rank; ++axis) {
      if (SameSymbol(op.inputs[i].dims[axis], symbol)) {
        source.kind = DimSource::Kind::kInput;
        source.index = i;
        source.axis = axis;
        return source;
      }
    }
  }
  return source;
}

// True when every dim of every output of `op` has a source.
constexpr bool OutputDimsResolve(const spec::OpSpec& op) {
  for (int o = 0; o < op.num_outputs; ++o) {
    for (int axis = 0; axis < op.outputs[o].rank; ++axis) {
      if (OutputDimSource(op, op.outputs[o].dims[axis]).kind == DimSource::Kind::kNone) return false;
    }
  }
  return true;
}

}  // namespace bucketrt::trt
