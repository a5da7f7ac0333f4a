// The library's entry points: RegisterCustomOps (what SessionOptions.register_custom_ops_library
// calls) and BucketrtBackends (what this build compiled, read by the CLI through ctypes).
#include <mutex>
#include <string>
#include <vector>

#include "ort/kernels.h"

#define BUCKETRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace bucketrt::ort {
namespace {

struct Registered {
  const char* name;
  OrtCustomOp* op;
  const char* backend;
};

// Every op this build has a kernel for. The op objects live for the whole process.
const std::vector<Registered>& Kernels() {
  static SpecOp<LshCumulationKernel> lsh_cumulation;
  static SpecOp<SignHashKernel> sign_hash;
  static SpecOp<ArgmaxHashKernel> argmax_hash;
  static SpecOp<SortedChunkAttentionKernel> sorted_chunk_attention;
  static SpecOp<BucketSumKernel> bucket_sum;
  static SpecOp<Top1DispatchKernel> top1_dispatch;
  static SpecOp<ExpertFfnKernel> expert_ffn;
  static const std::vector<Registered> kernels = {
      {LshCumulationKernel::Spec().name, &lsh_cumulation, "ort-cpu"},
      {SignHashKernel::Spec().name, &sign_hash, "ort-cpu"},
      {ArgmaxHashKernel::Spec().name, &argmax_hash, "ort-cpu"},
      {SortedChunkAttentionKernel::Spec().name, &sorted_chunk_attention, "ort-cpu"},
      {BucketSumKernel::Spec().name, &bucket_sum, "ort-cpu"},
      {Top1DispatchKernel::Spec().name, &top1_dispatch, "ort-cpu"},
      {ExpertFfnKernel::Spec().name, &expert_ffn, "ort-cpu"},
  };
  return kernels;
}

// The ops of the catalogue that have a kernel, in catalogue order.
std::vector<const Registered*> CatalogueKernels() {
  std::vector<const Registered*> out;
  for (const spec::OpSpec* op : spec::kAllOps) {
    for (const Registered& k : Kernels()) {
      if (std::string(k.name) == op->name) out.push_back(&k);
    }
  }
  return out;
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
    for (const Registered* k : CatalogueKernels()) domain.Add(k->op);
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(mutex);
    domains.push_back(std::move(domain));
  });
}

BUCKETRT_EXPORT const char* BucketrtBackends() {
  static const std::string backends = [] {
    std::string out;
    for (const auto* k : bucketrt::ort::CatalogueKernels()) {
      if (!out.empty()) out += ';';
      out += std::string(k->name) + "=" + k->backend;
    }
    return out;
  }();
  return backends.c_str();
}
