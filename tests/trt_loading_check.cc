// How libbucketrt_trt.so registers its plugins in every load order, against a stand-in
// libnvinfer.so.<major> (tests/nvinfer_standin.cc: TensorRT's C entry points, a registry that
// refuses duplicates, IPluginRegistry::loadLibrary's documented steps). One scenario per run:
//
//   trt_loading_check SCENARIO libbucketrt_trt.so libnvinfer.so.<major> CREATORS
//
//   loadlibrary    TensorRT loaded first (RTLD_LOCAL, as Python's tensorrt), then loadLibrary, then a
//                  second registry's loadLibrary (trtexec's runtime): each registry holds every
//                  creator once
//   dlopen-after   TensorRT loaded, then a plain dlopen (polygraphy --plugins): registered at load,
//                  once; a later loadLibrary registers nothing twice and does not fail
//   dlopen-before  a plain dlopen before TensorRT: nothing registered (nothing to register with);
//                  a later loadLibrary registers every creator once
//   mismatch       a TensorRT of another major: nothing registered, one line saying so, whatever
//                  asks (the load, getCreators)
//   logger         setLoggerFinder keeps the first finder
//
// Prints one line per check and "N failed"; exits 1 on any failure.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "trt_check_support.h"

using namespace nvinfer1;
using trt_check::Check;
using trt_check::Finder;
using trt_check::g_failures;
using trt_check::Logger;

namespace {


using LoadLibrary = int (*)(const char*, int, int*);
using Registry = IPluginRegistry* (*)(int);

int Held(IPluginRegistry* registry) {
  int32_t n = 0;
  registry->getAllCreators(&n);
  return n;
}


}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s SCENARIO libbucketrt_trt.so libnvinfer.so.N CREATORS\n", argv[0]);
    return 2;
  }
  const std::string scenario = argv[1];
  const char* plugins = argv[2];
  const char* standin_path = argv[3];
  const int creators = std::atoi(argv[4]);
  void* library = nullptr;
  if (scenario == "dlopen-before") library = dlopen(plugins, RTLD_NOW | RTLD_LOCAL);
  void* standin = dlopen(standin_path, RTLD_NOW | RTLD_LOCAL);
  if (standin == nullptr) {
    std::fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  auto load_library = reinterpret_cast<LoadLibrary>(dlsym(standin, "standinLoadLibrary"));
  auto registry = reinterpret_cast<Registry>(dlsym(standin, "standinRegistry"));
  int given = -1;

  if (scenario == "loadlibrary") {
    Check(load_library(plugins, 0, &given) == 1 && given == creators && Held(registry(0)) == creators,
          "loadLibrary: getCreators gave " + std::to_string(given) + ", the registry holds " +
              std::to_string(Held(registry(0))));
    Check(load_library(plugins, 1, &given) == 1 && given == creators && Held(registry(1)) == creators &&
              Held(registry(0)) == creators,
          "a second registry's loadLibrary: given " + std::to_string(given) + ", held " +
              std::to_string(Held(registry(1))) + " and " + std::to_string(Held(registry(0))));
  } else if (scenario == "dlopen-after") {
    library = dlopen(plugins, RTLD_NOW | RTLD_LOCAL);
    Check(library != nullptr && Held(registry(0)) == creators,
          "a plain dlopen after TensorRT registers at load: " + std::to_string(Held(registry(0))));
    Check(load_library(plugins, 0, &given) == 1 && given == 0 && Held(registry(0)) == creators,
          "a later loadLibrary gets no creator twice and does not fail: given " + std::to_string(given) + ", held " +
              std::to_string(Held(registry(0))));
  } else if (scenario == "dlopen-before") {
    Check(library != nullptr && Held(registry(0)) == 0, "a plain dlopen before TensorRT registers nothing");
    Check(load_library(plugins, 0, &given) == 1 && given == creators && Held(registry(0)) == creators,
          "a later loadLibrary registers every creator once: given " + std::to_string(given) + ", held " +
              std::to_string(Held(registry(0))));
  } else if (scenario == "mismatch") {
    library = dlopen(plugins, RTLD_NOW | RTLD_LOCAL);
    Check(library != nullptr && Held(registry(0)) == 0, "a plain dlopen under another major registers nothing");
    Check(load_library(plugins, 0, &given) == 1 && given == 0 && Held(registry(0)) == 0,
          "loadLibrary under another major gets no creator: given " + std::to_string(given));
  } else if (scenario == "logger") {
    setenv("BUCKETRT_TRT_NO_AUTOREGISTER", "1", 1);  // so that getCreators hands the creators out
    library = dlopen(plugins, RTLD_NOW | RTLD_LOCAL);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto set_logger_finder = reinterpret_cast<SetLoggerFinder>(dlsym(library, "setLoggerFinder"));
    auto get_creators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
    Logger first, second;
    Finder first_finder(&first), second_finder(&second);
    set_logger_finder(&first_finder);
    set_logger_finder(&second_finder);
    int32_t count = 0;
    IPluginCreatorInterface* const* list = get_creators(count);
    auto* creator = count > 0 ? static_cast<IPluginCreatorV3One*>(list[0]) : nullptr;
    PluginFieldCollection none{0, nullptr};
    IPluginV3* plugin = creator != nullptr ? creator->createPlugin("bad", &none, TensorRTPhase::kBUILD) : nullptr;
    Check(plugin == nullptr && first.messages.size() == 1 && second.messages.empty(),
          "setLoggerFinder keeps the first finder: " + std::to_string(first.messages.size()) + " message(s) there, " +
              std::to_string(second.messages.size()) + " in the second");
    delete plugin;
  } else {
    std::fprintf(stderr, "unknown scenario %s\n", scenario.c_str());
    return 2;
  }
  std::printf("%d failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
