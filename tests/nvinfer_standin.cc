// A stand-in libnvinfer.so.<major> (tests/test_trt_plugins.py builds it with
// -DSTANDIN_MAJOR=<major> -Wl,-soname,libnvinfer.so.<major>): the part of TensorRT's documented
// plugin-loading contract libbucketrt_trt.so meets, and nothing of TensorRT itself.
//
//  * getInferLibMajorVersion, getPluginRegistry, getLogger: the C entry points TensorRT exports.
//  * A plugin registry whose registerCreator refuses a creator registered already (name, version,
//    namespace), as TensorRT's does, and counts what it holds.
//  * standinLoadLibrary(path, registry): IPluginRegistry::loadLibrary's documented steps, called
//    from inside this library (so a libnvinfer frame is on the stack, as in TensorRT's): dlopen the
//    library, call its setLoggerFinder with TensorRT's logger finder, then getCreators, and
//    register every creator it gives; fails (nullptr) when any registration fails.
//  * Two registries (standinRegistry(0) is getPluginRegistry's, 1 another, as trtexec's runtime
//    has its own), each counting on its own.
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

struct StandinLogger : ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::printf("[standin logger] %s\n", msg);
  }
} g_logger;

struct StandinFinder : ILoggerFinder {
  ILogger* findLogger() override { return &g_logger; }
} g_finder;

class StandinRegistry : public IPluginRegistry {
 public:
  bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const ns) noexcept override {
    auto& c = static_cast<IPluginCreatorV3One&>(creator);
    if (getCreator(c.getPluginName(), c.getPluginVersion(), ns) != nullptr) return false;
    creators_.push_back(&creator);
    namespaces_.push_back(ns != nullptr ? ns : "");
    return true;
  }
  IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override {
    *n = static_cast<int32_t>(creators_.size());
    return creators_.data();
  }
  IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version,
                                      AsciiChar const* const ns = "") noexcept override {
    for (size_t i = 0; i < creators_.size(); ++i) {
      auto* c = static_cast<IPluginCreatorV3One*>(creators_[i]);
      if (std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginVersion(), version) == 0 &&
          namespaces_[i] == (ns != nullptr ? ns : "")) {
        return creators_[i];
      }
    }
    return nullptr;
  }
  bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override {
    for (size_t i = 0; i < creators_.size(); ++i) {
      if (creators_[i] == &creator) {
        creators_.erase(creators_.begin() + static_cast<long>(i));
        namespaces_.erase(namespaces_.begin() + static_cast<long>(i));
        return true;
      }
    }
    return false;
  }
  void setErrorRecorder(IErrorRecorder* const) noexcept override {}
  IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
  bool isParentSearchEnabled() const override { return false; }
  void setParentSearchEnabled(bool const) override {}
  PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }  // standinLoadLibrary
  void deregisterLibrary(PluginLibraryHandle) noexcept override {}
  IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
  int32_t releasePluginResource(AsciiChar const*) noexcept override { return -1; }
  IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override {
    return getAllCreators(n);
  }
#if NV_TENSORRT_MAJOR < 11
  // TensorRT 10's deprecated IPluginCreator (V2) interface: bucketrt never calls it, and a registry
  // must still override it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
  IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override {
    *n = 0;
    return nullptr;
  }
  IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const,
                                   AsciiChar const* const = "") noexcept override {
    return nullptr;
  }
  bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
#pragma GCC diagnostic pop
#endif

 private:
  std::vector<IPluginCreatorInterface*> creators_;
  std::vector<std::string> namespaces_;
};

StandinRegistry g_registries[2];

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int32_t getInferLibMajorVersion() noexcept { return STANDIN_MAJOR; }
__attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept { return &g_registries[0]; }
__attribute__((visibility("default"))) ILogger* getLogger() noexcept { return &g_logger; }

__attribute__((visibility("default"))) IPluginRegistry* standinRegistry(int which) { return &g_registries[which]; }

// 1 when every creator the library gave was registered, 0 when one was refused, -1 when the
// library or its entry points are missing. `given` receives getCreators' count.
__attribute__((visibility("default"))) int standinLoadLibrary(const char* path, int which, int* given) {
  void* handle = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
  if (handle == nullptr) return -1;
  using SetLoggerFinder = void (*)(ILoggerFinder*);
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  auto set_logger_finder = reinterpret_cast<SetLoggerFinder>(dlsym(handle, "setLoggerFinder"));
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
  if (set_logger_finder == nullptr || get_creators == nullptr) return -1;
  set_logger_finder(&g_finder);
  int32_t count = 0;
  IPluginCreatorInterface* const* creators = get_creators(count);
  *given = count;
  bool ok = true;
  for (int32_t i = 0; i < count; ++i) {
    auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
    ok = g_registries[which].registerCreator(*creators[i], c->getPluginNamespace()) && ok;
  }
  return ok ? 1 : 0;
}

}  // extern "C"
