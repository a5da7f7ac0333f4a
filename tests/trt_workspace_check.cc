// The TensorRT plugins' workspace over whole optimisation profiles, without a GPU: for every op,
// profiles whose shapes take every way the op's plan has (LSHCumulation's dense and sorted ways and
// the switch between them, SignHash's rows in the workspace, SortedChunkAttention's rounds), the
// workspace the plugin declares (configurePlugin + getWorkspaceSize, what TensorRT allocates once)
// against what cuda::Plan needs for shapes swept inside the profile: every one must fit, and
// onShapeChange must take it. Then the declared size's journey (serialised, read back, a larger
// shape refused) and a profile whose bound cannot be planned (a build error with its cause).
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
#include <functional>
#include <map>
#include <random>
#include <string>
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

// One profile of one op: each symbol's range (value = lo + step * k), and the inputs' dims and
// types as functions of the symbols (monotone, so the profile's min and max are the ranges' ends).
struct Range {
  int64_t lo, hi, step;
};
struct Profile {
  std::string what;
  const char* op;
  std::function<void(Fields&)> attributes;
  std::map<std::string, Range> ranges;
  std::function<std::vector<std::vector<int64_t>>(Symbols&)> dims;
  std::vector<DataType> types;
};

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

const char* TypeName(DataType t) { return t == DataType::kINT32 ? "int32" : t == DataType::kHALF ? "float16" : "float32"; }

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

// Sweeps `samples` random shapes of the profile plus every value of `exhaustive` (the others at
// their max) and the corners; returns the number of shapes planned.
void Sweep(const Profile& profile, Logger& logger, int samples, const char* exhaustive = nullptr) {
  const bucketrt::spec::OpSpec* op = FindOp(profile.op);
  IPluginCreatorV3One* creator = FindCreator(profile.op);
  if (op == nullptr || creator == nullptr) {
    Check(false, std::string(profile.op) + ": no creator");
    return;
  }
  Fields fields;
  profile.attributes(fields);
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
  const std::vector<std::vector<int64_t>> min_dims = profile.dims(lo), max_dims = profile.dims(hi);
  const int inputs = op->num_inputs, outputs = op->num_outputs;
  std::vector<DynamicPluginTensorDesc> in(static_cast<size_t>(inputs)), out(static_cast<size_t>(outputs));
  for (int i = 0; i < inputs; ++i) {
    in[i].desc.type = profile.types[i];
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
  if (exhaustive != nullptr) {
    const Range& r = profile.ranges.at(exhaustive);
    for (int64_t v = r.lo; v <= r.hi; v += r.step) {
      Symbols s = hi;
      s[exhaustive] = v;
      shapes.push_back(s);
    }
  }
  for (int k = 0; k < samples; ++k) {
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
  for (Symbols& s : shapes) {
    const std::vector<std::vector<int64_t>> dims = profile.dims(s);
    size_t need = 0;
    if (!Need(*op, attrs, dims, profile.types, &need).empty()) {
      ++refused_by_op;
      continue;
    }
    ++planned;
    largest = std::max(largest, need);
    if (need > declared) {
      ++over;
      if (first_problem.empty()) first_problem = "needs " + std::to_string(need);
    }
    const std::vector<PluginTensorDesc> descs = RuntimeDescs(dims, profile.types);
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

std::vector<DataType> Types(std::initializer_list<DataType> types) { return types; }

}  // namespace

int main() {
  Logger logger;
  Finder finder(&logger);
  setLoggerFinder(&finder);
  const DataType I = DataType::kINT32, F = DataType::kFLOAT, H = DataType::kHALF;

  auto lsh_dims = [](Symbols& s) {
    return std::vector<std::vector<int64_t>>{{s["B"], s["Nq"]}, {s["B"], s["Nq"], s["m"]}, {s["B"], s["Nk"]},
                                             {s["B"], s["Nk"], s["m"]}, {s["B"], s["Nk"], s["D"]}};
  };
  auto lsh = [](int capacity, int deterministic) {
    return [=](Fields& f) { f.Int("hashtable_capacity", capacity).Int("deterministic", deterministic); };
  };
  const std::vector<DataType> lsh_types = {I, I, I, I, F};
  // The issue's case: sorted slices cut by Nk; before, 823 values of N in [4096, 16384] needed more
  // than N = 16384.
  Sweep({"LSHCumulation sorted, B=1 m=64 D=64, every N in [4096, 16384]", "LSHCumulation", lsh(512, 1),
         {{"B", {1, 1, 1}}, {"Nq", {4096, 16384, 1}}, {"Nk", {4096, 16384, 1}}, {"m", {64, 64, 1}}, {"D", {64, 64, 1}}},
         [&](Symbols& s) { s["Nq"] = s["Nk"]; return lsh_dims(s); }, lsh_types},
        logger, 0, "Nk");
  Sweep({"LSHCumulation sorted, every D in [1, 512]", "LSHCumulation", lsh(512, 1),
         {{"B", {1, 4, 1}}, {"Nq", {1, 8192, 1}}, {"Nk", {1, 8192, 1}}, {"m", {1, 64, 1}}, {"D", {1, 512, 1}}},
         lsh_dims, lsh_types},
        logger, 3000, "D");
  Sweep({"LSHCumulation dense, every m in [1, 64]", "LSHCumulation", lsh(512, 0),
         {{"B", {1, 16, 1}}, {"Nq", {1, 4096, 1}}, {"Nk", {1, 4096, 1}}, {"m", {1, 64, 1}}, {"D", {1, 160, 1}}},
         lsh_dims, lsh_types},
        logger, 3000, "m");
  // capacity 65536: m * D * 65536 * 4 bytes crosses the dense tables' 256 MiB inside the profile.
  Sweep({"LSHCumulation dense and sorted (capacity 65536), every D in [1, 128]", "LSHCumulation", lsh(65536, 0),
         {{"B", {1, 8, 1}}, {"Nq", {1, 4096, 1}}, {"Nk", {1, 4096, 1}}, {"m", {1, 64, 1}}, {"D", {1, 128, 1}}},
         lsh_dims, lsh_types},
        logger, 3000, "D");

  Sweep({"SignHash hadamard D=2048 (rows in the workspace)", "SignHash",
         [](Fields& f) { f.Int("num_hash", 4).Int("hash_code_len", 8).ParserStr("transform", "hadamard"); },
         {{"B", {1, 8, 1}}, {"N", {1, 4096, 1}}},
         [](Symbols& s) {
           return std::vector<std::vector<int64_t>>{{s["B"], s["N"]}, {s["B"], s["N"], 2048}, {1, 3, 2048}};
         },
         Types({I, H, H})},
        logger, 500);
  Sweep({"SignHash gaussian", "SignHash",
         [](Fields& f) { f.Int("num_hash", 4).Int("hash_code_len", 8).ParserStr("transform", "gaussian"); },
         {{"B", {1, 8, 1}}, {"N", {1, 4096, 1}}, {"D", {1, 4096, 1}}},
         [](Symbols& s) {
           return std::vector<std::vector<int64_t>>{{s["B"], s["N"]}, {s["B"], s["N"], s["D"]}, {1, s["D"], 32}};
         },
         Types({I, F, F})},
        logger, 500, "D");
  Sweep({"ArgmaxHash", "ArgmaxHash", [](Fields& f) { f.Int("num_hash", 2); },
         {{"B", {1, 8, 1}}, {"H", {1, 12, 1}}, {"N", {1, 4096, 1}}, {"D", {1, 128, 1}}},
         [](Symbols& s) {
           return std::vector<std::vector<int64_t>>{
               {s["B"], s["N"]}, {s["B"], s["H"], s["N"], s["D"]}, {s["H"], s["D"], 32}, {1}};
         },
         Types({I, F, F, I})},
        logger, 500);
  Sweep({"BucketSum, every N in [1, 4096]", "BucketSum", [](Fields& f) { f.Int("num_buckets", 64); },
         {{"G", {1, 96, 1}}, {"N", {1, 4096, 1}}, {"D", {1, 256, 1}}},
         [](Symbols& s) {
           return std::vector<std::vector<int64_t>>{{s["G"], s["N"]}, {s["G"], s["N"]}, {s["G"], s["N"], s["D"]}};
         },
         Types({I, F, F})},
        logger, 2000, "N");
  Sweep({"Top1Dispatch", "Top1Dispatch", [](Fields& f) { f.Int("expert_capacity", 64); },
         {{"B", {1, 8, 1}}, {"S", {1, 4096, 1}}, {"E", {1, 128, 1}}},
         [](Symbols& s) { return std::vector<std::vector<int64_t>>{{s["B"], s["S"], s["E"]}}; }, Types({F})},
        logger, 1000);
  auto chunk_dims = [](Symbols& s) {
    const int64_t n = s["K"] * 64;  // whole chunks of 64 (K = 1: one chunk, plain attention)
    return std::vector<std::vector<int64_t>>{{s["B"], s["H"], n, s["D"]}, {s["B"], s["H"], n, s["D"]},
                                             {s["B"], s["H"], n, s["D"]}, {s["B"], n}, {s["B"], s["H"], s["R"], n}};
  };
  Sweep({"SortedChunkAttention (one chunk to 64, 1 to 8 rounds)", "SortedChunkAttention",
         [](Fields& f) { f.Int("chunk_length", 64).Int("chunks_before", 1).Int("max_length", 4096); },
         {{"B", {1, 4, 1}}, {"H", {1, 12, 1}}, {"K", {1, 64, 1}}, {"D", {1, 128, 1}}, {"R", {1, 8, 1}}}, chunk_dims,
         Types({F, F, F, I, I})},
        logger, 1000, "K");
  Sweep({"ExpertFFN", "ExpertFFN", [](Fields& f) { f.ParserStr("activation", "relu"); },
         {{"B", {1, 8, 1}}, {"S", {1, 1024, 1}}, {"D", {1, 256, 1}}, {"F", {1, 1024, 1}}, {"E", {1, 64, 1}}},
         [](Symbols& s) {
           return std::vector<std::vector<int64_t>>{{s["B"], s["S"], s["D"]}, {s["B"], s["S"]}, {s["E"]},
                                                    {s["B"], s["S"]}, {s["E"], s["F"], s["D"]},
                                                    {s["E"], s["D"], s["F"]}};
         },
         Types({F, I, I, F, F, F})},
        logger, 1000);

  // ---- the declared size travels with the plugin -----------------------------------------------
  {
    IPluginCreatorV3One* creator = FindCreator("SignHash");
    Fields f;
    f.Int("num_hash", 4).Int("hash_code_len", 8).ParserStr("transform", "hadamard");
    Plugin built(creator->createPlugin("sh", f.Get(), TensorRTPhase::kBUILD));
    std::vector<DynamicPluginTensorDesc> in(3), out(1);
    const std::vector<std::vector<int64_t>> lo = {{1, 1}, {1, 1, 2048}, {1, 3, 2048}},
                                            hi = {{2, 512}, {2, 512, 2048}, {1, 3, 2048}};
    for (int i = 0; i < 3; ++i) {
      in[i].desc.type = i == 0 ? I : F;
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
    const std::vector<PluginTensorDesc> inside = RuntimeDescs({{2, 512}, {2, 512, 2048}, {1, 3, 2048}}, {I, F, F});
    // SignHash's rows in the workspace grow with D alone: D = 4096 is outside the profile.
    const std::vector<std::vector<int64_t>> outside_dims = {{2, 512}, {2, 512, 4096}, {1, 3, 4096}};
    const std::vector<PluginTensorDesc> outside = RuntimeDescs(outside_dims, {I, F, F});
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
      Need(*FindOp("SignHash"), attrs, outside_dims, {I, F, F}, &need);
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
    const std::vector<std::vector<int64_t>> lo = {{1, 2, 64, 64}, {1, 2, 64, 64}, {1, 2, 64, 64}, {1, 64}, {1, 2, 1, 64}},
                                            hi = {{1, 2, 8192, 64}, {1, 2, 8192, 64}, {1, 2, 8192, 64}, {1, 8192},
                                                  {1, 2, 1, 8192}};
    const DataType types[5] = {F, F, F, I, I};
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
