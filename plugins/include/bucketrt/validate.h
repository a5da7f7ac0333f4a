// Spec-driven validation shared by every backend: attribute resolution (defaults, minimum,
// power of two, choices) and input binding (dtype, rank, symbolic dims). Messages have the same
// form as OpSpec.resolve_attributes / OpSpec.bind in src/bucketrt/ops/schema.py, so a kernel and the
// PyTorch reference reject a bad call with the same words.
//
// No ONNX Runtime dependency: a CUDA or TensorRT backend includes this as is. Errors are returned
// as strings ("" = valid); nothing here throws except std::bad_alloc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bucketrt/spec_types.h"

namespace bucketrt {

// printf-style formatting into a std::string (used for error messages only).
std::string Format(const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

// An attribute as found on the node, before defaults and checks. Every kind a runtime can hand
// over is kept, so that one of the wrong type is reported as such (never taken as missing).
struct RawAttribute {
  enum class Kind { kMissing, kInt, kFloat, kString, kInts, kFloats, kStrings, kTensor, kOther };
  Kind kind = Kind::kMissing;
  int64_t int_value = 0;
  double float_value = 0;
  std::string string_value;
  std::vector<int64_t> int_values;     // kInts
  std::vector<double> float_values;    // kFloats
  std::vector<std::string> string_values;  // kStrings
};

// Resolved attribute values, in the order of OpSpec::attributes.
class Attributes {
 public:
  struct Value {
    const spec::AttrSpec* spec = nullptr;
    int64_t int_value = 0;
    double float_value = 0;  // a float attribute: finite, within its bounds (an ONNX FLOAT is a float32)
    std::string string_value;
  };

  // The value of an int / float / string attribute the spec declares (std::out_of_range otherwise:
  // a programming error, never an input error).
  int64_t Int(const char* name) const;
  double Float(const char* name) const;
  const std::string& String(const char* name) const;
  const std::vector<Value>& values() const { return values_; }
  // Overrides an int attribute the spec declares (session-wide settings); false if it has none.
  bool SetIntIfDeclared(const char* name, int64_t value);

 private:
  friend std::string ResolveAttributes(const spec::OpSpec&, const std::vector<RawAttribute>&, Attributes*);
  const Value& Find(const char* name) const;
  std::vector<Value> values_;
};

// Fills defaults and checks every attribute against its spec bounds (type; minimum, maximum,
// allowed values, power of two; a float finite and within its bounds; string choices), in
// OpSpec.resolve_attributes' words; raw is index-aligned with op.attributes.
std::string ResolveAttributes(const spec::OpSpec& op, const std::vector<RawAttribute>& raw, Attributes* out);

// ResolveAttributes' checks on values already resolved (every declared attribute present, in the
// spec's order, each within its bounds): "" or the same error.
std::string CheckResolvedAttributes(const spec::OpSpec& op, const Attributes& attrs);

// The names a node carries that the op does not declare (the routing attributes plugin_version
// and plugin_namespace are the op's for this purpose): "" or "Op: unknown attribute(s) ['a', 'b']",
// as OpSpec.resolve_attributes says it.
std::string CheckAttributeNames(const spec::OpSpec& op, const std::vector<std::string>& names);

// True for plugin_version / plugin_namespace.
bool IsRoutingAttribute(const char* name);

// Checked size arithmetic for the kernels' shapes: false (and *out untouched) when the exact
// result does not fit int64 or an operand is negative, so that an overflow becomes an error, never
// a wrap (out may be nullptr: the check alone).
bool CheckedMul(int64_t a, int64_t b, int64_t* out);
bool CheckedAdd(int64_t a, int64_t b, int64_t* out);
// The product of `count` non-negative factors; false on overflow.
bool CheckedProduct(const int64_t* factors, int count, int64_t* out);
// "Op: the sizes overflow computing what" — the error for a failed Checked* call.
std::string SizeOverflowError(const char* op, const char* what);

// Actual element type and shape of one tensor, as the runtime reports them.
struct TensorDesc {
  const char* dtype = "";  // "int32", "float32", "int64", ... (numpy names, as schema.py uses)
  int rank = 0;
  const int64_t* dims = nullptr;
};

// Symbol -> size, with where each size came from (for messages). Fixed capacity: no heap use.
class Bindings {
 public:
  static constexpr int kCapacity = 32;

  // Returns false when `symbol` is unbound.
  bool Find(const char* symbol, int64_t* value) const;
  // The size bound to a symbol the spec declares; -1 if unbound.
  int64_t operator[](const char* symbol) const;
  // Binds `symbol` unless already bound; origin is e.g. "attribute" / "input", origin_name the name.
  void Bind(const char* symbol, int64_t value, const char* origin, const char* origin_name);
  int size() const { return count_; }
  // The op's float type T as the inputs fixed it (BindInputs); the op's first float type before.
  spec::DType float_type() const { return float_type_; }

 private:
  friend std::string BindInputs(const spec::OpSpec&, const Attributes&, const TensorDesc*, int, Bindings*);
  struct Entry {
    const char* symbol;
    int64_t value;
    const char* origin;
    const char* origin_name;
  };
  const Entry* Lookup(const char* symbol) const;
  Entry entries_[kCapacity];
  int count_ = 0;
  spec::DType float_type_ = spec::DType::kFloat32;
};

// Checks input count, dtypes, ranks and symbolic dims, like OpSpec.bind; fills `env` (which starts
// with the int attributes) with every binding and the op's float type T.
std::string BindInputs(const spec::OpSpec& op, const Attributes& attrs, const TensorDesc* inputs, int count,
                       Bindings* env);

// The dtype part of BindInputs alone, for callers that see element types before any shape
// (TensorRT's getOutputDataTypes): input count, every input's dtype (numpy names), and T from the
// first float input, in BindInputs' words. Sets *float_type to T (the op's first float type when
// the check fails before T is known).
std::string CheckInputTypes(const spec::OpSpec& op, const char* const* dtypes, int count, spec::DType* float_type);

// True when `symbol` is a plain identifier (schema.py skips the others, e.g. "m*L").
bool IsIdentifier(const char* symbol);

}  // namespace bucketrt
