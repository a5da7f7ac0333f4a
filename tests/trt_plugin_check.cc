// Drives libbucketrt_trt.so through TensorRT's plugin interfaces as TensorRT's builder and runtime
// call them, for everything that needs neither a GPU nor TensorRT's library: the entry points, the
// creators and their fields, createPlugin's checks, output types and shapes, format combinations,
// configurePlugin and getWorkspaceSize on shapes whose plan needs no device, onShapeChange, the
// errors enqueue reports before it touches the GPU, serialisation and cloning.
//
// Built by tests/test_trt_plugins.py against real TensorRT headers (only headers: nothing here
// links libnvinfer) and run as `trt_plugin_check path/to/libbucketrt_trt.so [N]` (N: the number of ops
// with CUDA kernels, 2 when not given: SignHash and LSHCumulation). What it knows of each op (its
// tensors' types and dims, a valid node's attributes, sample sizes for every dim) is trt_check_ops.h,
// which the test writes from the op catalogue and the table of per-op test inputs (tests/op_inputs.py)
// into the build's include path: every op with a creator is driven alike, and a signature the plugin
// gets wrong fails its checks (the test proves it on a mutated header). The stand-ins are expression
// builders for getOutputShapes (TensorRT's own needs its builder): one of plain constants, and a
// symbolic one whose dims are expressions over named sizes, as TensorRT passes them at build time,
// evaluated afterwards for sample sizes. Every creator's plugin also goes through TensorRT's format
// search (supportsFormatCombination position by position over every type and format). Prints one
// line per check; exits 1 if any fails.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <algorithm>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "trt_check_support.h"
#include "trt_check_ops.h"

using namespace nvinfer1;
using trt_check::Check;
using trt_check::Fields;
using trt_check::Finder;
using trt_check::g_failures;
using trt_check::Logger;

namespace {


// Constant dimension expressions, enough for plugins that copy input dims and ask for constants.
class ConstantExpr : public IDimensionExpr {
 public:
  explicit ConstantExpr(int64_t value) : impl_(value) { mImpl = &impl_; }

 private:
  struct Impl : apiv::VDimensionExpr {
    explicit Impl(int64_t v) : value(v) {}
    bool isConstant() const override { return true; }
    int64_t getConstantValue() const override { return value; }
    bool isSizeTensor() const override { return false; }
    int64_t value;
  } impl_;
};

class ConstantBuilder : public IExprBuilder {
 public:
  ConstantBuilder() : impl_(this) { mImpl = &impl_; }
  const IDimensionExpr* Make(int64_t value) { return &exprs_.emplace_back(value); }

 private:
  struct Impl : apiv::VExprBuilder {
    explicit Impl(ConstantBuilder* b) : builder(b) {}
    const IDimensionExpr* constant(int64_t value) override { return builder->Make(value); }
    const IDimensionExpr* operation(DimensionOperation, const IDimensionExpr&, const IDimensionExpr&) override {
      return nullptr;
    }
    const IDimensionExpr* declareSizeTensor(int32_t, const IDimensionExpr&, const IDimensionExpr&) override {
      return nullptr;
    }
    ConstantBuilder* builder;
  } impl_;
  std::deque<ConstantExpr> exprs_;
};

Dims MakeDims(std::initializer_list<int64_t> sizes) {
  Dims d{};
  d.nbDims = static_cast<int32_t>(sizes.size());
  int i = 0;
  for (int64_t s : sizes) d.d[i++] = s;
  return d;
}

PluginTensorDesc Desc(DataType type, Dims dims) {
  PluginTensorDesc d{};
  d.dims = dims;
  d.type = type;
  d.format = TensorFormat::kLINEAR;
  d.scale = 1.0f;
  return d;
}

DynamicPluginTensorDesc Dynamic(DataType type, Dims min, Dims opt, Dims max) {
  DynamicPluginTensorDesc d{};
  d.desc = Desc(type, opt);
  d.min = min;
  d.opt = opt;
  d.max = max;
  return d;
}


// Symbolic dimension expressions, as TensorRT's builder passes them while building: a named size
// (a network input's dim, unknown until the profile's shapes), a constant, or an operation on two
// expressions (constants folded, as TensorRT's builder folds them). Eval computes an expression for
// given sizes; getConstantValue on a non-constant counts as a misuse (TensorRT returns INT64_MIN).
class SymbolicExpr : public IDimensionExpr {
 public:
  SymbolicExpr(std::string symbol, int64_t value, DimensionOperation op, const SymbolicExpr* a, const SymbolicExpr* b,
               int* misuses)
      : impl_(this), symbol_(std::move(symbol)), value_(value), op_(op), a_(a), b_(b), misuses_(misuses) {
    mImpl = &impl_;
  }
  bool Constant() const { return symbol_.empty() && a_ == nullptr; }
  int64_t Eval(const std::map<std::string, int64_t>& sizes) const {
    if (Constant()) return value_;
    if (a_ == nullptr) return sizes.at(symbol_);
    const int64_t x = a_->Eval(sizes), y = b_->Eval(sizes);
    switch (op_) {
      case DimensionOperation::kSUM: return x + y;
      case DimensionOperation::kPROD: return x * y;
      case DimensionOperation::kMAX: return std::max(x, y);
      case DimensionOperation::kMIN: return std::min(x, y);
      case DimensionOperation::kSUB: return x - y;
      case DimensionOperation::kEQUAL: return x == y;
      case DimensionOperation::kLESS: return x < y;
      case DimensionOperation::kFLOOR_DIV: return y == 0 ? 0 : x / y - ((x % y != 0) && ((x < 0) != (y < 0)));
      case DimensionOperation::kCEIL_DIV: return y == 0 ? 0 : -((-x) / y - (((-x) % y != 0) && ((-x < 0) != (y < 0))));
    }
    return 0;
  }

 private:
  struct Impl : apiv::VDimensionExpr {
    explicit Impl(SymbolicExpr* e) : self(e) {}
    bool isConstant() const override { return self->Constant(); }
    int64_t getConstantValue() const override {
      if (self->Constant()) return self->value_;
      ++*self->misuses_;
      return std::numeric_limits<int64_t>::min();
    }
    bool isSizeTensor() const override { return false; }
    SymbolicExpr* self;
  } impl_;
  std::string symbol_;
  int64_t value_;
  DimensionOperation op_;
  const SymbolicExpr* a_;
  const SymbolicExpr* b_;
  int* misuses_;
};

class SymbolicBuilder : public IExprBuilder {
 public:
  SymbolicBuilder() : impl_(this) { mImpl = &impl_; }
  const SymbolicExpr* Symbol(const std::string& name) {
    return &exprs_.emplace_back(name, 0, DimensionOperation::kSUM, nullptr, nullptr, &misuses);
  }
  const SymbolicExpr* Constant(int64_t value) {
    return &exprs_.emplace_back("", value, DimensionOperation::kSUM, nullptr, nullptr, &misuses);
  }
  const SymbolicExpr* Operation(DimensionOperation op, const SymbolicExpr* a, const SymbolicExpr* b) {
    const SymbolicExpr* e = &exprs_.emplace_back("", 0, op, a, b, &misuses);
    return a->Constant() && b->Constant() ? Constant(e->Eval({})) : e;
  }
  // The expression objects this builder made (a plugin's output dims must be among them).
  const SymbolicExpr* Own(const IDimensionExpr* e) const {
    for (const SymbolicExpr& x : exprs_) {
      if (&x == e) return &x;
    }
    return nullptr;
  }
  int misuses = 0;  // getConstantValue calls on non-constants

 private:
  struct Impl : apiv::VExprBuilder {
    explicit Impl(SymbolicBuilder* b) : builder(b) {}
    const IDimensionExpr* constant(int64_t value) override { return builder->Constant(value); }
    const IDimensionExpr* operation(DimensionOperation op, const IDimensionExpr& a, const IDimensionExpr& b) override {
      const SymbolicExpr* x = builder->Own(&a);
      const SymbolicExpr* y = builder->Own(&b);
      return x && y ? builder->Operation(op, x, y) : nullptr;
    }
    const IDimensionExpr* declareSizeTensor(int32_t, const IDimensionExpr&, const IDimensionExpr&) override {
      return nullptr;
    }
    SymbolicBuilder* builder;
  } impl_;
  std::deque<SymbolicExpr> exprs_;
};

using trt_check_ops::OpText;
using trt_check_ops::TensorText;

bool IsNumber(const std::string& dim) { return !dim.empty() && dim.find_first_not_of("0123456789") == std::string::npos; }

// getOutputShapes with symbolic input dims, each input's each dim an expression of its own over
// the named sizes (in turn a plain size, a sum of two sizes, a product with a size of 1, as a
// reshape or concat upstream gives them), the outputs evaluated for several sample sizes.
void CheckSymbolicShapes(const OpText& text, IPluginV3OneBuild* build) {
  const std::vector<std::map<std::string, int64_t>>& samples = trt_check_ops::Samples();
  for (int style = 0; style < 3; ++style) {
    SymbolicBuilder builder;
    std::vector<DimsExprs> in(text.inputs.size());
    std::vector<std::pair<std::string, int64_t>> extra;  // the halves a sum of two sizes adds
    for (size_t i = 0; i < text.inputs.size(); ++i) {
      in[i].nbDims = static_cast<int32_t>(text.inputs[i].dims.size());
      for (size_t a = 0; a < text.inputs[i].dims.size(); ++a) {
        const std::string& s = text.inputs[i].dims[a];
        const SymbolicExpr* e = IsNumber(s) ? builder.Constant(std::stoll(s)) : builder.Symbol(s);
        if (IsNumber(s)) {  // an attribute's value: a constant whatever the style
        } else if (style == 1) {  // s = (s - 1) + 1 written as sum(s_minus_1, 1): never constant
          e = builder.Operation(DimensionOperation::kSUM, builder.Symbol(s + "-1"), builder.Constant(1));
        } else if (style == 2) {  // s * one, one a size of its own
          e = builder.Operation(DimensionOperation::kPROD, builder.Symbol(s), builder.Symbol("one"));
        }
        in[i].d[a] = e;
      }
    }
    std::vector<DimsExprs> out(text.outputs.size());
    const int32_t status = build->getOutputShapes(in.data(), static_cast<int32_t>(in.size()), nullptr, 0, out.data(),
                                                  static_cast<int32_t>(out.size()), builder);
    bool ok = status == 0;
    std::string why = ok ? "" : "getOutputShapes failed";
    for (auto sizes : samples) {
      for (auto& [name, value] : std::map<std::string, int64_t>(sizes)) sizes[name + "-1"] = value - 1;
      sizes["one"] = 1;
      for (size_t o = 0; ok && o < text.outputs.size(); ++o) {
        const TensorText& t = text.outputs[o];
        ok = out[o].nbDims == static_cast<int32_t>(t.dims.size());
        if (!ok) why = "output " + std::to_string(o) + " has rank " + std::to_string(out[o].nbDims);
        for (size_t a = 0; ok && a < t.dims.size(); ++a) {
          const SymbolicExpr* e = builder.Own(out[o].d[a]);
          const int64_t want = IsNumber(t.dims[a]) ? std::stoll(t.dims[a]) : sizes.at(t.dims[a]);
          ok = e != nullptr && e->Eval(sizes) == want && (IsNumber(t.dims[a]) == e->Constant());
          if (!ok) {
            why = "output " + std::to_string(o) + " dim " + std::to_string(a) + " (" + t.dims[a] + ") " +
                  (e == nullptr ? "is no expression of the builder" : "evaluates to " + std::to_string(e->Eval(sizes)) +
                                                                           ", want " + std::to_string(want));
          }
        }
      }
    }
    ok = ok && builder.misuses == 0;
    if (ok || why.empty()) why = std::to_string(builder.misuses) + " getConstantValue calls on non-constants";
    static const char* const kStyles[] = {"named sizes", "sums (s-1)+1", "products s*one"};
    Check(ok, std::string(text.op) + ": output shapes over symbolic input dims (" + kStyles[style] +
                  ") evaluate to the spec's for 3 sample shapes" + (ok ? "" : ": " + why));
  }
}

// TensorRT's format search: for each position in order, every (type, format) candidate is offered
// with the earlier positions fixed to the choices made so far (the later ones undefined: filled
// with junk here, which the plugin must not read); every complete assignment the plugin accepts is
// collected. The accepted set must be exactly the spec's: every 'I' tensor int32 (every 'B' int8),
// every 'T' tensor float32, or every one float16, all linear.
void CheckFormatSearch(const OpText& text, IPluginV3OneBuild* build) {
  const int nb_in = static_cast<int>(text.inputs.size()), nb_out = static_cast<int>(text.outputs.size());
  const int n = nb_in + nb_out;
  std::vector<char> kinds;
  for (const TensorText& t : text.inputs) kinds.push_back(t.type);
  for (const TensorText& t : text.outputs) kinds.push_back(t.type);
  const int types = EnumMax<DataType>(), formats = EnumMax<TensorFormat>();
  std::set<std::vector<int>> accepted;  // (type, format) pairs as ints, position by position
  uint64_t offers = 0;
  for (int junk = 0; junk < 2; ++junk) {
    std::vector<DynamicPluginTensorDesc> io(static_cast<size_t>(n));
    std::vector<int> chosen;
    std::set<std::vector<int>> found;
    std::function<void(int)> search = [&](int pos) {
      if (pos == n) {
        found.insert(chosen);
        return;
      }
      for (int ty = 0; ty < types; ++ty) {
        for (int fo = 0; fo < formats; ++fo) {
          for (int later = pos + 1; later < n; ++later) {  // undefined for the plugin: junk
            io[static_cast<size_t>(later)].desc.type = static_cast<DataType>(junk ? types - 1 : 0);
            io[static_cast<size_t>(later)].desc.format = static_cast<TensorFormat>(junk ? formats - 1 : 1);
          }
          io[static_cast<size_t>(pos)].desc.type = static_cast<DataType>(ty);
          io[static_cast<size_t>(pos)].desc.format = static_cast<TensorFormat>(fo);
          ++offers;
          if (!build->supportsFormatCombination(pos, io.data(), nb_in, nb_out)) continue;
          chosen.push_back(ty);
          chosen.push_back(fo);
          search(pos + 1);
          chosen.resize(chosen.size() - 2);
          io[static_cast<size_t>(pos)].desc.type = static_cast<DataType>(ty);  // restored for the next candidate
          io[static_cast<size_t>(pos)].desc.format = static_cast<TensorFormat>(fo);
        }
      }
    };
    search(0);
    if (junk == 0) {
      accepted = found;
    } else {
      Check(found == accepted, std::string(text.op) + ": the format search does not depend on later positions");
    }
  }
  std::set<std::vector<int>> want;
  for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
    std::vector<int> combo;
    for (char kind : kinds) {
      combo.push_back(static_cast<int>(kind == 'I' ? DataType::kINT32 : kind == 'B' ? DataType::kINT8 : t));
      combo.push_back(static_cast<int>(TensorFormat::kLINEAR));
    }
    want.insert(combo);
  }
  Check(!accepted.empty() && accepted == want,
        std::string(text.op) + ": TensorRT's format search over " + std::to_string(types) + " types x " +
            std::to_string(formats) + " formats (" + std::to_string(offers) + " offers) finds exactly " +
            std::to_string(want.size()) + " combinations, int32 indices and T float32 or float16 throughout, " +
            "linear; found " + std::to_string(accepted.size()));
}

struct Plugin {
  IPluginV3* v3 = nullptr;
  IPluginV3OneCore* core = nullptr;
  IPluginV3OneBuild* build = nullptr;
  IPluginV3OneRuntime* runtime = nullptr;
  explicit Plugin(IPluginV3* p) : v3(p) {
    if (!p) return;
    core = static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
    build = static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
    runtime = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  }
  ~Plugin() { delete v3; }
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s libbucketrt_trt.so [number of ops with CUDA kernels]\n", argv[0]);
    return 2;
  }
  const int expected_creators = argc == 3 ? std::atoi(argv[2]) : 2;
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    std::fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  using SetLoggerFinder = void (*)(ILoggerFinder*);
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
  auto set_logger_finder = reinterpret_cast<SetLoggerFinder>(dlsym(library, "setLoggerFinder"));
  Check(get_creators && set_logger_finder, "the library exports getCreators and setLoggerFinder");
  if (!get_creators || !set_logger_finder) return 1;
  Logger logger;
  Finder finder(&logger);
  set_logger_finder(&finder);

  // ---- creators --------------------------------------------------------------------------------
  int32_t count = -1;
  IPluginCreatorInterface* const* creators = get_creators(count);
  Check(count == expected_creators && creators != nullptr,
        "getCreators gives " + std::to_string(expected_creators) + " creators (the ops with CUDA kernels), got " +
            std::to_string(count));
  IPluginCreatorV3One* sign = nullptr;
  IPluginCreatorV3One* lsh = nullptr;
  for (int i = 0; i < count; ++i) {
    Check(std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0,
          "creator " + std::to_string(i) + " is an IPluginCreatorV3One");
    auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
    Check(std::strcmp(c->getPluginVersion(), "1") == 0 && std::strcmp(c->getPluginNamespace(), "bucketrt") == 0,
          std::string(c->getPluginName()) + ": version '1', namespace 'bucketrt'");
    if (std::strcmp(c->getPluginName(), "SignHash") == 0) sign = c;
    if (std::strcmp(c->getPluginName(), "LSHCumulation") == 0) lsh = c;
  }
  Check(sign && lsh, "creators named SignHash and LSHCumulation");
  if (!sign || !lsh) return 1;

  // ---- every creator, with its fields as TensorRT's ONNX parser builds them ---------------------
  // The parser asks getFieldNames and converts the node's attribute of each name to that field's
  // type: INT to kINT32 (one value), FLOAT to kFLOAT32 (one value), STRING to kCHAR with the NUL
  // counted in length. The nodes'
  // attributes and every op's tensors come from trt_check_ops.h, generated from the spec.
  {
    int seen = 0;
    for (const OpText& node : trt_check_ops::OpTexts()) {
      IPluginCreatorV3One* creator = nullptr;
      for (int i = 0; i < count; ++i) {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), node.op) == 0) creator = c;
      }
      if (creator == nullptr) continue;  // an op without a CUDA kernel has no creator
      ++seen;
      const PluginFieldCollection* asked = creator->getFieldNames();
      bool types_ok = asked != nullptr && asked->nbFields == static_cast<int32_t>(node.values.size());
      Fields f;
      std::string metadata = std::string(node.op) + "(";
      for (size_t k = 0; types_ok && k < node.values.size(); ++k) {
        const trt_check_ops::Value& v = node.values[k];
        const PluginField& field = asked->fields[k];
        const PluginFieldType want = v.text != nullptr ? PluginFieldType::kCHAR
                                     : v.is_float      ? PluginFieldType::kFLOAT32
                                                       : PluginFieldType::kINT32;
        types_ok = std::strcmp(field.name, v.name) == 0 && field.type == want;
        std::string shown = v.text != nullptr ? v.text : std::to_string(v.number);
        if (v.text != nullptr) {
          f.ParserStr(field.name, v.text);
        } else if (v.is_float) {
          f.Float(field.name, static_cast<float>(v.real));
          char text[40];  // the plugin's metadata: the float32 the parser gave, to 17 digits
          std::snprintf(text, sizeof text, "%.17g", static_cast<double>(static_cast<float>(v.real)));
          shown = text;
        } else {
          f.Int(field.name, v.number);
        }
        metadata += (k ? "," : "") + std::string(v.name) + "=" + shown;
      }
      metadata += ")";
      Check(types_ok, std::string(node.op) +
                          ": getFieldNames lists its attributes, ints as kINT32, floats as kFLOAT32, strings as kCHAR");
      logger.messages.clear();
      Plugin p(creator->createPlugin("parsed", f.Get(), TensorRTPhase::kBUILD));
      Check(p.build != nullptr && logger.messages.empty() && p.build->getMetadataString() == metadata,
            std::string(node.op) + ": createPlugin on the parser's fields gives " +
                (p.build != nullptr ? p.build->getMetadataString() : "nothing: " + logger.Last()));
      if (p.build != nullptr) {
        CheckSymbolicShapes(node, p.build);
        CheckFormatSearch(node, p.build);
      }
      if (p.runtime == nullptr) continue;
      Plugin again(creator->createPlugin("parsed", p.runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME));
      Check(again.build != nullptr && again.build->getMetadataString() == metadata,
            std::string(node.op) + ": its serialised fields give the same plugin back");
    }
    Check(seen == count, "every creator was given the parser's fields: " + std::to_string(seen) + " of " +
                             std::to_string(count));
  }

  const PluginFieldCollection* names = sign->getFieldNames();
  Check(names->nbFields == 3 && std::strcmp(names->fields[0].name, "num_hash") == 0 &&
            names->fields[0].type == PluginFieldType::kINT32 && std::strcmp(names->fields[2].name, "transform") == 0 &&
            names->fields[2].type == PluginFieldType::kCHAR,
        "SignHash's fields: num_hash (kINT32), hash_code_len (kINT32), transform (kCHAR)");

  // ---- createPlugin: fields and the spec's checks ----------------------------------------------
  auto expect_refusal = [&](Fields& fields, const std::string& message) {
    logger.messages.clear();
    IPluginV3* p = sign->createPlugin("bad", fields.Get(), TensorRTPhase::kBUILD);
    Check(p == nullptr && logger.Last() == message, "refused: " + message + " [logged: " + logger.Last() + "]");
    delete p;
  };
  {
    Fields f;
    f.Int("num_hash", 4).Int("hash_code_len", 8).Str("foo", "x").Int("bar", 1);
    expect_refusal(f, "SignHash: unknown attribute(s) ['bar', 'foo'] (node 'bad')");
  }
  {
    Fields f;
    f.Int("hash_code_len", 8);
    expect_refusal(f, "SignHash: attribute 'num_hash' is required (node 'bad')");
  }
  {
    Fields f;
    f.Int("num_hash", 4).Int("hash_code_len", 8).Str("transform", "fourier");
    expect_refusal(f, "SignHash: attribute 'transform' must be one of ['hadamard', 'gaussian'], got 'fourier' "
                      "(node 'bad')");
  }
  {
    Fields f;
    f.Float("num_hash", 4.0f).Int("hash_code_len", 8);
    expect_refusal(f, "SignHash: attribute 'num_hash' must be an int, got 4.0 (node 'bad')");
  }
  {
    Fields f;
    f.Int("num_hash", 0).Int("hash_code_len", 8);
    expect_refusal(f, "SignHash: attribute 'num_hash' must be >= 1, got 0 (node 'bad')");
  }
  {
    Fields f;
    f.Int("num_hash", 4).Int("hash_code_len", 40);
    expect_refusal(f, "SignHash: attribute 'hash_code_len' must be <= 30, got 40 (node 'bad')");
  }
  {
    // A list where an int belongs: the wrong type, in the reference's words (never "required").
    Fields f;
    f.Ints("num_hash", {1, 2}).Int("hash_code_len", 8);
    expect_refusal(f, "SignHash: attribute 'num_hash' must be an int, got [1, 2] (node 'bad')");
  }
  {
    Fields f;
    f.Long("num_hash", int64_t{1} << 31).Int("hash_code_len", 8);
    expect_refusal(f, "SignHash: attribute 'num_hash' must be <= 2147483647, got 2147483648 (node 'bad')");
  }
  {
    Fields f;
    f.Int("num_hash", 4).Int("hash_code_len", 8).Int("transform", 1);
    expect_refusal(f, "SignHash: attribute 'transform' must be a string, got 1 (node 'bad')");
  }
  {
    // The routing attributes are the op's own: accepted, whatever else the node carries.
    Fields f;
    f.Int("num_hash", 4).Int("hash_code_len", 8).Str("plugin_version", "1").Str("plugin_namespace", "bucketrt");
    logger.messages.clear();
    IPluginV3* p = sign->createPlugin("routed", f.Get(), TensorRTPhase::kBUILD);
    Check(p != nullptr && logger.messages.empty(), "the routing attributes plugin_version/plugin_namespace are accepted");
    delete p;
  }
  {
    // Allowed values (a 0/1 flag), from the spec like every bound.
    Fields f;
    f.Int("hashtable_capacity", 8).Int("deterministic", 2);
    logger.messages.clear();
    IPluginV3* p = lsh->createPlugin("bad", f.Get(), TensorRTPhase::kBUILD);
    const std::string want = "LSHCumulation: attribute 'deterministic' must be one of [0, 1], got 2 (node 'bad')";
    Check(p == nullptr && logger.Last() == want, "refused: " + want + " [logged: " + logger.Last() + "]");
    delete p;
  }

  Fields sign_fields;
  sign_fields.Int("num_hash", 4).Long("hash_code_len", 8).Str("transform", "hadamard");
  sign_fields.Str("plugin_version", "1").Str("plugin_namespace", "bucketrt");  // ignored
  Plugin sh(sign->createPlugin("sh", sign_fields.Get(), TensorRTPhase::kBUILD));
  Check(sh.v3 && sh.core && sh.build && sh.runtime, "SignHash plugin with its core, build and runtime interfaces");
  if (!sh.build) return 1;
  Check(std::strcmp(sh.core->getPluginName(), "SignHash") == 0 && std::strcmp(sh.core->getPluginVersion(), "1") == 0 &&
            std::strcmp(sh.core->getPluginNamespace(), "bucketrt") == 0,
        "the plugin's name, version and namespace match its creator's");
  Check(std::string(sh.build->getMetadataString()) == "SignHash(num_hash=4,hash_code_len=8,transform=hadamard)",
        std::string("metadata: ") + sh.build->getMetadataString());

  // ---- types and formats -------------------------------------------------------------------------
  Check(sh.build->getNbOutputs() == 1, "SignHash has 1 output");
  DataType out[1];
  for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
    const DataType in[3] = {DataType::kINT32, t, t};
    out[0] = DataType::kBOOL;
    Check(sh.build->getOutputDataTypes(out, 1, in, 3) == 0 && out[0] == DataType::kINT32,
          "SignHash's hash is int32 whatever T");
  }
  {
    logger.messages.clear();
    const DataType in[3] = {DataType::kINT32, DataType::kHALF, DataType::kFLOAT};
    const bool refused = sh.build->getOutputDataTypes(out, 1, in, 3) != 0;
    Check(refused && logger.Last() ==
                         "SignHash: input 'projection' must be float16 like input 'vector', got float32 (node 'sh')",
          "mixed float types refused: " + logger.Last());
    logger.messages.clear();
    const DataType in64[3] = {DataType::kINT64, DataType::kFLOAT, DataType::kFLOAT};
    const bool refused64 = sh.build->getOutputDataTypes(out, 1, in64, 3) != 0;
    Check(refused64 && logger.Last() == "SignHash: input 'mask' must be int32, got int64 (node 'sh')",
          "an int64 mask refused: " + logger.Last());
  }
  {
    auto combo = [&](std::vector<DataType> types, int pos, TensorFormat format = TensorFormat::kLINEAR) {
      std::vector<DynamicPluginTensorDesc> io(4);
      for (size_t i = 0; i < types.size(); ++i) {
        io[i].desc.type = types[i];
        io[i].desc.format = i == static_cast<size_t>(pos) ? format : TensorFormat::kLINEAR;
      }
      return sh.build->supportsFormatCombination(pos, io.data(), 3, 1);
    };
    const DataType I = DataType::kINT32, F = DataType::kFLOAT, H = DataType::kHALF;
    Check(combo({I}, 0) && !combo({F}, 0) && !combo({DataType::kINT64}, 0), "mask: int32 only");
    Check(combo({I, F}, 1) && combo({I, H}, 1) && !combo({I, DataType::kBF16}, 1), "vector: float32 or float16");
    Check(combo({I, H, H}, 2) && !combo({I, H, F}, 2) && combo({I, F, F}, 2), "projection: vector's type");
    Check(combo({I, F, F, I}, 3) && !combo({I, F, F, F}, 3), "hash: int32");
    Check(!combo({I}, 0, TensorFormat::kCHW32), "linear format only");
  }

  // ---- output shapes ------------------------------------------------------------------------------
  {
    ConstantBuilder builder;
    DimsExprs in[3]{};
    const int64_t sizes[3][3] = {{2, 16, 0}, {2, 16, 64}, {1, 3, 64}};
    const int ranks[3] = {2, 3, 3};
    for (int i = 0; i < 3; ++i) {
      in[i].nbDims = ranks[i];
      for (int a = 0; a < ranks[i]; ++a) in[i].d[a] = builder.constant(sizes[i][a]);
    }
    DimsExprs shape[1]{};
    const bool ok = sh.build->getOutputShapes(in, 3, nullptr, 0, shape, 1, builder) == 0;
    Check(ok && shape[0].nbDims == 3 && shape[0].d[0] == in[0].d[0] && shape[0].d[1] == in[0].d[1] &&
              shape[0].d[2]->isConstant() && shape[0].d[2]->getConstantValue() == 4,
          "SignHash's hash is [B, N, num_hash] = [mask dim 0, mask dim 1, constant 4]");
    in[1].nbDims = 2;
    logger.messages.clear();
    const bool refused = sh.build->getOutputShapes(in, 3, nullptr, 0, shape, 1, builder) != 0;
    Check(refused && logger.Last() == "SignHash: input 'vector' must have rank 3 [B,N,D], got rank 2 (node 'sh')",
          "a rank-2 vector refused: " + logger.Last());
  }

  // ---- configure, workspace, shape changes ------------------------------------------------------
  const Dims mask_min = MakeDims({1, 1}), mask_opt = MakeDims({2, 128}), mask_max = MakeDims({8, 4096});
  const Dims vec_min = MakeDims({1, 1, 64}), vec_opt = MakeDims({2, 128, 64}), vec_max = MakeDims({8, 4096, 64});
  const Dims proj = MakeDims({1, 3, 64});
  {
    DynamicPluginTensorDesc in[3] = {Dynamic(DataType::kINT32, mask_min, mask_opt, mask_max),
                                     Dynamic(DataType::kHALF, vec_min, vec_opt, vec_max),
                                     Dynamic(DataType::kHALF, proj, proj, proj)};
    DynamicPluginTensorDesc o[1] = {Dynamic(DataType::kINT32, MakeDims({1, 1, 4}), MakeDims({2, 128, 4}),
                                            MakeDims({8, 4096, 4}))};
    logger.messages.clear();
    Check(sh.build->configurePlugin(in, 3, o, 1) == 0 && logger.messages.empty(), "configurePlugin on a valid profile");
    Check(sh.build->getWorkspaceSize(in, 3, o, 1) == 0, "SignHash with D = 64 needs no workspace");
    // A profile whose min shapes the op refuses: a warning, not a failure.
    in[1].min = MakeDims({1, 2, 64});
    logger.messages.clear();
    const bool configured = sh.build->configurePlugin(in, 3, o, 1) == 0;
    Check(configured && logger.messages.size() == 1 &&
              logger.Last().find("SignHash: input 'vector' dim 1 (N) is 2, but input 'mask' says N=1 (node 'sh'); "
                                 "inputs of the optimisation profile's min shapes") == 0,
          "a profile admitting refused shapes warns: " + logger.Last());

    const PluginTensorDesc good[3] = {Desc(DataType::kINT32, MakeDims({2, 4})), Desc(DataType::kFLOAT, MakeDims({2, 4, 64})),
                                      Desc(DataType::kFLOAT, proj)};
    const PluginTensorDesc hash[1] = {Desc(DataType::kINT32, MakeDims({2, 4, 4}))};
    Check(sh.runtime->onShapeChange(good, 3, hash, 1) == 0, "onShapeChange on valid shapes");
    PluginTensorDesc bad[3] = {good[0], Desc(DataType::kFLOAT, MakeDims({2, 5, 64})), good[2]};
    logger.messages.clear();
    const bool mismatch_refused = sh.runtime->onShapeChange(bad, 3, hash, 1) != 0;
    Check(mismatch_refused &&
              logger.Last() == "SignHash: input 'vector' dim 1 (N) is 5, but input 'mask' says N=4 (node 'sh')",
          "onShapeChange refuses mismatched shapes: " + logger.Last());
    bad[1] = Desc(DataType::kFLOAT, MakeDims({2, 4, 48}));
    bad[2] = Desc(DataType::kFLOAT, MakeDims({1, 3, 48}));
    logger.messages.clear();
    const bool d_refused = sh.runtime->onShapeChange(bad, 3, hash, 1) != 0;
    Check(d_refused &&
              logger.Last() == "SignHash: input 'vector' dim 2 (D) must be a power of two for transform='hadamard', "
                               "got 48 (node 'sh')",
          "onShapeChange runs the op's own checks: " + logger.Last());
    logger.messages.clear();
    const void* inputs[3] = {nullptr, nullptr, nullptr};
    void* outputs[1] = {nullptr};
    const bool enqueue_refused = sh.runtime->enqueue(bad, hash, inputs, outputs, nullptr, nullptr) != 0;
    Check(enqueue_refused &&
              logger.Last().find("SignHash: input 'vector' dim 2 (D) must be a power of two") == 0,
          "enqueue refuses bad shapes before touching the GPU: " + logger.Last());
  }
  {
    // D > 1024 with hadamard: SignHash keeps the rows in the workspace.
    const Dims big = MakeDims({8, 4096, 2048}), big_proj = MakeDims({1, 3, 2048});
    DynamicPluginTensorDesc in[3] = {Dynamic(DataType::kINT32, mask_min, mask_opt, mask_max),
                                     Dynamic(DataType::kFLOAT, MakeDims({1, 1, 2048}), MakeDims({2, 128, 2048}), big),
                                     Dynamic(DataType::kFLOAT, big_proj, big_proj, big_proj)};
    DynamicPluginTensorDesc o[1] = {Dynamic(DataType::kINT32, MakeDims({1, 1, 4}), MakeDims({2, 128, 4}),
                                            MakeDims({8, 4096, 4}))};
    Check(sh.build->getWorkspaceSize(in, 3, o, 1) > 0, "SignHash with D = 2048 declares a workspace");
  }

  // ---- serialisation and cloning -----------------------------------------------------------------
  {
    const PluginFieldCollection* saved = sh.runtime->getFieldsToSerialize();
    // The three attributes, then the declared workspace (trt_workspace_check.cc follows its journey).
    Check(saved && saved->nbFields == 4 && saved->fields[0].type == PluginFieldType::kINT64 &&
              saved->fields[2].type == PluginFieldType::kCHAR &&
              std::strcmp(saved->fields[3].name, "bucketrt_workspace_bytes") == 0 &&
              saved->fields[3].type == PluginFieldType::kINT64,
          "serialised fields: the three attributes (ints as kINT64, the string as kCHAR) and the declared workspace");
    Plugin again(sign->createPlugin("sh", saved, TensorRTPhase::kRUNTIME));
    Check(again.build && std::string(again.build->getMetadataString()) == sh.build->getMetadataString(),
          "createPlugin(kRUNTIME) on the serialised fields gives the same plugin");
    Plugin copy(sh.v3->clone());
    Check(copy.build && std::string(copy.build->getMetadataString()) == sh.build->getMetadataString(),
          "clone() keeps the attributes");
    Plugin attached(sh.runtime->attachToContext(nullptr));
    Check(attached.build && std::string(attached.build->getTimingCacheID()) == sh.build->getTimingCacheID(),
          "attachToContext() gives a copy");
  }

  // ---- LSHCumulation: shapes from input dims, T on the output, a dense-mode workspace -------------
  {
    Fields f;
    f.Int("hashtable_capacity", 256);
    Plugin p(lsh->createPlugin("lsh", f.Get(), TensorRTPhase::kBUILD));
    Check(p.build != nullptr, "LSHCumulation plugin ('deterministic' defaulted)");
    if (!p.build) return 1;
    Check(std::string(p.build->getMetadataString()) == "LSHCumulation(hashtable_capacity=256,deterministic=0)",
          std::string("metadata: ") + p.build->getMetadataString());
    for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
      const DataType in[5] = {DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kINT32, t};
      out[0] = DataType::kBOOL;
      Check(p.build->getOutputDataTypes(out, 1, in, 5) == 0 && out[0] == t, "LSHCumulation's output is T");
    }
    ConstantBuilder builder;
    const int64_t sizes[5][3] = {{2, 10, 0}, {2, 10, 8}, {2, 12, 0}, {2, 12, 8}, {2, 12, 64}};
    const int ranks[5] = {2, 3, 2, 3, 3};
    DimsExprs in[5]{};
    for (int i = 0; i < 5; ++i) {
      in[i].nbDims = ranks[i];
      for (int a = 0; a < ranks[i]; ++a) in[i].d[a] = builder.constant(sizes[i][a]);
    }
    DimsExprs shape[1]{};
    Check(p.build->getOutputShapes(in, 5, nullptr, 0, shape, 1, builder) == 0 && shape[0].nbDims == 3 &&
              shape[0].d[0] == in[0].d[0] && shape[0].d[1] == in[0].d[1] && shape[0].d[2] == in[4].d[2],
          "LSHCumulation's output is [B, Nq, D] = [query_mask 0, query_mask 1, value 2]");
    auto lsh_inputs = [&](int64_t b, int64_t nq, int64_t nk) {
      return std::vector<Dims>{MakeDims({b, nq}), MakeDims({b, nq, 8}), MakeDims({b, nk}), MakeDims({b, nk, 8}),
                               MakeDims({b, nk, 64})};
    };
    const std::vector<Dims> lo = lsh_inputs(1, 1, 1), mid = lsh_inputs(2, 128, 128), hi = lsh_inputs(8, 4096, 4096);
    std::vector<DynamicPluginTensorDesc> din(5);
    for (int i = 0; i < 5; ++i) din[i] = Dynamic(i == 4 ? DataType::kFLOAT : DataType::kINT32, lo[i], mid[i], hi[i]);
    DynamicPluginTensorDesc dout[1] = {Dynamic(DataType::kFLOAT, MakeDims({1, 1, 64}), MakeDims({2, 128, 64}),
                                               MakeDims({8, 4096, 64}))};
    const size_t at_max = p.build->getWorkspaceSize(din.data(), 5, dout, 1);
    for (int i = 0; i < 5; ++i) din[i] = Dynamic(din[i].desc.type, lo[i], mid[i], mid[i]);
    const size_t at_mid = p.build->getWorkspaceSize(din.data(), 5, dout, 1);
    Check(at_max > 0 && at_max >= at_mid,
          "LSHCumulation's workspace: " + std::to_string(at_max) + " bytes up to batch 8, " + std::to_string(at_mid) +
              " up to batch 2");
  }

  std::printf("%d failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
