// The library's entry points, its only exported symbols (ort/exports.map; plugins/README.md):
// RegisterCustomOps (what SessionOptions.register_custom_ops_library calls), BucketrtBackends
// (what this build compiled) and BucketrtCpuVariants (what the CPU kernels run on this CPU), read by
// `bucketrt ops` and the benchmarks through ctypes.
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

// The SDK's header (sdk/bucketrt_ort.h.in, configured into the build): its declarations must match
// the definitions below, and its config keys are the ones read here.
#include "bucketrt/bucketrt_ort.h"
#include "cpu/expert_ffn.h"
#include "cpu/expert_ffn_int8.h"
#include "cpu/simd.h"
#include "ort/kernels.h"
#ifdef BUCKETRT_WITH_CUDA
#include "cuda/ops.h"
#include "ort/cuda_kernels.h"
#endif

#define BUCKETRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace bucketrt::ort {
namespace {

// Session config entry: "1" makes every node with a 'deterministic' attribute deterministic.
constexpr const char* kDeterministicConfigKey = BUCKETRT_CONFIG_DETERMINISTIC;
// Session config entry: "1" makes the CUDA kernels check their data synchronously (docs/cuda.md).
constexpr const char* kCudaSyncChecksConfigKey = BUCKETRT_CONFIG_CUDA_SYNC_CHECKS;
// Session config entry: "1" leaves the experts' weights out of huge pages (ort/op_base.h).
constexpr const char* kNoHugePagesConfigKey = BUCKETRT_CONFIG_NO_HUGE_PAGES;
// Session config entry the library sets on the SessionOptions it registers on, so that a second
// registration gets an error naming bucketrt (ORT's own, at session creation, says only "Domain
// already set in registry").
constexpr const char* kRegisteredConfigKey = "bucketrt.registered";

struct Registered {
  const char* name;
  OrtCustomOp* op;
  const char* backend;
};

// The op table, generated from the spec (BUCKETRT_FOR_EACH_OP in op_specs.h): every op with its
// CPU kernel class ort::<Op>Kernel, in catalogue order. The CUDA kernels come from the CUDA op
// table (cuda/ops.h) for the same ops.
struct OpKernels {
  const spec::OpSpec* op;
  KernelFactory cpu;
};
#define BUCKETRT_OP_KERNELS(Op) {&spec::k##Op, &CreateCpuKernel<Op##Kernel>},
constexpr OpKernels kOpTable[] = {BUCKETRT_FOR_EACH_OP(BUCKETRT_OP_KERNELS)};
#undef BUCKETRT_OP_KERNELS

#ifdef BUCKETRT_WITH_CUDA
std::unique_ptr<NodeKernel> CreateCuda(const spec::OpSpec& op, Attributes attrs, const RegistrationOptions& options) {
  return std::make_unique<CudaKernel>(op, std::move(attrs), options.cuda_sync_checks);
}
#endif

// Every op registration of this build, in catalogue order: per op, per execution provider, per
// float type T the spec allows. The op objects live as long as the library is loaded (ORT keeps
// pointers to them, and keeps the library loaded while a SessionOptions or session that
// registered it exists).
class Registry {
 public:
  explicit Registry(const RegistrationOptions& options) {
    for (const OpKernels& k : kOpTable) {
      Add(*k.op, kCpuProvider, "ort-cpu", k.cpu, options);
#ifdef BUCKETRT_WITH_CUDA
      if (cuda::HasKernel(*k.op)) Add(*k.op, kCudaProvider, "ort-cuda", &CreateCuda, options);
#endif
    }
  }

  const std::vector<Registered>& entries() const { return entries_; }

 private:
  void Add(const spec::OpSpec& op, const char* provider, const char* backend, KernelFactory create,
           const RegistrationOptions& options) {
    for (int k = 0; k < op.num_float_types; ++k) {
      ops_.push_back(std::make_unique<SpecCustomOp>(op, provider, op.float_types[k], options, create));
      entries_.push_back({op.name, ops_.back().get(), backend});
    }
  }

  std::vector<Registered> entries_;
  std::vector<std::unique_ptr<SpecCustomOp>> ops_;
};

// One registry per combination of the session-wide options (the op objects carry them), made the
// first time a registration asks for it.
const Registry& Kernels(const RegistrationOptions& options) {
  static std::mutex mutex;
  static std::map<std::tuple<bool, bool, bool>, std::unique_ptr<Registry>> registries;
  const auto key = std::make_tuple(options.force_deterministic, options.cuda_sync_checks, options.no_huge_pages);
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Registry>& registry = registries[key];
  if (!registry) registry = std::make_unique<Registry>(options);
  return *registry;
}

RegistrationOptions OptionsOf(const OrtSessionOptions* options) {
  Ort::ConstSessionOptions session(options);
  auto on = [&](const char* key) { return session.HasConfigEntry(key) && session.GetConfigEntry(key) == "1"; };
  RegistrationOptions registration;
  registration.force_deterministic = on(kDeterministicConfigKey);
  registration.cuda_sync_checks = on(kCudaSyncChecksConfigKey);
  registration.no_huge_pages = on(kNoHugePagesConfigKey);
  return registration;
}

static_assert(std::string_view(BUCKETRT_DOMAIN) == spec::kDomain, "the SDK header's domain is the spec's");

// The runtime's C API versions, from its version string: release 1.N serves versions 1..N. An older
// runtime than the headers is refused before GetApi is asked for a version it lacks (which also
// prints a message of its own to stderr), so that the user sees one error, naming both versions.
bool ServesApiVersion(const char* runtime_version) {
  int major = 0, minor = 0;
  if (std::sscanf(runtime_version, "%d.%d", &major, &minor) != 2) return true;  // unknown format: ask GetApi
  return major > 1 || (major == 1 && minor >= ORT_API_VERSION);
}

OrtStatus* TooOldRuntime(const OrtApiBase* api_base) {
  const std::string message = std::string("bucketrt: the op library needs ONNX Runtime 1.") +
                              std::to_string(ORT_API_VERSION) + " or later (C API version " +
                              std::to_string(ORT_API_VERSION) +
                              ", the headers it was built against), but was loaded into ONNX Runtime " +
                              api_base->GetVersionString() + "; upgrade onnxruntime to 1." +
                              std::to_string(ORT_API_VERSION) + " or later";
  // Through the oldest API every runtime serves.
  return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
}

}  // namespace
}  // namespace bucketrt::ort

BUCKETRT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  using namespace bucketrt::ort;
  if (!ServesApiVersion(api_base->GetVersionString())) return TooOldRuntime(api_base);
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return TooOldRuntime(api_base);
  Ort::InitApi(api);
  return Guard([&] {
    // One domain per registration, kept alive for the process: ORT needs it for as long as any
    // session made with these options exists.
    static std::mutex mutex;
    static std::vector<Ort::CustomOpDomain> domains;
    Ort::UnownedSessionOptions session(options);
    if (session.HasConfigEntry(kRegisteredConfigKey)) {
      throw InvalidArgument(
          "bucketrt: the op library is already registered on these SessionOptions (domain 'bucketrt'); "
          "register it once per SessionOptions: call register_custom_ops_library only on a fresh "
          "SessionOptions, or use bucketrt.session_options() / bucketrt.ort_session(), which register it for you");
    }
    Ort::CustomOpDomain domain(bucketrt::spec::kDomain);
    for (const Registered& k : Kernels(OptionsOf(options)).entries()) domain.Add(k.op);
    session.Add(domain);
    session.AddConfigEntry(kRegisteredConfigKey, "1");
    std::lock_guard<std::mutex> lock(mutex);
    domains.push_back(std::move(domain));
  });
}

BUCKETRT_EXPORT const char* BucketrtBackends() {
  // "Op=backend,backend;Op=backend": one entry per op, catalogue order, each backend once.
  static const std::string backends = [] {
    std::vector<std::string> names;
    std::map<std::string, std::string> joined;
    for (const bucketrt::ort::Registered& entry : bucketrt::ort::Kernels({}).entries()) {
      const bucketrt::ort::Registered* k = &entry;
      std::string& list = joined[k->name];
      if (list.empty()) names.push_back(k->name);
      if (("," + list + ",").find(std::string(",") + k->backend + ",") == std::string::npos) {
        list += (list.empty() ? "" : ",") + std::string(k->backend);
      }
    }
    std::string out;
    for (const std::string& name : names) out += (out.empty() ? "" : ";") + name + "=" + joined[name];
    return out;
  }();
  return backends.c_str();
}

BUCKETRT_EXPORT const char* BucketrtCpuVariants() {
  // "kernels=variant;...": the instruction-set variant each family of CPU kernels picks on this CPU
  // within BUCKETRT_SIMD's cap, as they pick it (once per process).
  static const std::string variants = [] {
    namespace cpu = bucketrt::cpu;
    const char* tile = nullptr;
    const char* activate = nullptr;
    const char* gemm = nullptr;
    const char* quantize = nullptr;
    cpu::PickExpertTile(&tile);
    cpu::PickExpertActivate(&activate);
    cpu::PickInt8Gemm(&gemm);
    if (cpu::Int8AmxUsable()) gemm = "amx";  // tasks of 16 rows or more; fewer through the VNNI code
    cpu::PickQuantizeRow(&quantize);
    return std::string("hash_attention=") + (cpu::UseAvx2() ? "avx2" : "generic") + ";expert_ffn_tile=" + tile +
           ";expert_activation=" + activate + ";int8_gemm=" + gemm + ";int8_quantize=" + quantize;
  }();
  return variants.c_str();
}
