// The TensorRT plugins' workspace over whole optimisation profiles, without a GPU: for every op,
// profiles whose shapes take every way the op's plan has (LSHCumulation's dense and sorted ways and
// the switch between them, SignHash's rows in the workspace, SortedChunkAttention's rounds), the
// workspace the plugin declares (configurePlugin + getWorkspaceSize, what TensorRT allocates once)
// against what cuda::Plan needs for shapes swept inside the profile: every one must fit, and
// onShapeChange must take it. Then the declared size's journey (serialised, read back, a larger
// shape refused) and a profile whose bound cannot be planned (a build error with its cause).
//
// The profiles come from the table of per-op test inputs (tests/op_inputs.py): tests/test_trt_plugins.py
// writes them into a file, one per line, and runs `bucketrt_trt_workspace_check PROFILES`. A profile
// gives each symbol of the op's dims a range, a fixed value or another symbol's value times a factor;
// the tensors' dims and types are the spec's (op_specs.h), so no op is written out here.
//
// Linked statically with the plugin sources, the kernel archive and tests/radix_sort_stub.cc (CUB's
// temporary-storage formula in place of CUB's query, which needs a device): built by
// trt_plugins/CMakeLists.txt's bucketrt_trt_workspace_check target, run by
// tests/test_trt_plugins.py. Prints one line per check and a summary; exits 1 on any failure.
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"
#include "cuda/ops.h"
#include "spec_plugin.h"

#include "trt_check_support.h"

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

using namespace nvinfer1;
using trt_check::Check;
using trt_check::Fields;
using trt_check::Finder;
using trt_check::g_failures;
using trt_check::Logger;

namespace {



using Symbols = std::map<std::string, int64_t>;

// One profile of one op: each symbol's range (value = lo + step * k), fixed value, or another
// symbol's value times a factor (monotone, so the profile's min and max are the ranges' ends); its
// attributes as the parser hands them over (ints kINT32, strings kCHAR with the NUL), T's type.
struct Range {
  int64_t lo, hi, step;
};
struct Profile {
  std::string what;
  std::string op;
  std::vector<std::pair<std::string, std::string>> attributes;  // name, "i:<int>" or "s:<string>"
  std::map<std::string, Range> ranges;
  std::map<std::string, int64_t> fixed;
  std::map<std::string, std::pair<std::string, int64_t>> tied;
  DataType float_type = DataType::kFLOAT;
  int samples = 0;
  std::string exhaustive;  // "" for none
};

std::vector<std::string> Split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  if (text.empty()) return parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, separator)) parts.push_back(part);
  return parts;
}

// One line of tests/test_trt_plugins.py's workspace_profiles(): tab-separated what, op, float type,
// attributes (name=i:8,name=s:relu), ranges (B=1:8:1), fixed (D=64), tied (Nq=Nk*1), samples,
// exhaustive symbol or "-". Returns "" or what is wrong with the line.
std::string ParseProfile(const std::string& line, Profile* p) {
  const std::vector<std::string> f = Split(line, '\t');
  if (f.size() != 9) return "expected 9 tab-separated fields, got " + std::to_string(f.size());
  p->what = f[0];
  p->op = f[1];
  if (f[2] != "float32" && f[2] != "float16") return "float type " + f[2];
  p->float_type = f[2] == "float16" ? DataType::kHALF : DataType::kFLOAT;
  for (const std::string& a : Split(f[3], ',')) {
    const size_t eq = a.find('=');
    if (eq == std::string::npos || a.size() < eq + 3 || a[eq + 2] != ':') return "attribute " + a;
    p->attributes.emplace_back(a.substr(0, eq), a.substr(eq + 1));
  }
  for (const std::string& r : Split(f[4], ',')) {
    const size_t eq = r.find('=');
    const std::vector<std::string> v = Split(r.substr(eq + 1), ':');
    if (eq == std::string::npos || v.size() != 3) return "range " + r;
    p->ranges[r.substr(0, eq)] = Range{std::stoll(v[0]), std::stoll(v[1]), std::stoll(v[2])};
  }
  for (const std::string& x : Split(f[5], ',')) {
    const size_t eq = x.find('=');
    if (eq == std::string::npos) return "fixed " + x;
    p->fixed[x.substr(0, eq)] = std::stoll(x.substr(eq + 1));
  }
  for (const std::string& x : Split(f[6], ',')) {
    const size_t eq = x.find('='), star = x.find('*');
    if (eq == std::string::npos || star == std::string::npos || star < eq) return "tied " + x;
    p->tied[x.substr(0, eq)] = {x.substr(eq + 1, star - eq - 1), std::stoll(x.substr(star + 1))};
  }
  p->samples = std::stoi(f[7]);
  p->exhaustive = f[8] == "-" ? "" : f[8];
  if (!p->exhaustive.empty() && p->ranges.count(p->exhaustive) == 0) return "exhaustive " + p->exhaustive;
  return "";
}

void SetFields(const Profile& p, Fields& fields) {
  for (const auto& [name, value] : p.attributes) {
    if (value[0] == 'i') {
      fields.Int(name.c_str(), static_cast<int32_t>(std::stoll(value.substr(2))));
    } else if (value[0] == 'f') {  // as the ONNX parser gives a FLOAT attribute: kFLOAT32
      fields.Float(name.c_str(), std::stof(value.substr(2)));
    } else {
      fields.ParserStr(name.c_str(), value.substr(2).c_str());
    }
  }
}

Dims ToDims(const std::vector<int64_t>& sizes) {
  Dims d{};
  d.nbDims = static_cast<int32_t>(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) d.d[i] = sizes[i];
  return d;
}

IPluginCreatorV3One* FindCreator(const char* name) {
  int32_t count = 0;
  IPluginCreatorInterface* const* creators = getCreators(count);
  for (int i = 0; i < count; ++i) {
    auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
    if (std::strcmp(c->getPluginName(), name) == 0) return c;
  }
  return nullptr;
}

const bucketrt::spec::OpSpec* FindOp(const char* name) {
  for (const bucketrt::spec::OpSpec* op : bucketrt::spec::kAllOps) {
    if (std::strcmp(op->name, name) == 0) return op;
  }
  return nullptr;
}

const char* TypeName(DataType t) {
  return t == DataType::kINT32 ? "int32" : t == DataType::kINT8 ? "int8" : t == DataType::kHALF ? "float16" : "float32";
}

// The op's input dims for these sizes, as the spec declares them (an int attribute names its own);
// "" or the first dim the sizes leave out.
std::string SpecDims(const bucketrt::spec::OpSpec& op, const bucketrt::Attributes& attrs, const Symbols& sizes,
                     std::vector<std::vector<int64_t>>* dims) {
  dims->assign(static_cast<size_t>(op.num_inputs), {});
  for (int i = 0; i < op.num_inputs; ++i) {
    for (int a = 0; a < op.inputs[i].rank; ++a) {
      const char* symbol = op.inputs[i].dims[a];
      const auto size = sizes.find(symbol);
      const bucketrt::Attributes::Value* attribute = nullptr;
      for (const bucketrt::Attributes::Value& v : attrs.values()) {
        if (v.spec->type == bucketrt::spec::AttrType::kInt && std::strcmp(v.spec->name, symbol) == 0) attribute = &v;
      }
      if (size != sizes.end()) {
        (*dims)[i].push_back(size->second);
      } else if (attribute != nullptr) {
        (*dims)[i].push_back(attribute->int_value);
      } else {
        return std::string("the profile gives no size for ") + symbol + " (input '" + op.inputs[i].name + "')";
      }
    }
  }
  return "";
}

// The inputs' types: int32 and int8 as the spec says, T the profile's float type.
std::vector<DataType> SpecTypes(const bucketrt::spec::OpSpec& op, DataType float_type) {
  std::vector<DataType> types;
  for (int i = 0; i < op.num_inputs; ++i) {
    const bucketrt::spec::DType d = op.inputs[i].dtype;
    types.push_back(d == bucketrt::spec::DType::kInt32  ? DataType::kINT32
                    : d == bucketrt::spec::DType::kInt8 ? DataType::kINT8
                                                        : float_type);
  }
  return types;
}

// Every symbol of a shape: the sampled ones as given, the fixed ones, the tied ones from theirs.
Symbols Complete(const Profile& p, Symbols s) {
  for (const auto& [name, value] : p.fixed) s[name] = value;
  for (const auto& [name, other] : p.tied) s[name] = s.at(other.first) * other.second;
  return s;
}

// What cuda::Plan needs for these dims ("" and the bytes, or the op's refusal).
std::string Need(const bucketrt::spec::OpSpec& op, const bucketrt::Attributes& attrs,
                 const std::vector<std::vector<int64_t>>& dims, const std::vector<DataType>& types, size_t* bytes) {
  std::vector<bucketrt::TensorDesc> descs(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    descs[i].dtype = TypeName(types[i]);
    descs[i].rank = static_cast<int>(dims[i].size());
    descs[i].dims = dims[i].data();
  }
  bucketrt::Bindings env;
  std::string error = bucketrt::BindInputs(op, attrs, descs.data(), static_cast<int>(descs.size()), &env);
  if (error.empty()) error = bucketrt::cuda::Plan(op, attrs, env, bytes);
  return error;
}

struct Plugin {
  IPluginV3* v3 = nullptr;
  IPluginV3OneBuild* build = nullptr;
  IPluginV3OneRuntime* runtime = nullptr;
  explicit Plugin(IPluginV3* p) : v3(p) {
    if (!p) return;
    build = static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
    runtime = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  }
  ~Plugin() { delete v3; }
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;
};

std::vector<PluginTensorDesc> RuntimeDescs(const std::vector<std::vector<int64_t>>& dims,
                                           const std::vector<DataType>& types) {
  std::vector<PluginTensorDesc> descs(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    descs[i] = PluginTensorDesc{};
    descs[i].dims = ToDims(dims[i]);
    descs[i].type = types[i];
    descs[i].format = TensorFormat::kLINEAR;
  }
  return descs;
}

// Sweeps the profile's `samples` random shapes plus every value of its `exhaustive` symbol (the
// others at their max) and the corners.
void Sweep(const Profile& profile, Logger& logger) {
  const bucketrt::spec::OpSpec* op = FindOp(profile.op.c_str());
  IPluginCreatorV3One* creator = FindCreator(profile.op.c_str());
  if (op == nullptr || creator == nullptr) {
    Check(false, profile.op + ": no creator");
    return;
  }
  Fields fields;
  SetFields(profile, fields);
  std::vector<bucketrt::RawAttribute> raw;
  bucketrt::Attributes attrs;
  std::string error = bucketrt::trt::ReadFields(*op, fields.Get(), &raw);
  if (error.empty()) error = bucketrt::ResolveAttributes(*op, raw, &attrs);
  Plugin plugin(creator->createPlugin(profile.what.c_str(), fields.Get(), TensorRTPhase::kBUILD));
  if (!error.empty() || plugin.build == nullptr) {
    Check(false, profile.what + ": attributes refused: " + error + logger.Last());
    return;
  }
  Symbols lo, hi;
  for (const auto& [name, range] : profile.ranges) {
    lo[name] = range.lo;
    hi[name] = range.hi;
  }
  const std::vector<DataType> types = SpecTypes(*op, profile.float_type);
  std::vector<std::vector<int64_t>> min_dims, max_dims;
  error = SpecDims(*op, attrs, Complete(profile, lo), &min_dims);
  if (error.empty()) error = SpecDims(*op, attrs, Complete(profile, hi), &max_dims);
  if (!error.empty()) {
    Check(false, profile.what + ": " + error);
    return;
  }
  const int inputs = op->num_inputs, outputs = op->num_outputs;
  std::vector<DynamicPluginTensorDesc> in(static_cast<size_t>(inputs)), out(static_cast<size_t>(outputs));
  for (int i = 0; i < inputs; ++i) {
    in[i].desc.type = types[i];
    in[i].desc.format = TensorFormat::kLINEAR;
    in[i].min = ToDims(min_dims[i]);
    in[i].opt = in[i].max = ToDims(max_dims[i]);
    in[i].desc.dims = in[i].max;
  }
  logger.messages.clear();
  const bool configured = plugin.build->configurePlugin(in.data(), inputs, out.data(), outputs) == 0;
  const size_t declared = plugin.build->getWorkspaceSize(in.data(), inputs, out.data(), outputs);
  if (!configured) {
    Check(false, profile.what + ": configurePlugin failed: " + logger.Last());
    return;
  }
  std::mt19937_64 random(12345);
  std::vector<Symbols> shapes = {lo, hi};
  if (!profile.exhaustive.empty()) {
    const Range& r = profile.ranges.at(profile.exhaustive);
    for (int64_t v = r.lo; v <= r.hi; v += r.step) {
      Symbols s = hi;
      s[profile.exhaustive] = v;
      shapes.push_back(s);
    }
  }
  for (int k = 0; k < profile.samples; ++k) {
    Symbols s;
    for (const auto& [name, range] : profile.ranges) {
      const int64_t steps = (range.hi - range.lo) / range.step;
      s[name] = range.lo + range.step * static_cast<int64_t>(random() % static_cast<uint64_t>(steps + 1));
    }
    shapes.push_back(s);
  }
  size_t largest = 0;
  int planned = 0, refused_by_op = 0, over = 0, not_taken = 0;
  std::string first_problem;
  std::vector<PluginTensorDesc> out_descs(static_cast<size_t>(outputs));
  for (const Symbols& s : shapes) {
    std::vector<std::vector<int64_t>> dims;
    SpecDims(*op, attrs, Complete(profile, s), &dims);
    size_t need = 0;
    if (!Need(*op, attrs, dims, types, &need).empty()) {
      ++refused_by_op;
      continue;
    }
    ++planned;
    largest = std::max(largest, need);
    if (need > declared) {
      ++over;
      if (first_problem.empty()) first_problem = "needs " + std::to_string(need);
    }
    const std::vector<PluginTensorDesc> descs = RuntimeDescs(dims, types);
    if (plugin.runtime->onShapeChange(descs.data(), inputs, out_descs.data(), outputs) != 0) {
      ++not_taken;
      if (first_problem.empty()) first_problem = logger.Last();
    }
  }
  Check(planned > 0 && over == 0 && not_taken == 0 && refused_by_op == 0,
        profile.what + ": declared " + std::to_string(declared) + " bytes; " + std::to_string(planned) +
            " shapes planned, the largest needing " + std::to_string(largest) + "; " + std::to_string(over) +
            " over, " + std::to_string(not_taken) + " refused by onShapeChange, " + std::to_string(refused_by_op) +
            " refused by the op" + (first_problem.empty() ? "" : " (" + first_problem + ")"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s PROFILES (tests/test_trt_plugins.py writes them)\n", argv[0]);
    return 2;
  }
  Logger logger;
  Finder finder(&logger);
  setLoggerFinder(&finder);
  // The spec's input dims of an op for these sizes (no attribute-named dims here).
  auto dims_of = [](const char* op, const Symbols& sizes) {
    std::vector<std::vector<int64_t>> dims;
    const std::string error = SpecDims(*FindOp(op), bucketrt::Attributes(), sizes, &dims);
    if (!error.empty()) Check(false, std::string(op) + ": " + error);
    return dims;
  };

  // ---- every profile of the table (tests/op_inputs.py), each swept ------------------------------
  std::ifstream file(argv[1]);
  if (!file.good()) Check(false, std::string("the profiles file ") + argv[1] + " is readable");
  std::string line;
  int line_number = 0;
  while (std::getline(file, line)) {
    ++line_number;
    if (line.empty()) continue;
    Profile profile;
    const std::string error = ParseProfile(line, &profile);
    if (!error.empty()) {
      Check(false, "profiles line " + std::to_string(line_number) + ": " + error);
      continue;
    }
    Sweep(profile, logger);
  }

  // ---- the declared size travels with the plugin -----------------------------------------------
  {
    IPluginCreatorV3One* creator = FindCreator("SignHash");
    Fields f;
    f.Int("num_hash", 4).Int("hash_code_len", 8).ParserStr("transform", "hadamard");
    Plugin built(creator->createPlugin("sh", f.Get(), TensorRTPhase::kBUILD));
    std::vector<DynamicPluginTensorDesc> in(3), out(1);
    const Symbols hadamard = {{"B", 2}, {"N", 512}, {"D", 2048}, {"G", 1}, {"R", 3}, {"C", 2048}};
    Symbols smallest = hadamard, wider = hadamard;
    smallest["B"] = smallest["N"] = 1;
    wider["D"] = wider["C"] = 4096;
    const std::vector<std::vector<int64_t>> lo = dims_of("SignHash", smallest), hi = dims_of("SignHash", hadamard);
    const std::vector<DataType> types = SpecTypes(*FindOp("SignHash"), DataType::kFLOAT);
    for (int i = 0; i < 3; ++i) {
      in[i].desc.type = types[i];
      in[i].min = ToDims(lo[i]);
      in[i].opt = in[i].max = ToDims(hi[i]);
    }
    built.build->configurePlugin(in.data(), 3, out.data(), 1);
    const size_t declared = built.build->getWorkspaceSize(in.data(), 3, out.data(), 1);
    const PluginFieldCollection* saved = built.runtime->getFieldsToSerialize();
    int64_t saved_bytes = -1;
    for (int i = 0; saved != nullptr && i < saved->nbFields; ++i) {
      if (std::strcmp(saved->fields[i].name, bucketrt::trt::kDeclaredWorkspaceField) == 0 &&
          saved->fields[i].type == PluginFieldType::kINT64) {
        std::memcpy(&saved_bytes, saved->fields[i].data, sizeof saved_bytes);
      }
    }
    Check(declared > 0 && saved_bytes == static_cast<int64_t>(declared),
          "the declared workspace (" + std::to_string(declared) + " bytes) is serialised with the attributes");
    Plugin engine(creator->createPlugin("sh", saved, TensorRTPhase::kRUNTIME));
    Plugin attached(engine.runtime->attachToContext(nullptr));
    PluginTensorDesc o[1]{};
    const std::vector<PluginTensorDesc> inside = RuntimeDescs(hi, types);
    // SignHash's rows in the workspace grow with D alone: D = 4096 is outside the profile.
    const std::vector<std::vector<int64_t>> outside_dims = dims_of("SignHash", wider);
    const std::vector<PluginTensorDesc> outside = RuntimeDescs(outside_dims, types);
    logger.messages.clear();
    Check(attached.runtime->onShapeChange(inside.data(), 3, o, 1) == 0,
          "the deserialised plugin takes the profile's max shapes");
    logger.messages.clear();
    const bool refused = attached.runtime->onShapeChange(outside.data(), 3, o, 1) != 0;
    size_t need = 0;
    {
      std::vector<bucketrt::RawAttribute> raw;
      bucketrt::Attributes attrs;
      bucketrt::trt::ReadFields(*FindOp("SignHash"), f.Get(), &raw);
      bucketrt::ResolveAttributes(*FindOp("SignHash"), raw, &attrs);
      Need(*FindOp("SignHash"), attrs, outside_dims, types, &need);
    }
    const std::string want = "SignHash: these shapes need " + std::to_string(need) +
                             " bytes of workspace, more than the " + std::to_string(declared) +
                             " the engine's optimisation profile declared (shapes outside the profile the engine was "
                             "built for?) (node 'sh')";
    const std::string logged = logger.Last();
    Check(refused && need > declared && logged == want, "a shape needing more is refused: " + logged);
    logger.messages.clear();
    const void* inputs[3] = {nullptr, nullptr, nullptr};
    void* outputs[1] = {nullptr};
    char workspace[16];
    const bool enqueue_refused =
        attached.runtime->enqueue(outside.data(), o, inputs, outputs, workspace, nullptr) != 0;
    const std::string enqueue_logged = logger.Last();
    Check(enqueue_refused && enqueue_logged == want, "enqueue refuses it too, before any launch: " + enqueue_logged);
  }

  // ---- a profile without a bound is a build error with its cause ---------------------------------
  {
    IPluginCreatorV3One* creator = FindCreator("SortedChunkAttention");
    Fields f;
    f.Int("chunk_length", 64).Int("max_length", 4096);
    Plugin p(creator->createPlugin("attn", f.Get(), TensorRTPhase::kBUILD));
    std::vector<DynamicPluginTensorDesc> in(5), out(1);
    const Symbols one_chunk = {{"B", 1}, {"H", 2}, {"N", 64}, {"D", 64}, {"R", 1}};
    Symbols beyond = one_chunk;
    beyond["N"] = 8192;
    const std::vector<std::vector<int64_t>> lo = dims_of("SortedChunkAttention", one_chunk),
                                            hi = dims_of("SortedChunkAttention", beyond);
    const std::vector<DataType> types = SpecTypes(*FindOp("SortedChunkAttention"), DataType::kFLOAT);
    for (int i = 0; i < 5; ++i) {
      in[i].desc.type = types[i];
      in[i].min = ToDims(lo[i]);
      in[i].opt = in[i].max = ToDims(hi[i]);
    }
    logger.messages.clear();
    const bool failed = p.build->configurePlugin(in.data(), 5, out.data(), 1) != 0;
    const std::string configure_logged = logger.Last();
    const std::string want =
        "SortedChunkAttention: input 'query' has sequence length 8192, beyond the model's limit max_length=4096; the "
        "optimisation profile's max shapes admit no workspace bound, so the engine cannot be built (narrow the "
        "profile) (node 'attn')";
    Check(failed && configure_logged == want, "configurePlugin fails on a profile beyond max_length: " + configure_logged);
    logger.messages.clear();
    const size_t size = p.build->getWorkspaceSize(in.data(), 5, out.data(), 1);
    const std::string logged = logger.Last();
    Check(size == 0 && logged == want, "getWorkspaceSize gives no size for it and says why: " + logged);
  }

  std::printf("%d failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
