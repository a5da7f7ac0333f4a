// The plugin library's entry points and its registration.
//
// TensorRT loads a plugin library in one of two ways, and this library serves both:
//
//  * IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, Python's
//    get_plugin_registry().load_library, bucketrt build): TensorRT opens the library, calls
//    setLoggerFinder and getCreators, and registers the creators itself.
//  * A plain dlopen (polygraphy --plugins, which calls ctypes.CDLL; trtexec --staticPlugins): no
//    entry point is called, so the library registers its creators when it is loaded, provided
//    TensorRT is already loaded in the process (it does not load TensorRT: which copy to load is
//    the program's business, and a second copy would have a second registry).
//
// The two must not both register: loadLibrary fails when a creator it is given is registered
// already. So the load-time registration stands aside when TensorRT's loadLibrary is what is
// loading the library (a libnvinfer frame on the stack of the library's constructor), and, should
// both still happen (a library first opened with dlopen, later handed to loadLibrary), getCreators
// then gives TensorRT no creators: they are registered already. Once registered at load time the
// library is never unloaded (RTLD_NODELETE), since the registry keeps pointers into it.
//
// TensorRT is found through the soname of the libnvinfer these headers belong to
// (libnvinfer.so.<major>), which dlopen(RTLD_NOLOAD) finds wherever it was loaded (as a dependency
// of the program, or RTLD_LOCAL by Python's tensorrt module) and never loads. The library thus has
// no link-time dependency on TensorRT. BUCKETRT_TRT_NO_AUTOREGISTER=1 turns the load-time
// registration off.
//
// A TensorRT of another major (its interfaces differ: TensorRT 11 changed ILoggerFinder and
// IPluginRegistry) is not found by that soname, so it is looked for among the loaded objects'
// names; the load and getCreators then register nothing and say so in one line.
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <dlfcn.h>
#include <link.h>
#include <unwind.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bucketrt/validate.h"
#include "cuda/ops.h"
#include "library.h"
#include "spec_plugin.h"

#define BUCKETRT_TRT_STRING(x) BUCKETRT_TRT_STRING_(x)
#define BUCKETRT_TRT_STRING_(x) #x
#define BUCKETRT_TRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace bucketrt::trt {

namespace {

using Severity = nvinfer1::ILogger::Severity;

// The libnvinfer of this TensorRT major version, as the dynamic loader knows it.
constexpr const char* kNvinferSoname = "libnvinfer.so." BUCKETRT_TRT_STRING(NV_TENSORRT_MAJOR);

// The first logger finder TensorRT gave (setLoggerFinder), as NVIDIA's plugin libraries keep it:
// a later call (another registry loading the library again) does not replace it.
std::mutex g_logger_finder_mutex;
nvinfer1::ILoggerFinder* g_logger_finder = nullptr;
// Set when the constructor registered the creators itself (getCreators then hands out none).
std::atomic<bool> g_registered_at_load{false};

// A function of the TensorRT already loaded in this process (nullptr if none): never loads it.
void* TensorRtFunction(const char* name) {
  void* handle = dlopen(kNvinferSoname, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return nullptr;
  void* function = dlsym(handle, name);
  dlclose(handle);  // only the reference RTLD_NOLOAD took: TensorRT stays loaded
  return function;
}

// The TensorRT major version of the libnvinfer.so.<major> loaded in this process, from the loaded
// objects' file names (dl_iterate_phdr; not dlopen, which would only find this build's soname):
// 0 if none is loaded. `path` receives its file name.
int LoadedTensorRtMajor(std::string* path) {
  struct Found {
    int major = 0;
    std::string path;
  } found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        const char* name = info->dlpi_name != nullptr ? info->dlpi_name : "";
        const char* slash = std::strrchr(name, '/');
        const char* base = slash != nullptr ? slash + 1 : name;
        constexpr char kPrefix[] = "libnvinfer.so.";
        if (std::strncmp(base, kPrefix, sizeof kPrefix - 1) != 0) return 0;
        const int major = std::atoi(base + sizeof kPrefix - 1);
        if (major <= 0) return 0;
        auto* out = static_cast<Found*>(data);
        out->major = major;
        out->path = name;
        return major == NV_TENSORRT_MAJOR ? 1 : 0;  // this build's major wins where several are loaded
      },
      &found);
  if (path != nullptr) *path = found.path;
  return found.major;
}

// "" when the TensorRT loaded here (if any) is the major these headers belong to; else the one
// line that says it is not. Asks getInferLibMajorVersion too where this build's soname is loaded.
std::string MajorMismatch() {
  std::string path;
  int major = LoadedTensorRtMajor(&path);
  if (major == NV_TENSORRT_MAJOR) {
    using GetMajor = int32_t (*)() noexcept;
    if (auto get_major = reinterpret_cast<GetMajor>(TensorRtFunction("getInferLibMajorVersion"))) major = get_major();
  }
  if (major == 0 || major == NV_TENSORRT_MAJOR) return {};
  return Format("bucketrt: libbucketrt_trt.so was built for TensorRT %d, but TensorRT %d is loaded (%s); its plugins "
                "are not registered: build bucketrt against TensorRT %d's headers (TensorRT_ROOT=... make install)",
                NV_TENSORRT_MAJOR, major, path.c_str(), major);
}

// Logs `line` the first time only: TensorRT may ask for the creators more than once.
void LogOnce(const std::string& line) {
  static std::atomic<bool> logged{false};
  if (!logged.exchange(true)) Log(Severity::kERROR, line);
}

// Whether a frame of the calling thread's stack is TensorRT's (libnvinfer*): the constructor then
// runs inside IPluginRegistry::loadLibrary, which calls getCreators next.
_Unwind_Reason_Code VisitFrame(_Unwind_Context* context, void* found) {
  const uintptr_t ip = _Unwind_GetIP(context);
  Dl_info info;
  if (ip != 0 && dladdr(reinterpret_cast<void*>(ip), &info) != 0 && info.dli_fname != nullptr) {
    const char* slash = std::strrchr(info.dli_fname, '/');
    const char* base = slash != nullptr ? slash + 1 : info.dli_fname;
    if (std::strncmp(base, "libnvinfer", 10) == 0) {
      *static_cast<bool*>(found) = true;
      return _URC_END_OF_STACK;
    }
  }
  return _URC_NO_REASON;
}

bool LoadedByTensorRt() {
  bool found = false;
  _Unwind_Backtrace(VisitFrame, &found);
  return found;
}

// Keeps this library in the process for good: TensorRT's registry holds its creators.
void PinLibrary() {
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&PinLibrary), &self) != 0 && self.dli_fname != nullptr) {
    dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);  // the handle is kept on purpose
  }
}

__attribute__((constructor)) void RegisterAtLoad() noexcept {
  try {
    const char* off = std::getenv("BUCKETRT_TRT_NO_AUTOREGISTER");
    if (off != nullptr && *off != '\0' && std::strcmp(off, "0") != 0) return;
    using GetRegistry = nvinfer1::IPluginRegistry* (*)() noexcept;
    auto get_registry = reinterpret_cast<GetRegistry>(TensorRtFunction("getPluginRegistry"));
    // Another major's TensorRT is not found by this build's soname: said here, once.
    if (const std::string mismatch = MajorMismatch(); !mismatch.empty()) {
      LogOnce(mismatch);
      return;
    }
    if (get_registry == nullptr) return;  // no TensorRT (yet): loadLibrary will call getCreators
    if (LoadedByTensorRt()) return;
    nvinfer1::IPluginRegistry* registry = get_registry();
    if (registry == nullptr) return;
    bool registered = false;
    for (nvinfer1::IPluginCreatorInterface* creator : Creators()) {
      const auto& plugin = *static_cast<SpecPluginCreator*>(creator);
      if (registry->getCreator(plugin.getPluginName(), plugin.getPluginVersion(), plugin.getPluginNamespace())) {
        Log(Severity::kWARNING,
            Format("bucketrt: a plugin %s version %s in namespace '%s' is registered already (another copy of "
                   "libbucketrt_trt.so?); this library's is left out",
                   plugin.getPluginName(), plugin.getPluginVersion(), plugin.getPluginNamespace()));
        continue;
      }
      if (registry->registerCreator(*creator, plugin.getPluginNamespace())) {
        registered = true;
      } else {
        Log(Severity::kWARNING, Format("bucketrt: TensorRT refused to register the plugin %s", plugin.getPluginName()));
      }
    }
    if (registered) {
      g_registered_at_load = true;
      PinLibrary();
    }
  } catch (...) {
    // A library constructor must not throw; without registration the plugins are merely missing.
  }
}

}  // namespace

const std::vector<nvinfer1::IPluginCreatorInterface*>& Creators() {
  static const std::vector<nvinfer1::IPluginCreatorInterface*>* creators = [] {
    auto* list = new std::vector<nvinfer1::IPluginCreatorInterface*>();
    for (const spec::OpSpec* op : spec::kAllOps) {
      if (cuda::HasKernel(*op)) list->push_back(new SpecPluginCreator(*op));
    }
    return list;
  }();
  return *creators;
}

void Log(Severity severity, const std::string& message) noexcept {
  try {
    nvinfer1::ILogger* logger = nullptr;
    nvinfer1::ILoggerFinder* finder = nullptr;
    {
      std::lock_guard<std::mutex> lock(g_logger_finder_mutex);
      finder = g_logger_finder;
    }
    if (finder != nullptr) logger = finder->findLogger();
    if (logger == nullptr) {
      using GetLogger = nvinfer1::ILogger* (*)() noexcept;
      if (auto get_logger = reinterpret_cast<GetLogger>(TensorRtFunction("getLogger"))) logger = get_logger();
    }
    if (logger != nullptr) {
      logger->log(severity, message.c_str());
    } else if (severity == Severity::kINTERNAL_ERROR || severity == Severity::kERROR ||
               severity == Severity::kWARNING) {
      std::fprintf(stderr, "%s\n", message.c_str());
    }
  } catch (...) {
  }
}

}  // namespace bucketrt::trt

// ---- TensorRT's plugin-library entry points ------------------------------------------------------

BUCKETRT_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  std::lock_guard<std::mutex> lock(bucketrt::trt::g_logger_finder_mutex);
  if (bucketrt::trt::g_logger_finder == nullptr) bucketrt::trt::g_logger_finder = finder;
}

BUCKETRT_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  nbCreators = 0;
  try {
    const std::vector<nvinfer1::IPluginCreatorInterface*>& creators = bucketrt::trt::Creators();
    // A TensorRT of another major would misread these creators (its interfaces differ): none.
    if (const std::string mismatch = bucketrt::trt::MajorMismatch(); !mismatch.empty()) {
      bucketrt::trt::LogOnce(mismatch);
      return creators.data();
    }
    // Registered at load time already: handing them to TensorRT again would make loadLibrary fail.
    if (!bucketrt::trt::g_registered_at_load.load()) nbCreators = static_cast<int32_t>(creators.size());
    return creators.data();
  } catch (...) {
    return nullptr;
  }
}
