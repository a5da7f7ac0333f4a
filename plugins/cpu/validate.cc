#include "bucketrt/validate.h"
#include "bucketrt/op_specs.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace bucketrt {

std::string Format(const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list copy;
  va_copy(copy, args);
  const int size = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::string out(size > 0 ? static_cast<size_t>(size) : 0, '\0');
  if (size > 0) std::vsnprintf(&out[0], out.size() + 1, format, args);
  va_end(args);
  return out;
}

bool IsIdentifier(const char* symbol) {
  if (!symbol || !*symbol) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!alpha(symbol[0])) return false;
  for (const char* c = symbol + 1; *c; ++c) {
    if (!alpha(*c) && !(*c >= '0' && *c <= '9')) return false;
  }
  return true;
}

namespace {

// Python's repr() of a float: the shortest round-tripping form, with ".0" for integral values.
std::string FloatRepr(double value) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  std::string out = buf;
  if (out.find_first_of(".eEn") == std::string::npos) out += ".0";
  return out;
}

// Python's str() of a float: repr(), and "nan", "inf", "-inf" whatever the NaN's sign bit.
std::string FloatStr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return FloatRepr(value);
}

// Python's f"{value:g}" of a finite float (C's %g: six significant digits, the same exponent form).
std::string FloatG(double value) { return Format("%g", value); }

// Python's repr() of a string, for the plain ASCII the messages show.
std::string StringRepr(const std::string& value) { return "'" + value + "'"; }

template <class T, class Fn>
std::string ListRepr(const std::vector<T>& values, Fn repr) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + repr(values[i]);
  return out + "]";
}

// The value as Python would print it (the reference gets lists for list attributes).
std::string Repr(const RawAttribute& raw) {
  switch (raw.kind) {
    case RawAttribute::Kind::kInt:
      return std::to_string(raw.int_value);
    case RawAttribute::Kind::kFloat:
      return FloatStr(raw.float_value);
    case RawAttribute::Kind::kString:
      return StringRepr(raw.string_value);
    case RawAttribute::Kind::kInts:
      return ListRepr(raw.int_values, [](int64_t v) { return std::to_string(v); });
    case RawAttribute::Kind::kFloats:
      return ListRepr(raw.float_values, FloatStr);
    case RawAttribute::Kind::kStrings:
      return ListRepr(raw.string_values, StringRepr);
    case RawAttribute::Kind::kTensor:
      return "a tensor";
    case RawAttribute::Kind::kOther:
      return "an attribute of another kind";
    case RawAttribute::Kind::kMissing:
      break;
  }
  return "None";
}

// "[0, 1]", as Python prints list(allowed).
std::string AllowedRepr(const spec::AttrSpec& a) {
  std::string out = "[";
  for (int i = 0; i < a.num_allowed; ++i) out += (i ? ", " : "") + std::to_string(a.allowed[i]);
  return out + "]";
}

// "a|b" -> "['a', 'b']", as Python prints list(choices).
std::string ChoicesRepr(const char* choices) {
  std::string out = "['";
  for (const char* c = choices; *c; ++c) out += (*c == '|') ? std::string("', '") : std::string(1, *c);
  return out + "']";
}

bool InChoices(const char* choices, const std::string& value) {
  const char* start = choices;
  for (const char* c = choices;; ++c) {
    if (*c == '|' || *c == '\0') {
      if (static_cast<size_t>(c - start) == value.size() && value.compare(0, value.size(), start, c - start) == 0) {
        return true;
      }
      if (*c == '\0') return false;
      start = c + 1;
    }
  }
}

}  // namespace

const Attributes::Value& Attributes::Find(const char* name) const {
  for (const Value& v : values_) {
    if (std::strcmp(v.spec->name, name) == 0) return v;
  }
  throw std::out_of_range(std::string("bucketrt: no attribute named ") + name);
}

int64_t Attributes::Int(const char* name) const { return Find(name).int_value; }

double Attributes::Float(const char* name) const { return Find(name).float_value; }

const std::string& Attributes::String(const char* name) const { return Find(name).string_value; }

bool Attributes::SetIntIfDeclared(const char* name, int64_t value) {
  for (Value& v : values_) {
    if (std::strcmp(v.spec->name, name) == 0 && v.spec->type == spec::AttrType::kInt) {
      v.int_value = value;
      return true;
    }
  }
  return false;
}

std::string ResolveAttributes(const spec::OpSpec& op, const std::vector<RawAttribute>& raw, Attributes* out) {
  out->values_.clear();
  if (raw.size() != static_cast<size_t>(op.num_attributes)) {
    return Format("%s: expected %d attribute slots, got %zu", op.name, op.num_attributes, raw.size());
  }
  for (int i = 0; i < op.num_attributes; ++i) {
    const spec::AttrSpec& a = op.attributes[i];
    RawAttribute value = raw[i];
    if (value.kind == RawAttribute::Kind::kMissing) {
      if (a.default_value == nullptr) return Format("%s: attribute '%s' is required", op.name, a.name);
      if (a.type == spec::AttrType::kInt) {
        value.kind = RawAttribute::Kind::kInt;
        value.int_value = std::strtoll(a.default_value, nullptr, 10);
      } else if (a.type == spec::AttrType::kFloat) {
        value.kind = RawAttribute::Kind::kFloat;
        value.float_value = std::strtod(a.default_value, nullptr);
      } else {
        value.kind = RawAttribute::Kind::kString;
        value.string_value = a.default_value;
      }
    }
    Attributes::Value resolved;
    resolved.spec = &a;
    // The same checks in the same order as schema.py's Attribute.check.
    if (a.type == spec::AttrType::kInt) {
      if (value.kind != RawAttribute::Kind::kInt) {
        return Format("%s: attribute '%s' must be an int, got %s", op.name, a.name, Repr(value).c_str());
      }
      const long long v = value.int_value;
      if (a.num_allowed > 0) {
        bool allowed = false;
        for (int k = 0; k < a.num_allowed; ++k) allowed = allowed || v == a.allowed[k];
        if (!allowed) {
          return Format("%s: attribute '%s' must be one of %s, got %lld", op.name, a.name, AllowedRepr(a).c_str(), v);
        }
      }
      if (a.minimum != spec::kNoMinimum && v < a.minimum) {
        return Format("%s: attribute '%s' must be >= %lld, got %lld", op.name, a.name, a.minimum, v);
      }
      if (a.maximum != spec::kNoMaximum && v > a.maximum) {
        return Format("%s: attribute '%s' must be <= %lld, got %lld", op.name, a.name, a.maximum, v);
      }
      if (a.power_of_two && (v < 1 || (v & (v - 1)) != 0)) {
        return Format("%s: attribute '%s' must be a power of two, got %lld", op.name, a.name, v);
      }
      resolved.int_value = v;
    } else if (a.type == spec::AttrType::kFloat) {
      // An ONNX INT attribute is no float (schema.py: "must be a float, got 7"), nor is a list.
      if (value.kind != RawAttribute::Kind::kFloat) {
        return Format("%s: attribute '%s' must be a float, got %s", op.name, a.name, Repr(value).c_str());
      }
      const double v = value.float_value;
      if (!std::isfinite(v)) {
        return Format("%s: attribute '%s' must be finite, got %s", op.name, a.name, FloatStr(v).c_str());
      }
      if (v < a.float_minimum) {
        return Format("%s: attribute '%s' must be >= %s, got %s", op.name, a.name, FloatG(a.float_minimum).c_str(),
                      FloatG(v).c_str());
      }
      if (v > a.float_maximum) {
        return Format("%s: attribute '%s' must be <= %s, got %s", op.name, a.name, FloatG(a.float_maximum).c_str(),
                      FloatG(v).c_str());
      }
      resolved.float_value = v;
    } else {
      if (value.kind != RawAttribute::Kind::kString) {
        return Format("%s: attribute '%s' must be a string, got %s", op.name, a.name, Repr(value).c_str());
      }
      if (!InChoices(a.choices, value.string_value)) {
        return Format("%s: attribute '%s' must be one of %s, got %s", op.name, a.name, ChoicesRepr(a.choices).c_str(),
                      Repr(value).c_str());
      }
      resolved.string_value = value.string_value;
    }
    out->values_.push_back(std::move(resolved));
  }
  return {};
}

std::string CheckResolvedAttributes(const spec::OpSpec& op, const Attributes& attrs) {
  std::vector<RawAttribute> raw(static_cast<size_t>(op.num_attributes));
  if (attrs.values().size() != raw.size()) {
    return Format("%s: expected %d attributes, got %zu", op.name, op.num_attributes, attrs.values().size());
  }
  for (int i = 0; i < op.num_attributes; ++i) {
    const Attributes::Value& v = attrs.values()[static_cast<size_t>(i)];
    if (v.spec == nullptr || std::strcmp(v.spec->name, op.attributes[i].name) != 0) {
      return Format("%s: attribute %d is not '%s'", op.name, i, op.attributes[i].name);
    }
    RawAttribute& r = raw[static_cast<size_t>(i)];
    r.kind = v.spec->type == spec::AttrType::kInt     ? RawAttribute::Kind::kInt
             : v.spec->type == spec::AttrType::kFloat ? RawAttribute::Kind::kFloat
                                                      : RawAttribute::Kind::kString;
    r.int_value = v.int_value;
    r.float_value = v.float_value;
    r.string_value = v.string_value;
  }
  Attributes checked;
  return ResolveAttributes(op, raw, &checked);
}

bool IsRoutingAttribute(const char* name) {
  return std::strcmp(name, spec::kPluginVersionAttribute) == 0 || std::strcmp(name, spec::kPluginNamespaceAttribute) == 0;
}

std::string CheckAttributeNames(const spec::OpSpec& op, const std::vector<std::string>& names) {
  std::vector<std::string> unknown;
  for (const std::string& name : names) {
    bool declared = IsRoutingAttribute(name.c_str());
    for (int a = 0; a < op.num_attributes && !declared; ++a) declared = name == op.attributes[a].name;
    if (!declared) unknown.push_back(name);
  }
  if (unknown.empty()) return {};
  // sorted(set(...)), as schema.py prints them.
  std::sort(unknown.begin(), unknown.end());
  unknown.erase(std::unique(unknown.begin(), unknown.end()), unknown.end());
  return Format("%s: unknown attribute(s) %s", op.name, ListRepr(unknown, StringRepr).c_str());
}

bool CheckedMul(int64_t a, int64_t b, int64_t* out) {
  int64_t result;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &result)) return false;
  if (out != nullptr) *out = result;
  return true;
}

bool CheckedAdd(int64_t a, int64_t b, int64_t* out) {
  int64_t result;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &result)) return false;
  *out = result;
  return true;
}

bool CheckedProduct(const int64_t* factors, int count, int64_t* out) {
  int64_t result = 1;
  for (int i = 0; i < count; ++i) {
    if (!CheckedMul(result, factors[i], &result)) return false;
  }
  *out = result;
  return true;
}

std::string SizeOverflowError(const char* op, const char* what) {
  return Format("%s: the sizes overflow int64 computing %s", op, what);
}

const Bindings::Entry* Bindings::Lookup(const char* symbol) const {
  for (int i = 0; i < count_; ++i) {
    if (std::strcmp(entries_[i].symbol, symbol) == 0) return &entries_[i];
  }
  return nullptr;
}

bool Bindings::Find(const char* symbol, int64_t* value) const {
  const Entry* e = Lookup(symbol);
  if (e && value) *value = e->value;
  return e != nullptr;
}

int64_t Bindings::operator[](const char* symbol) const {
  const Entry* e = Lookup(symbol);
  return e ? e->value : -1;
}

void Bindings::Bind(const char* symbol, int64_t value, const char* origin, const char* origin_name) {
  if (Lookup(symbol) || count_ == kCapacity) return;
  entries_[count_++] = Entry{symbol, value, origin, origin_name};
}

namespace {

// Input i's dtype against the spec, as BindInputs and CheckInputTypes word it. The first float input
// fixes T (*float_type) among the op's float types and becomes *float_origin.
std::string CheckInputDtype(const spec::OpSpec& op, int i, const char* dtype, const char** float_origin,
                            spec::DType* float_type) {
  const spec::TensorSpec& t = op.inputs[i];
  if (t.dtype == spec::DType::kFloat && *float_origin == nullptr) {
    std::string allowed;
    bool found = false;
    for (int k = 0; k < op.num_float_types; ++k) {
      const char* name = spec::DTypeName(op.float_types[k]);
      allowed += (k ? " or " : "") + std::string(name);
      if (std::strcmp(dtype, name) == 0) {
        *float_type = op.float_types[k];
        found = true;
      }
    }
    if (!found) return Format("%s: input '%s' must be %s, got %s", op.name, t.name, allowed.c_str(), dtype);
    *float_origin = t.name;
  } else if (t.dtype == spec::DType::kFloat) {
    const char* want = spec::DTypeName(*float_type);
    if (std::strcmp(dtype, want) != 0) {
      return Format("%s: input '%s' must be %s like input '%s', got %s", op.name, t.name, want, *float_origin, dtype);
    }
  } else {
    const char* want = spec::DTypeName(t.dtype);
    if (std::strcmp(dtype, want) != 0) return Format("%s: input '%s' must be %s, got %s", op.name, t.name, want, dtype);
  }
  return {};
}

spec::DType FirstFloatType(const spec::OpSpec& op) {
  return op.num_float_types > 0 ? op.float_types[0] : spec::DType::kFloat32;
}

}  // namespace

std::string CheckInputTypes(const spec::OpSpec& op, const char* const* dtypes, int count, spec::DType* float_type) {
  *float_type = FirstFloatType(op);
  if (count != op.num_inputs) return Format("%s: expected %d inputs, got %d", op.name, op.num_inputs, count);
  const char* float_origin = nullptr;
  for (int i = 0; i < op.num_inputs; ++i) {
    std::string error = CheckInputDtype(op, i, dtypes[i], &float_origin, float_type);
    if (!error.empty()) return error;
  }
  return {};
}

std::string BindInputs(const spec::OpSpec& op, const Attributes& attrs, const TensorDesc* inputs, int count,
                       Bindings* env) {
  env->count_ = 0;
  env->float_type_ = FirstFloatType(op);
  for (const Attributes::Value& v : attrs.values()) {
    if (v.spec->type == spec::AttrType::kInt) env->Bind(v.spec->name, v.int_value, "attribute", v.spec->name);
  }
  if (count != op.num_inputs) return Format("%s: expected %d inputs, got %d", op.name, op.num_inputs, count);
  const char* float_origin = nullptr;  // the input that fixed T
  for (int i = 0; i < op.num_inputs; ++i) {
    const spec::TensorSpec& t = op.inputs[i];
    const TensorDesc& in = inputs[i];
    std::string error = CheckInputDtype(op, i, in.dtype, &float_origin, &env->float_type_);
    if (!error.empty()) return error;
    if (in.rank != t.rank) {
      std::string dims, shape;
      for (int a = 0; a < t.rank; ++a) dims += (a ? "," : "") + std::string(t.dims[a]);
      for (int a = 0; a < in.rank; ++a) shape += (a ? ", " : "") + std::to_string(in.dims[a]);
      return Format("%s: input '%s' must have rank %d [%s], got shape [%s]", op.name, t.name, t.rank, dims.c_str(),
                    shape.c_str());
    }
    for (int axis = 0; axis < t.rank; ++axis) {
      const char* sym = t.dims[axis];
      if (!IsIdentifier(sym)) continue;
      const int64_t size = in.dims[axis];
      if (size < 1) {
        return Format("%s: input '%s' dim %d (%s) must be >= 1, got %lld", op.name, t.name, axis, sym,
                      static_cast<long long>(size));
      }
      const Bindings::Entry* bound = env->Lookup(sym);
      if (bound && bound->value != size) {
        return Format("%s: input '%s' dim %d (%s) is %lld, but %s '%s' says %s=%lld", op.name, t.name, axis, sym,
                      static_cast<long long>(size), bound->origin, bound->origin_name, sym,
                      static_cast<long long>(bound->value));
      }
      if (!bound) {
        if (env->count_ == Bindings::kCapacity) return Format("%s: too many dimension symbols", op.name);
        env->Bind(sym, size, "input", t.name);
      }
    }
  }
  return {};
}

}  // namespace bucketrt
