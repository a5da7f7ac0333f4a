// The C++ types of the op catalogue. The generated header bucketrt/op_specs.h (written by
// src/bucketrt/ops/codegen.py `cpp_header()`) fills them with every op's inputs, outputs and
// attributes; keep the two in step.
#pragma once

namespace bucketrt::spec {

// kFloat is an op's float type parameter T (schema.py's dtype "float"): a TensorSpec of dtype kFloat
// takes the element type of the node's first kFloat input, which must be one of the op's
// float_types (kFloat32, kFloat16); every other kFloat tensor of the node must match it.
enum class DType { kInt32, kInt8, kFloat32, kFloat16, kFloat };
enum class AttrType { kInt, kString, kFloat };

// AttrSpec::minimum / maximum when the attribute has none (an int attribute with allowed values,
// a string or a float attribute). schema.py gives every int attribute a range or its allowed values,
// and every float attribute a finite range (float_minimum, float_maximum).
inline constexpr long long kNoMinimum = -(1LL << 62);
inline constexpr long long kNoMaximum = 1LL << 62;

struct TensorSpec {
  const char* name;
  DType dtype;
  int rank;
  // Symbols, one per axis (rank of them). Equal identifiers must have equal sizes; an identifier
  // named like an int attribute takes the attribute's value; non-identifiers ("m*L") are left to
  // the op's own checks.
  const char* dims[4];
  // An expert's weights (schema.py's Tensor.weights): the CPU kernels back a constant one with huge
  // pages (cpu/huge_pages.h).
  bool weights;
};

struct AttrSpec {
  const char* name;
  AttrType type;
  const char* default_value;  // nullptr: required
  long long minimum;          // kNoMinimum: none
  long long maximum;          // kNoMaximum: none
  bool power_of_two;
  const char* choices;        // string: '|'-separated allowed values
  const long long* allowed;   // int: the allowed values (num_allowed of them; nullptr: the range)
  int num_allowed;
  // float: the finite bounds, both inclusive (the generated rows of int and string attributes leave
  // them out). A float attribute's default_value is its Python repr ("0.0"), read with strtod.
  double float_minimum = 0;
  double float_maximum = 0;
};

struct OpSpec {
  const char* name;
  const TensorSpec* inputs;
  int num_inputs;
  const TensorSpec* outputs;
  int num_outputs;
  const AttrSpec* attributes;
  int num_attributes;
  const DType* float_types;  // what T may be: kFloat32 first, then kFloat16 where the op allows it
  int num_float_types;
};

// numpy names, as schema.py and the error messages use them ("T" for the type parameter).
constexpr const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kInt32: return "int32";
    case DType::kInt8: return "int8";
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kFloat: return "T";
  }
  return "?";
}

// The bytes of one element of a concrete type (0 for the unresolved kFloat).
constexpr unsigned ElementBytes(DType dtype) {
  switch (dtype) {
    case DType::kInt32: return 4;
    case DType::kInt8: return 1;
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kFloat: return 0;
  }
  return 0;
}

// The element type of a tensor of dtype `dtype` when the op's T is `float_type`.
constexpr DType Concrete(DType dtype, DType float_type) { return dtype == DType::kFloat ? float_type : dtype; }

}  // namespace bucketrt::spec
