// The CUDA op table: per op, its checks, plan and launcher, on the shape cpu::<Op>ShapeOf reads from the
// bindings (the CPU kernels read theirs there too).
// Adding an op's CUDA kernel = its launcher in cuda/<op>.{h,cu} plus one entry in Table() below
// (see cuda/README.md).
#include "cuda/ops.h"

#include <cstring>

#include "cuda/argmax_hash.h"
#include "cuda/bucket_sum.h"
#include "cuda/expert_ffn.h"
#include "cuda/lsh_cumulation.h"
#include "cuda/masked_attention.h"
#include "cuda/sign_hash.h"
#include "cuda/sorted_chunk_attention.h"
#include "cuda/top1_dispatch.h"
#include "cuda/top_k_experts.h"

namespace bucketrt::cuda {

namespace {

FloatType FloatTypeOf(const Bindings& env) {
  return env.float_type() == spec::DType::kFloat16 ? FloatType::kFloat16 : FloatType::kFloat32;
}

// ---- SignHash ----------------------------------------------------------------------------------

namespace sign {
using namespace spec::SignHash;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes&) { return {}; }

std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  const cpu::SignHashShape shape = cpu::SignHashShapeOf(attrs, env);
  cpu::SignHashPlan plan;
  std::string error = cpu::PlanSignHash(shape, 1, &plan);
  if (error.empty()) *workspace_bytes = SignHashWorkspaceBytes(shape);
  return error;
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const cpu::SignHashShape shape = cpu::SignHashShapeOf(attrs, env);
  cpu::SignHashPlan plan;
  std::string error = cpu::PlanSignHash(shape, 1, &plan);
  if (!error.empty()) return error;
  return CudaErrorText("SignHash", "the launch",
                       SignHash(shape, plan, FloatTypeOf(env), static_cast<const int32_t*>(in[kMask]), in[kVector],
                                in[kProjection], static_cast<int32_t*>(out[0]), workspace, workspace_bytes, stream));
}
}  // namespace sign

// ---- LSHCumulation -----------------------------------------------------------------------------

namespace lsh {
using namespace spec::LSHCumulation;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes&) { return {}; }

std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  LshCumulationCudaPlan plan;
  std::string error =
      PlanLshCumulationCuda(cpu::LshCumulationShapeOf(attrs, env), attrs.Int("deterministic") == 1, &plan);
  if (error.empty()) *workspace_bytes = plan.workspace_bytes;
  return error;
}

// Its sorted way's sort storage shrinks as D grows, and the dense and sorted ways alternate as
// m or D grow: the bound is computed over the range (LshCumulationWorkspaceBound).
std::string WorkspaceBound(const Attributes& attrs, const Bindings* low, const Bindings& high, size_t* workspace_bytes) {
  return LshCumulationWorkspaceBound(cpu::LshCumulationShapeOf(attrs, high), low != nullptr ? (*low)["D"] : 0,
                                     attrs.Int("deterministic") == 1, workspace_bytes);
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const cpu::LshCumulationShape shape = cpu::LshCumulationShapeOf(attrs, env);
  LshCumulationCudaPlan plan;
  std::string error = PlanLshCumulationCuda(shape, attrs.Int("deterministic") == 1, &plan);
  if (!error.empty()) return error;
  return CudaErrorText(
      "LSHCumulation", "the launch",
      LshCumulation(shape, plan, FloatTypeOf(env), static_cast<const int32_t*>(in[kQueryMask]),
                    static_cast<const int32_t*>(in[kQueryHash]), static_cast<const int32_t*>(in[kKeyMask]),
                    static_cast<const int32_t*>(in[kKeyHash]), in[kValue], out[0], workspace, workspace_bytes,
                    stream));
}

size_t ReportBytes(const Attributes&, const Bindings&) { return sizeof(LshCumulationReport); }

std::string EnqueueReport(const Attributes& attrs, const Bindings& env, const void* const* in, const void* workspace,
                          void* report, cudaStream_t stream) {
  return CudaErrorText("LSHCumulation", "enqueueing the code check",
                       EnqueueLshCumulationReport(cpu::LshCumulationShapeOf(attrs, env),
                                                  static_cast<const int32_t*>(in[kQueryHash]),
                                                  static_cast<const int32_t*>(in[kKeyHash]), workspace,
                                                  static_cast<LshCumulationReport*>(report), stream));
}

std::string ReportError(const Attributes& attrs, const Bindings& env, const void* report) {
  return LshCumulationReportError(cpu::LshCumulationShapeOf(attrs, env), *static_cast<const LshCumulationReport*>(report));
}
}  // namespace lsh

// ---- ArgmaxHash --------------------------------------------------------------------------------

namespace argmax {
using namespace spec::ArgmaxHash;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes&) { return {}; }

// bucket_sizes is data (on the device): its checks are the data report's (ReportError).
std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  *workspace_bytes = ArgmaxHashWorkspaceBytes(cpu::ArgmaxHashShapeOf(attrs, env));
  return {};
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  return CudaErrorText("ArgmaxHash", "the launch",
                       ArgmaxHash(cpu::ArgmaxHashShapeOf(attrs, env), FloatTypeOf(env),
                                  static_cast<const int32_t*>(in[kMask]), in[kVector], in[kProjection],
                                  static_cast<const int32_t*>(in[kBucketSizes]), static_cast<int32_t*>(out[0]),
                                  workspace, workspace_bytes, stream));
}

size_t ReportBytes(const Attributes& attrs, const Bindings& env) {
  return ArgmaxHashReportBytes(cpu::ArgmaxHashShapeOf(attrs, env));
}

std::string EnqueueReport(const Attributes& attrs, const Bindings& env, const void* const* in, const void*,
                          void* report, cudaStream_t stream) {
  return CudaErrorText("ArgmaxHash", "enqueueing the bucket_sizes check",
                       EnqueueArgmaxHashReport(cpu::ArgmaxHashShapeOf(attrs, env),
                                               static_cast<const int32_t*>(in[kBucketSizes]), report, stream));
}

std::string ReportError(const Attributes& attrs, const Bindings& env, const void* report) {
  return ArgmaxHashReportError(cpu::ArgmaxHashShapeOf(attrs, env), report);
}
}  // namespace argmax

// ---- BucketSum ---------------------------------------------------------------------------------

namespace bucket_sum {
using namespace spec::BucketSum;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes&) { return {}; }

std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  BucketSumCudaPlan plan;
  std::string error = PlanBucketSumCuda(cpu::BucketSumShapeOf(attrs, env), &plan);
  if (error.empty()) *workspace_bytes = plan.workspace_bytes;
  return error;
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const cpu::BucketSumShape shape = cpu::BucketSumShapeOf(attrs, env);
  BucketSumCudaPlan plan;
  std::string error = PlanBucketSumCuda(shape, &plan);
  if (!error.empty()) return error;
  return CudaErrorText("BucketSum", "the launch",
                       BucketSum(shape, plan, FloatTypeOf(env), static_cast<const int32_t*>(in[kBucket]), in[kWeight],
                                 in[kVector], out[0], out[1], workspace, workspace_bytes, stream));
}

size_t ReportBytes(const Attributes&, const Bindings&) { return kBucketSumReportBytes; }

std::string EnqueueReport(const Attributes& attrs, const Bindings& env, const void* const*, const void* workspace,
                          void* report, cudaStream_t stream) {
  return CudaErrorText("BucketSum", "enqueueing the id check",
                       EnqueueBucketSumReport(cpu::BucketSumShapeOf(attrs, env), workspace, report, stream));
}

std::string ReportError(const Attributes& attrs, const Bindings& env, const void* report) {
  return BucketSumReportError(cpu::BucketSumShapeOf(attrs, env), report);
}
}  // namespace bucket_sum

// ---- Top1Dispatch ------------------------------------------------------------------------------

namespace top1 {
using namespace spec::Top1Dispatch;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes&) { return {}; }

std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  const cpu::Top1DispatchShape shape = cpu::Top1DispatchShapeOf(attrs, env);
  std::string error = cpu::CheckTop1DispatchTokens(shape);
  if (error.empty()) *workspace_bytes = Top1DispatchWorkspaceBytes(shape);
  return error;
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const cpu::Top1DispatchShape shape = cpu::Top1DispatchShapeOf(attrs, env);
  std::string error = cpu::CheckTop1DispatchTokens(shape);
  if (!error.empty()) return error;
  return CudaErrorText("Top1Dispatch", "the launch",
                       Top1Dispatch(shape, FloatTypeOf(env), in[kProbs], static_cast<int32_t*>(out[kExpert]), out[kGate],
                                    static_cast<int32_t*>(out[kPriority]), static_cast<int32_t*>(out[kCounts]),
                                    static_cast<int32_t*>(out[kOrder]), workspace, workspace_bytes, stream));
}
}  // namespace top1

// ---- SortedChunkAttention ----------------------------------------------------------------------

namespace chunked {
using namespace spec::SortedChunkAttention;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes&) { return {}; }

std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  const cpu::ChunkAttentionShape shape = cpu::ChunkAttentionShapeOf(attrs, env);
  cpu::ChunkAttentionPlan plan;
  std::string error = PlanChunkAttentionCuda(shape, attrs.Int("max_length"), &plan);
  if (error.empty()) *workspace_bytes = ChunkAttentionWorkspaceBytes(shape, plan);
  return error;
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const cpu::ChunkAttentionShape shape = cpu::ChunkAttentionShapeOf(attrs, env);
  cpu::ChunkAttentionPlan plan;
  std::string error = PlanChunkAttentionCuda(shape, attrs.Int("max_length"), &plan);
  if (!error.empty()) return error;
  return CudaErrorText("SortedChunkAttention", "the launch",
                       ChunkAttention(shape, plan, FloatTypeOf(env), in[kQuery], in[kKey], in[kValue],
                                      static_cast<const int32_t*>(in[kMask]), static_cast<const int32_t*>(in[kBuckets]),
                                      out[0], workspace, workspace_bytes, stream));
}

// The plan (plain attention or not) decides whether there is a bucket check; Plan has checked it.
cpu::ChunkAttentionPlan PlanOf(const Attributes& attrs, const Bindings& env) {
  cpu::ChunkAttentionPlan plan;
  PlanChunkAttentionCuda(cpu::ChunkAttentionShapeOf(attrs, env), attrs.Int("max_length"), &plan);
  return plan;
}

size_t ReportBytes(const Attributes& attrs, const Bindings& env) { return ChunkAttentionReportBytes(PlanOf(attrs, env)); }

std::string EnqueueReport(const Attributes& attrs, const Bindings& env, const void* const*, const void* workspace,
                          void* report, cudaStream_t stream) {
  return CudaErrorText("SortedChunkAttention", "enqueueing the bucket check",
                       EnqueueChunkAttentionReport(PlanOf(attrs, env), workspace, report, stream));
}

std::string ReportError(const Attributes& attrs, const Bindings& env, const void* report) {
  return ChunkAttentionReportError(PlanOf(attrs, env), report);
}
}  // namespace chunked

// ---- ExpertFFN ---------------------------------------------------------------------------------

namespace ffn {
using namespace spec::ExpertFFN;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes& attrs) {
  cpu::Activation act;
  return cpu::ParseActivation(attrs.String("activation"), &act);
}

std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  const cpu::ExpertFfnShape shape = cpu::ExpertFfnShapeOf(attrs, env);
  int64_t activations = 0;  // the workspace holds tokens x d_ff activations (two tensors' dims)
  if (!CheckedMul(shape.tokens, shape.ff, &activations) || !CheckedMul(activations, 8, nullptr)) {
    return SizeOverflowError("ExpertFFN", "the workspace (tokens x d_ff)");
  }
  *workspace_bytes = ExpertFfnWorkspaceBytes(shape);
  return {};
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  cpu::Activation act;
  std::string error = cpu::ParseActivation(attrs.String("activation"), &act);
  if (!error.empty()) return error;
  return CudaErrorText("ExpertFFN", "the launch",
                       ExpertFfn(cpu::ExpertFfnShapeOf(attrs, env), act, FloatTypeOf(env), in[kHidden],
                                 static_cast<const int32_t*>(in[kOrder]), static_cast<const int32_t*>(in[kCounts]),
                                 in[kGate], in[kWi], in[kWo], out[0], workspace, workspace_bytes, stream));
}

size_t ReportBytes(const Attributes& attrs, const Bindings& env) {
  return ExpertFfnReportBytes(cpu::ExpertFfnShapeOf(attrs, env));
}

std::string EnqueueReport(const Attributes& attrs, const Bindings& env, const void* const* in, const void*,
                          void* report, cudaStream_t stream) {
  return CudaErrorText("ExpertFFN", "enqueueing the dispatch check",
                       EnqueueExpertFfnReport(cpu::ExpertFfnShapeOf(attrs, env), static_cast<const int32_t*>(in[kOrder]),
                                              static_cast<const int32_t*>(in[kCounts]), report, stream));
}

std::string ReportError(const Attributes& attrs, const Bindings& env, const void* report) {
  return ExpertFfnReportError(cpu::ExpertFfnShapeOf(attrs, env), report);
}
}  // namespace ffn

// ---- TopKExperts -------------------------------------------------------------------------------

namespace topk {
using namespace spec::TopKExperts;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes& attrs) {
  cpu::TopKExpertsConfig config;
  return cpu::CheckTopKExpertsAttributes(attrs, &config);
}

// The call's shape, resolved attributes and plan: "" or the error (the CPU kernel's shape check first).
std::string PlanOf(const Attributes& attrs, const Bindings& env, cpu::TopKExpertsShape* shape,
                   cpu::TopKExpertsConfig* config, TopKExpertsCudaPlan* plan) {
  *shape = cpu::TopKExpertsShapeOf(attrs, env);
  std::string error = cpu::CheckTopKExpertsAttributes(attrs, config);
  return error.empty() ? PlanTopKExpertsCuda(*shape, *config, plan) : error;
}

std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  cpu::TopKExpertsShape shape;
  cpu::TopKExpertsConfig config;
  TopKExpertsCudaPlan plan;
  std::string error = PlanOf(attrs, env, &shape, &config, &plan);
  if (error.empty()) *workspace_bytes = plan.workspace_bytes;
  return error;
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  cpu::TopKExpertsShape shape;
  cpu::TopKExpertsConfig config;
  TopKExpertsCudaPlan plan;
  std::string error = PlanOf(attrs, env, &shape, &config, &plan);
  if (!error.empty()) return error;
  return CudaErrorText("TopKExperts", "the launch",
                       TopKExperts(shape, plan, config, FloatTypeOf(env), in[kHidden],
                                   static_cast<const int32_t*>(in[kExpertIndex]), in[kExpertWeight], in[kGateUp],
                                   in[kGateUpBias], in[kDown], in[kDownBias], out[kOut], workspace, workspace_bytes,
                                   stream));
}

size_t ReportBytes(const Attributes&, const Bindings&) { return sizeof(TopKExpertsReport); }

std::string EnqueueReport(const Attributes&, const Bindings&, const void* const* in, const void* workspace,
                          void* report, cudaStream_t stream) {
  return CudaErrorText("TopKExperts", "enqueueing the expert_index check",
                       EnqueueTopKExpertsReport(static_cast<const int32_t*>(in[kExpertIndex]), workspace,
                                                static_cast<TopKExpertsReport*>(report), stream));
}

std::string ReportError(const Attributes& attrs, const Bindings& env, const void* report) {
  return TopKExpertsReportError(cpu::TopKExpertsShapeOf(attrs, env), *static_cast<const TopKExpertsReport*>(report));
}
}  // namespace topk

// ---- MaskedAttention ---------------------------------------------------------------------------

namespace attention {
using namespace spec::MaskedAttention;  // input and output indices (op_specs.h)

std::string CheckAttributes(const Attributes&) { return {}; }

// H against N (both input dims): the CPU kernel's check, in its words.
std::string Plan(const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  const cpu::MaskedAttentionShape shape = cpu::MaskedAttentionShapeOf(attrs, env);
  std::string error = cpu::CheckMaskedAttentionShape(shape);
  if (error.empty()) *workspace_bytes = MaskedAttentionWorkspaceBytes(shape);
  return error;
}

std::string Launch(const Attributes& attrs, const Bindings& env, const void* const* in, void* const* out,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const cpu::MaskedAttentionShape shape = cpu::MaskedAttentionShapeOf(attrs, env);
  std::string error = cpu::CheckMaskedAttentionShape(shape);
  if (!error.empty()) return error;
  return CudaErrorText("MaskedAttention", "the launch",
                       MaskedAttention(shape, FloatTypeOf(env), in[kQuery], in[kKey], in[kValue],
                                       static_cast<const int32_t*>(in[kMask]), in[kSinks], out[kOut], workspace,
                                       workspace_bytes, stream));
}
}  // namespace attention

// ---- the table ---------------------------------------------------------------------------------

struct Entry {
  const spec::OpSpec* op;
  std::string (*check_attributes)(const Attributes&);
  std::string (*plan)(const Attributes&, const Bindings&, size_t*);
  std::string (*launch)(const Attributes&, const Bindings&, const void* const*, void* const*, void*, size_t,
                        cudaStream_t);
  // The data checks (nullptr: none): the report's bytes, its enqueueing, its host-side reading.
  size_t (*report_bytes)(const Attributes&, const Bindings&);
  std::string (*enqueue_report)(const Attributes&, const Bindings&, const void* const*, const void*, void*,
                                cudaStream_t);
  std::string (*report_error)(const Attributes&, const Bindings&, const void*);
  // nullptr: the plan's workspace never shrinks when a dim grows, so Plan at the largest shapes is the bound.
  std::string (*workspace_bound)(const Attributes&, const Bindings* low, const Bindings& high, size_t*);
};

#define BUCKETRT_REPORT(ns) ns::ReportBytes, ns::EnqueueReport, ns::ReportError
#define BUCKETRT_NO_REPORT nullptr, nullptr, nullptr
constexpr Entry kTable[] = {
    {&spec::kSignHash, sign::CheckAttributes, sign::Plan, sign::Launch, BUCKETRT_NO_REPORT, nullptr},
    {&spec::kLSHCumulation, lsh::CheckAttributes, lsh::Plan, lsh::Launch, BUCKETRT_REPORT(lsh), lsh::WorkspaceBound},
    {&spec::kArgmaxHash, argmax::CheckAttributes, argmax::Plan, argmax::Launch, BUCKETRT_REPORT(argmax), nullptr},
    {&spec::kBucketSum, bucket_sum::CheckAttributes, bucket_sum::Plan, bucket_sum::Launch, BUCKETRT_REPORT(bucket_sum),
     nullptr},
    {&spec::kTop1Dispatch, top1::CheckAttributes, top1::Plan, top1::Launch, BUCKETRT_NO_REPORT, nullptr},
    {&spec::kSortedChunkAttention, chunked::CheckAttributes, chunked::Plan, chunked::Launch, BUCKETRT_REPORT(chunked),
     nullptr},
    {&spec::kExpertFFN, ffn::CheckAttributes, ffn::Plan, ffn::Launch, BUCKETRT_REPORT(ffn), nullptr},
    {&spec::kTopKExperts, topk::CheckAttributes, topk::Plan, topk::Launch, BUCKETRT_REPORT(topk), nullptr},
    {&spec::kMaskedAttention, attention::CheckAttributes, attention::Plan, attention::Launch, BUCKETRT_NO_REPORT,
     nullptr},
};
#undef BUCKETRT_REPORT
#undef BUCKETRT_NO_REPORT

const Entry* Find(const spec::OpSpec& op) {
  for (const Entry& e : kTable) {
    if (std::strcmp(e.op->name, op.name) == 0) return &e;
  }
  return nullptr;
}

std::string NoKernel(const spec::OpSpec& op) { return Format("%s: this build has no CUDA kernel for it", op.name); }

}  // namespace

bool HasKernel(const spec::OpSpec& op) { return Find(op) != nullptr; }

std::string CheckAttributes(const spec::OpSpec& op, const Attributes& attrs) {
  const Entry* e = Find(op);
  if (!e) return NoKernel(op);
  // The spec's bounds once more, whoever resolved the attributes (a session-wide override, the
  // test harness), then what the op's kernel itself needs.
  std::string error = CheckResolvedAttributes(op, attrs);
  return error.empty() ? e->check_attributes(attrs) : error;
}

namespace {

// Every input's and output's size in bytes fits int64, checked: TensorRT plans workspaces for an
// optimisation profile's max shapes before any data exists, and those may be anything. The ops'
// workspace sizes are products of these tensors' dims.
std::string CheckTensorSizes(const spec::OpSpec& op, const Bindings& env) {
  for (int side = 0; side < 2; ++side) {
    const spec::TensorSpec* tensors = side == 0 ? op.inputs : op.outputs;
    const int count = side == 0 ? op.num_inputs : op.num_outputs;
    for (int i = 0; i < count; ++i) {
      int64_t bytes = 4;  // the widest element bucketrt takes (int32, float32)
      for (int a = 0; a < tensors[i].rank; ++a) {
        const int64_t dim = env[tensors[i].dims[a]];
        if (dim >= 0 && !CheckedMul(bytes, dim, &bytes)) {
          return SizeOverflowError(op.name, (std::string(side == 0 ? "input '" : "output '") + tensors[i].name +
                                             "' in bytes").c_str());
        }
      }
    }
  }
  return {};
}

}  // namespace

std::string Plan(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, size_t* workspace_bytes) {
  const Entry* e = Find(op);
  *workspace_bytes = 0;
  if (!e) return NoKernel(op);
  std::string error = CheckTensorSizes(op, env);
  return error.empty() ? e->plan(attrs, env, workspace_bytes) : error;
}

std::string WorkspaceBound(const spec::OpSpec& op, const Attributes& attrs, const Bindings* low, const Bindings& high,
                           size_t* workspace_bytes) {
  std::string error = Plan(op, attrs, high, workspace_bytes);
  const Entry* e = Find(op);
  if (error.empty() && e != nullptr && e->workspace_bound != nullptr) {
    error = e->workspace_bound(attrs, low, high, workspace_bytes);
  }
  return error;
}

std::string Launch(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, const void* const* inputs,
                   void* const* outputs, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const Entry* e = Find(op);
  return e ? e->launch(attrs, env, inputs, outputs, workspace, workspace_bytes, stream) : NoKernel(op);
}

size_t ReportBytes(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env) {
  const Entry* e = Find(op);
  return e && e->report_bytes ? e->report_bytes(attrs, env) : 0;
}

std::string EnqueueReport(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env,
                          const void* const* inputs, const void* workspace, void* report, cudaStream_t stream) {
  const Entry* e = Find(op);
  if (!e) return NoKernel(op);
  if (!e->enqueue_report || e->report_bytes(attrs, env) == 0) return {};
  return e->enqueue_report(attrs, env, inputs, workspace, report, stream);
}

std::string ReportError(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, const void* report) {
  const Entry* e = Find(op);
  if (!e) return NoKernel(op);
  if (!e->report_error || e->report_bytes(attrs, env) == 0) return {};
  return e->report_error(attrs, env, report);
}

std::string CheckData(const spec::OpSpec& op, const Attributes& attrs, const Bindings& env, const void* const* inputs,
                      const void* workspace, cudaStream_t stream) {
  const size_t bytes = ReportBytes(op, attrs, env);
  if (bytes == 0) return Find(op) ? std::string() : NoKernel(op);
  void* report = nullptr;
  std::string error = CudaErrorText(op.name, "allocating the data check's host memory",
                                    cudaHostAlloc(&report, bytes, cudaHostAllocMapped));
  if (error.empty()) error = EnqueueReport(op, attrs, env, inputs, workspace, report, stream);
  if (error.empty()) error = CudaErrorText(op.name, "reading the data check", cudaStreamSynchronize(stream));
  if (error.empty()) error = ReportError(op, attrs, env, report);
  if (report != nullptr) cudaFreeHost(report);
  return error;
}

}  // namespace bucketrt::cuda
