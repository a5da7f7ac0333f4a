// The library's entry points: RegisterCustomOps (what SessionOptions.register_custom_ops_library
// calls) and BucketrtBackends (what this build compiled, read by the CLI through ctypes).
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ort/kernels.h"
#ifdef BUCKETRT_WITH_CUDA
#include "cuda/ops.h"
#include "ort/cuda_kernels.h"
#endif

#define BUCKETRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace bucketrt::ort {
namespace {

// Session config entry: "1" makes every node with a 'deterministic' attribute deterministic.
constexpr const char* kDeterministicConfigKey = "bucketrt.deterministic";

struct Registered {
  const char* name;
  OrtCustomOp* op;
  const char* backend;
};

// Every op registration of this build: per op, per execution provider, per float type T the
// spec allows. The op objects live for the whole process (ORT keeps pointers to them).
class Registry {
 public:
  explicit Registry(const RegistrationOptions& options) {
    Add<LshCumulationKernel>(kCpuProvider, "ort-cpu", options);
    Add<SignHashKernel>(kCpuProvider, "ort-cpu", options);
    Add<ArgmaxHashKernel>(kCpuProvider, "ort-cpu", options);
    Add<SortedChunkAttentionKernel>(kCpuProvider, "ort-cpu", options);
    Add<BucketSumKernel>(kCpuProvider, "ort-cpu", options);
    Add<Top1DispatchKernel>(kCpuProvider, "ort-cpu", options);
    Add<ExpertFfnKernel>(kCpuProvider, "ort-cpu", options);
#ifdef BUCKETRT_WITH_CUDA
    // One generic adapter over the CUDA op table (cuda/ops.h): every op that has a CUDA kernel.
    for (const spec::OpSpec* op : spec::kAllOps) {
      if (!cuda::HasKernel(*op)) continue;
      for (int k = 0; k < op->num_float_types; ++k) {
        auto owned = std::make_shared<CudaSpecOp>(*op, op->float_types[k], options);
        entries_.push_back({op->name, owned.get(), "ort-cuda"});
        keep_.push_back(std::move(owned));
      }
    }
#endif
  }

  // The registrations in catalogue order.
  std::vector<const Registered*> InCatalogueOrder() const {
    std::vector<const Registered*> out;
    for (const spec::OpSpec* op : spec::kAllOps) {
      for (const Registered& r : entries_) {
        if (std::string(r.name) == op->name) out.push_back(&r);
      }
    }
    return out;
  }

 private:
  template <class Kernel>
  void Add(const char* provider, const char* backend, const RegistrationOptions& options) {
    const spec::OpSpec& op = Kernel::Spec();
    for (int k = 0; k < op.num_float_types; ++k) {
      auto owned = std::make_shared<SpecOp<Kernel>>(provider, op.float_types[k], options);
      entries_.push_back({op.name, owned.get(), backend});
      keep_.push_back(std::move(owned));
    }
  }

  std::vector<Registered> entries_;
  std::vector<std::shared_ptr<void>> keep_;  // owns the op objects, each with its own deleter
};

const Registry& Kernels(bool force_deterministic) {
  static const Registry plain(RegistrationOptions{false});
  static const Registry deterministic(RegistrationOptions{true});
  return force_deterministic ? deterministic : plain;
}

bool ForceDeterministic(const OrtSessionOptions* options) {
  Ort::ConstSessionOptions session(options);
  return session.HasConfigEntry(kDeterministicConfigKey) && session.GetConfigEntry(kDeterministicConfigKey) == "1";
}

}  // namespace
}  // namespace bucketrt::ort

BUCKETRT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  using namespace bucketrt::ort;
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // Older runtime: report through the oldest API it surely serves.
    const std::string message = std::string("bucketrt: this ONNX Runtime (") + api_base->GetVersionString() +
                                ") does not serve API version " + std::to_string(ORT_API_VERSION) +
                                ", which the bucketrt op library was built against; upgrade onnxruntime";
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
  }
  Ort::InitApi(api);
  return Guard([&] {
    // One domain per registration, kept alive for the process: ORT needs it for as long as any
    // session made with these options exists.
    static std::mutex mutex;
    static std::vector<Ort::CustomOpDomain> domains;
    Ort::CustomOpDomain domain(bucketrt::spec::kDomain);
    for (const Registered* k : Kernels(ForceDeterministic(options)).InCatalogueOrder()) domain.Add(k->op);
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(mutex);
    domains.push_back(std::move(domain));
  });
}

BUCKETRT_EXPORT const char* BucketrtBackends() {
  // "Op=backend,backend;Op=backend": one entry per op, catalogue order, each backend once.
  static const std::string backends = [] {
    std::vector<std::string> names;
    std::map<std::string, std::string> joined;
    for (const bucketrt::ort::Registered* k : bucketrt::ort::Kernels(false).InCatalogueOrder()) {
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
