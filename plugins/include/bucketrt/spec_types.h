// The C++ types of the op catalogue. The generated header bucketrt/op_specs.h (written by
// src/bucketrt/ops/spec.py `cpp_header()`) fills them with every op's inputs, outputs and
// attributes; keep the two in step.
#pragma once

namespace bucketrt::spec {

enum class DType { kInt32, kFloat32 };
enum class AttrType { kInt, kString };

// AttrSpec::minimum when the attribute has no lower bound.
inline constexpr long long kNoMinimum = -(1LL << 62);

struct TensorSpec {
  const char* name;
  DType dtype;
  int rank;
  // Symbols, one per axis (rank of them). Equal identifiers must have equal sizes; an identifier
  // named like an int attribute takes the attribute's value; non-identifiers ("m*L") are left to
  // the op's own checks.
  const char* dims[4];
};

struct AttrSpec {
  const char* name;
  AttrType type;
  const char* default_value;  // nullptr: required
  long long minimum;          // kNoMinimum: none
  bool power_of_two;
  const char* choices;  // '|'-separated allowed strings; "" allows any
};

struct OpSpec {
  const char* name;
  const TensorSpec* inputs;
  int num_inputs;
  const TensorSpec* outputs;
  int num_outputs;
  const AttrSpec* attributes;
  int num_attributes;
};

constexpr const char* DTypeName(DType dtype) {
  return dtype == DType::kInt32 ? "int32" : "float32";
}

}  // namespace bucketrt::spec
