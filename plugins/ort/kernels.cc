#include "ort/kernels.h"

#include "cpu/expert_ffn.h"
#include "cpu/expert_ffn_int8.h"
#include "cpu/linear_int8.h"
#include "cpu/lsh_cumulation.h"
#include "cpu/masked_attention.h"
#include "cpu/top1_dispatch.h"
#include "cpu/sign_hash.h"
#include "cpu/argmax_hash.h"
#include "cpu/bucket_sum.h"
#include "cpu/sorted_chunk_attention.h"
#include "cpu/top_k_experts.h"
#include "cpu/top_k_experts_int8.h"

#include <algorithm>
#include <string>
#include <tuple>

namespace bucketrt::ort {

namespace {

void ThrowIfError(const std::string& error) {
  if (!error.empty()) throw InvalidArgument(error);
}

}  // namespace

// Input and output indices, generated from the spec (op_specs.h).
namespace lsh = spec::LSHCumulation;
namespace sign = spec::SignHash;
namespace top1 = spec::Top1Dispatch;
namespace ffn = spec::ExpertFFN;
namespace ffn8 = spec::ExpertFFNInt8;
namespace argmax = spec::ArgmaxHash;
namespace bucket_sum = spec::BucketSum;
namespace chunked = spec::SortedChunkAttention;
namespace topk = spec::TopKExperts;
namespace topk8 = spec::TopKExpertsInt8;
namespace linear8 = spec::LinearInt8;
namespace attention = spec::MaskedAttention;

// The attributes' bounds are the spec's, checked by ReadAttributes before any kernel is made.
LSHCumulationKernel::LSHCumulationKernel(const Attributes& /*attrs*/) {}

void LSHCumulationKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::LshCumulationShape shape = cpu::LshCumulationShapeOf(attrs, env);

  const int32_t* query_mask = in.Data<int32_t>(lsh::kQueryMask);
  const int32_t* query_hash = in.Data<int32_t>(lsh::kQueryHash);
  const int32_t* key_mask = in.Data<int32_t>(lsh::kKeyMask);
  const int32_t* key_hash = in.Data<int32_t>(lsh::kKeyHash);
  int64_t max_code = -1;
  for (auto [mask, codes, rows, name] : {std::make_tuple(query_mask, query_hash, shape.num_query, "query_hash"),
                                         std::make_tuple(key_mask, key_hash, shape.num_key, "key_hash")}) {
    const std::string error =
        cpu::CheckLshCodes(op.name, name, mask, codes, shape.batch, rows, shape.num_hash, shape.capacity, &max_code);
    if (!error.empty()) throw InvalidArgument(error);
  }

  // Hash tables: one slot per worker (at most one per hardware thread, each a hash group's tables
  // for one slab, ~512 KiB at the benchmark size), taken in one allocation per run from the
  // session's CPU allocator. That allocator is ORT's arena, so repeated runs reuse the same block
  // (no heap traffic on the hot path), a failure is reported here as a status rather than inside
  // a pool thread, and the memory goes back to the session, which thread_local buffers would not.
  const cpu::LshCumulationPlan plan = cpu::PlanLshCumulation(shape, max_code, run.max_workers());
  // float16 (T): the float32 kernel on widened values, its output rounded once (the CUDA kernels'
  // arithmetic; the conversions are two passes over data the kernel reads m times anyway).
  const bool half = env.float_type() == spec::DType::kFloat16;
  const size_t values = static_cast<size_t>(shape.batch * shape.num_key * shape.dim);
  size_t outputs = 0;
  void* out = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, lsh::kCumulation, env, &outputs))
                   : static_cast<void*>(AllocateOutput<float>(op, ctx, lsh::kCumulation, env, &outputs));
  Scratch widened(ctx, half ? values + outputs : 0, op.name);
  const float* value = in.Data<float>(lsh::kValue);
  float* out_f = static_cast<float*>(out);
  if (half) {
    WidenHalf(in.Data<Ort::Float16_t>(lsh::kValue), widened.data(), values);
    value = widened.data();
    out_f = widened.data() + values;
  }
  Scratch scratch(ctx, plan.scratch_floats(), op.name);
  cpu::LshCumulation(shape, plan, query_mask, query_hash, key_mask, key_hash, value, out_f, scratch.data(),
                     run.parallel());
  if (half) NarrowToHalf(out_f, static_cast<Ort::Float16_t*>(out), outputs);
}

SignHashKernel::SignHashKernel(const Attributes& /*attrs*/) {}

void SignHashKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::SignHashShape shape = cpu::SignHashShapeOf(attrs, env);
  cpu::SignHashPlan plan;
  const std::string error = cpu::PlanSignHash(shape, run.max_workers(), &plan);
  if (!error.empty()) throw InvalidArgument(error);

  int32_t* hash = AllocateOutput<int32_t>(op, ctx, sign::kHash, env);
  // float16 (T): hashed in float32, widened exactly, so the codes are those of the float32 inputs.
  const float* vector = in.Data<float>(sign::kVector);
  const float* projection = in.Data<float>(sign::kProjection);
  const size_t vectors = static_cast<size_t>(shape.batch * shape.length * shape.dim);
  const size_t projections = static_cast<size_t>(shape.groups * shape.proj_rows * shape.proj_cols);
  const bool half = env.float_type() == spec::DType::kFloat16;
  Scratch widened(ctx, half ? vectors + projections : 0, op.name);
  if (half) {
    WidenHalf(in.Data<Ort::Float16_t>(sign::kVector), widened.data(), vectors);
    WidenHalf(in.Data<Ort::Float16_t>(sign::kProjection), widened.data() + vectors, projections);
    vector = widened.data();
    projection = widened.data() + vectors;
  }
  Scratch scratch(ctx, plan.scratch_floats(), op.name);
  cpu::SignHash(shape, plan, in.Data<int32_t>(sign::kMask), vector, projection, hash, scratch.data(),
                run.parallel());
}

Top1DispatchKernel::Top1DispatchKernel(const Attributes& /*attrs*/) {}

void Top1DispatchKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::Top1DispatchShape shape = cpu::Top1DispatchShapeOf(attrs, env);
  const std::string error = cpu::CheckTop1DispatchTokens(shape);
  if (!error.empty()) throw InvalidArgument(error);
  int32_t* expert = AllocateOutput<int32_t>(op, ctx, top1::kExpert, env);
  // float16 (T): probs widened exactly, so the choices are those of the float32 values; the gate
  // is one of them, narrowed back exactly.
  const bool half = env.float_type() == spec::DType::kFloat16;
  size_t tokens = 0;
  void* gate = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, top1::kGate, env, &tokens))
                    : static_cast<void*>(AllocateOutput<float>(op, ctx, top1::kGate, env, &tokens));
  int32_t* priority = AllocateOutput<int32_t>(op, ctx, top1::kPriority, env);
  int32_t* counts = AllocateOutput<int32_t>(op, ctx, top1::kCounts, env);
  int32_t* order = AllocateOutput<int32_t>(op, ctx, top1::kOrder, env);
  const size_t probs = tokens * static_cast<size_t>(shape.num_experts);
  Scratch widened(ctx, half ? probs + tokens : 0, op.name);
  const float* p = in.Data<float>(top1::kProbs);
  float* gate_f = static_cast<float*>(gate);
  if (half) {
    WidenHalf(in.Data<Ort::Float16_t>(top1::kProbs), widened.data(), probs);
    p = widened.data();
    gate_f = widened.data() + probs;
  }
  cpu::Top1Dispatch(shape, p, expert, gate_f, priority, counts, order, run.parallel());
  if (half) NarrowToHalf(gate_f, static_cast<Ort::Float16_t*>(gate), tokens);
}

ExpertFFNKernel::ExpertFFNKernel(const Attributes& attrs) {
  cpu::Activation act;
  const std::string error = cpu::ParseActivation(attrs.String("activation"), &act);
  if (!error.empty()) throw InvalidArgument(error);
}

void ExpertFFNKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::ExpertFfnShape shape = cpu::ExpertFfnShapeOf(attrs, env);
  cpu::Activation act;
  ThrowIfError(cpu::ParseActivation(attrs.String("activation"), &act));  // checked at creation: a lookup
  const int32_t* order = in.Data<int32_t>(ffn::kOrder);
  const int32_t* counts = in.Data<int32_t>(ffn::kCounts);
  int64_t listed = 0;
  const std::string error = cpu::CheckExpertDispatch(op.name, order, counts, shape.tokens, shape.num_experts, &listed);
  if (!error.empty()) throw InvalidArgument(error);

  // The tiles (and so the order of every sum) follow the machine's CPUs, never the session's
  // threads, so that a result does not depend on intra_op_num_threads; only the workers that pull
  // the tiles do.
  cpu::ExpertFfnPlan plan = cpu::PlanExpertFfn(shape, counts, MachineWorkers());
  plan.workers = std::min(plan.workers, run.max_workers());
  // float16 (T): the float32 kernel on widened inputs (weights included), its output rounded once
  // (the CUDA kernel's arithmetic).
  const bool half = env.float_type() == spec::DType::kFloat16;
  const size_t hidden_floats = static_cast<size_t>(shape.tokens * shape.dim);
  const size_t weight_floats = static_cast<size_t>(shape.num_experts * shape.ff * shape.dim);
  const size_t gate_floats = static_cast<size_t>(shape.tokens);
  size_t outputs = 0;
  void* out = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, ffn::kOut, env, &outputs))
                   : static_cast<void*>(AllocateOutput<float>(op, ctx, ffn::kOut, env, &outputs));
  Scratch widened(ctx, half ? hidden_floats + gate_floats + 2 * weight_floats + outputs : 0, op.name);
  const float* hidden = in.Data<float>(ffn::kHidden);
  const float* gate = in.Data<float>(ffn::kGate);
  const float* wi = in.Data<float>(ffn::kWi);
  const float* wo = in.Data<float>(ffn::kWo);
  float* out_f = static_cast<float*>(out);
  if (half) {
    float* next = widened.data();
    for (auto [index, count, target] : {std::make_tuple(ffn::kHidden, hidden_floats, &hidden),
                                        std::make_tuple(ffn::kGate, gate_floats, &gate),
                                        std::make_tuple(ffn::kWi, weight_floats, &wi),
                                        std::make_tuple(ffn::kWo, weight_floats, &wo)}) {
      WidenHalf(in.Data<Ort::Float16_t>(index), next, count);
      *target = next;
      next += count;
    }
    out_f = next;
  }
  Scratch scratch(ctx, plan.scratch_floats(), op.name);
  cpu::ExpertFfn(shape, plan, act, hidden, order, counts, gate, wi, wo, out_f, scratch.data(), run.parallel());
  if (half) NarrowToHalf(out_f, static_cast<Ort::Float16_t*>(out), outputs);
}

ArgmaxHashKernel::ArgmaxHashKernel(const Attributes& /*attrs*/) {}

void ArgmaxHashKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::ArgmaxHashShape shape = cpu::ArgmaxHashShapeOf(attrs, env);
  const int32_t* sizes = in.Data<int32_t>(argmax::kBucketSizes);
  const std::string error = cpu::CheckBucketSizes(sizes, shape.factors, shape.num_hash, shape.columns);
  if (!error.empty()) throw InvalidArgument(error);
  const std::vector<int32_t> size_list(sizes, sizes + shape.factors);
  int32_t* buckets = AllocateOutput<int32_t>(op, ctx, argmax::kBuckets, env);
  // float16 (T): hashed in float32, widened exactly, so the buckets are those of the float32 inputs.
  const float* vector = in.Data<float>(argmax::kVector);
  const float* projection = in.Data<float>(argmax::kProjection);
  const size_t vectors = static_cast<size_t>(shape.batch * shape.heads * shape.length * shape.dim);
  const size_t projections = static_cast<size_t>(shape.heads * shape.dim * shape.columns);
  const bool half = env.float_type() == spec::DType::kFloat16;
  Scratch widened(ctx, half ? vectors + projections : 0, op.name);
  if (half) {
    WidenHalf(in.Data<Ort::Float16_t>(argmax::kVector), widened.data(), vectors);
    WidenHalf(in.Data<Ort::Float16_t>(argmax::kProjection), widened.data() + vectors, projections);
    vector = widened.data();
    projection = widened.data() + vectors;
  }
  cpu::ArgmaxHash(shape, in.Data<int32_t>(argmax::kMask), vector, projection, size_list, buckets,
                  run.parallel());
}

BucketSumKernel::BucketSumKernel(const Attributes& /*attrs*/) {}

void BucketSumKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::BucketSumShape shape = cpu::BucketSumShapeOf(attrs, env);
  const int32_t* bucket = in.Data<int32_t>(bucket_sum::kBucket);
  const std::string error = cpu::CheckBuckets(shape, bucket);
  if (!error.empty()) throw InvalidArgument(error);
  // float16 (T): the float32 kernel on widened inputs, its outputs rounded once.
  const bool half = env.float_type() == spec::DType::kFloat16;
  size_t sums = 0, weight_sums = 0;
  void* sum = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, bucket_sum::kSum, env, &sums))
                   : static_cast<void*>(AllocateOutput<float>(op, ctx, bucket_sum::kSum, env, &sums));
  void* weight_sum = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, bucket_sum::kWeightSum, env, &weight_sums))
                          : static_cast<void*>(AllocateOutput<float>(op, ctx, bucket_sum::kWeightSum, env, &weight_sums));
  const size_t rows = static_cast<size_t>(shape.groups * shape.rows);
  const size_t vectors = rows * static_cast<size_t>(shape.dim);
  Scratch widened(ctx, half ? rows + vectors + sums + weight_sums : 0, op.name);
  const float* weight = in.Data<float>(bucket_sum::kWeight);
  const float* vector = in.Data<float>(bucket_sum::kVector);
  float* sum_f = static_cast<float*>(sum);
  float* weight_sum_f = static_cast<float*>(weight_sum);
  if (half) {
    float* w = widened.data();
    WidenHalf(in.Data<Ort::Float16_t>(bucket_sum::kWeight), w, rows);
    WidenHalf(in.Data<Ort::Float16_t>(bucket_sum::kVector), w + rows, vectors);
    weight = w;
    vector = w + rows;
    sum_f = w + rows + vectors;
    weight_sum_f = sum_f + sums;
  }
  cpu::BucketSum(shape, bucket, weight, vector, sum_f, weight_sum_f, run.parallel());
  if (half) {
    NarrowToHalf(sum_f, static_cast<Ort::Float16_t*>(sum), sums);
    NarrowToHalf(weight_sum_f, static_cast<Ort::Float16_t*>(weight_sum), weight_sums);
  }
}

ExpertFFNInt8Kernel::ExpertFFNInt8Kernel(const Attributes& attrs) {
  cpu::Activation act;
  ThrowIfError(cpu::ParseActivation(attrs.String("activation"), &act));
}

void ExpertFFNInt8Kernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::ExpertFfnInt8Shape shape = cpu::ExpertFfnInt8ShapeOf(attrs, env);
  ThrowIfError(cpu::CheckExpertFfnInt8Shape(shape));
  cpu::Activation act;
  ThrowIfError(cpu::ParseActivation(attrs.String("activation"), &act));  // checked at creation: a lookup
  const int32_t* order = in.Data<int32_t>(ffn8::kOrder);
  const int32_t* counts = in.Data<int32_t>(ffn8::kCounts);
  int64_t listed = 0;
  ThrowIfError(cpu::CheckExpertDispatch(op.name, order, counts, shape.tokens, shape.num_experts, &listed));
  // Every sum is an exact int32 sum: the split over workers changes no bit, so the session's
  // workers may set it.
  const cpu::ExpertFfnInt8Plan plan = cpu::PlanExpertFfnInt8(shape, counts, run.max_workers());
  size_t outputs = 0;
  float* out = AllocateOutput<float>(op, ctx, ffn8::kOut, env, &outputs);
  Scratch scratch(ctx, (plan.scratch_bytes(shape) + sizeof(float) - 1) / sizeof(float), op.name);
  cpu::ExpertFfnInt8(shape, plan, act, in.Data<float>(ffn8::kHidden), order, counts, in.Data<float>(ffn8::kGate),
                     in.Data<int8_t>(ffn8::kWi), in.Data<float>(ffn8::kWiScale), in.Data<int8_t>(ffn8::kWo),
                     in.Data<float>(ffn8::kWoScale), out, scratch.data(), run.parallel());
}

SortedChunkAttentionKernel::SortedChunkAttentionKernel(const Attributes& /*attrs*/) {}

void SortedChunkAttentionKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::ChunkAttentionShape shape = cpu::ChunkAttentionShapeOf(attrs, env);
  cpu::ChunkAttentionPlan plan;
  std::string error = cpu::PlanChunkAttention(shape, attrs.Int("max_length"), run.max_workers(), &plan);  // the plan's, not the shape's
  if (!error.empty()) throw InvalidArgument(error);
  // float16 (T): the float32 kernel on widened query, key and value, its output rounded once (the
  // CUDA kernel's arithmetic).
  const bool half = env.float_type() == spec::DType::kFloat16;
  size_t outputs = 0;
  void* out = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, chunked::kOut, env, &outputs))
                   : static_cast<void*>(AllocateOutput<float>(op, ctx, chunked::kOut, env, &outputs));
  Scratch widened(ctx, half ? 4 * outputs : 0, op.name);  // query, key, value and out are all [B, H, N, D]
  const float* qkv[3] = {in.Data<float>(chunked::kQuery), in.Data<float>(chunked::kKey),
                         in.Data<float>(chunked::kValue)};
  float* out_f = static_cast<float*>(out);
  if (half) {
    for (int i = 0; i < 3; ++i) {
      WidenHalf(in.Data<Ort::Float16_t>(chunked::kQuery + i), widened.data() + i * outputs, outputs);
      qkv[i] = widened.data() + i * outputs;
    }
    out_f = widened.data() + 3 * outputs;
  }
  Scratch scratch(ctx, plan.scratch_floats(), op.name);
  error = cpu::ChunkAttention(shape, plan, qkv[0], qkv[1], qkv[2], in.Data<int32_t>(chunked::kMask),
                              in.Data<int32_t>(chunked::kBuckets), out_f, scratch.data(), run.parallel());
  if (!error.empty()) throw InvalidArgument(error);
  if (half) NarrowToHalf(out_f, static_cast<Ort::Float16_t*>(out), outputs);
}

// The limit against the gating (the attributes alone): checked when the session is created.
TopKExpertsKernel::TopKExpertsKernel(const Attributes& attrs) {
  cpu::TopKExpertsConfig config;
  ThrowIfError(cpu::CheckTopKExpertsAttributes(attrs, &config));
}

void TopKExpertsKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::TopKExpertsShape shape = cpu::TopKExpertsShapeOf(attrs, env);
  cpu::TopKExpertsConfig config;
  ThrowIfError(cpu::CheckTopKExpertsAttributes(attrs, &config));  // checked at creation: lookups
  ThrowIfError(cpu::CheckTopKExpertsShape(shape, config));
  const int32_t* expert_index = in.Data<int32_t>(topk::kExpertIndex);
  ThrowIfError(cpu::CheckTopKExpertsIndex(shape, expert_index));
  // float16 (T): hidden and the routing weights widened, the output rounded once from float32 (all
  // in proportion to T); the experts' weights and biases are widened inside the kernel, per task,
  // only where a token's pick reads them.
  const bool half = env.float_type() == spec::DType::kFloat16;
  cpu::TopKExpertsPlan plan;
  ThrowIfError(cpu::PlanTopKExperts(shape, run.max_workers(), half, &plan));
  const size_t hidden_floats = static_cast<size_t>(shape.tokens * shape.dim);
  const size_t weight_floats = static_cast<size_t>(shape.tokens * shape.picks);
  size_t outputs = 0;
  void* out = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, topk::kOut, env, &outputs))
                   : static_cast<void*>(AllocateOutput<float>(op, ctx, topk::kOut, env, &outputs));
  Scratch widened(ctx, half ? hidden_floats + weight_floats + outputs : 0, op.name);
  const float* hidden = in.Data<float>(topk::kHidden);
  const float* expert_weight = in.Data<float>(topk::kExpertWeight);
  float* out_f = static_cast<float*>(out);
  if (half) {
    float* w = widened.data();
    WidenHalf(in.Data<Ort::Float16_t>(topk::kHidden), w, hidden_floats);
    WidenHalf(in.Data<Ort::Float16_t>(topk::kExpertWeight), w + hidden_floats, weight_floats);
    hidden = w;
    expert_weight = w + hidden_floats;
    out_f = w + hidden_floats + weight_floats;
  }
  auto raw = [&](int index) { return in.values[index].GetTensorRawData(); };
  Scratch scratch(ctx, plan.scratch_floats(), op.name);
  cpu::TopKExperts(shape, plan, config, hidden, expert_index, expert_weight, raw(topk::kGateUp),
                   raw(topk::kGateUpBias), raw(topk::kDown), raw(topk::kDownBias), out_f, scratch.data(),
                   run.parallel());
  if (half) NarrowToHalf(out_f, static_cast<Ort::Float16_t*>(out), outputs);
}

// The limit against the gating (the attributes alone): checked when the session is created.
TopKExpertsInt8Kernel::TopKExpertsInt8Kernel(const Attributes& attrs) {
  cpu::TopKExpertsConfig config;
  ThrowIfError(cpu::CheckTopKExpertsAttributes(attrs, &config, spec::kTopKExpertsInt8.name));
}

void TopKExpertsInt8Kernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::TopKExpertsInt8Shape shape = cpu::TopKExpertsInt8ShapeOf(attrs, env);
  cpu::TopKExpertsConfig config;
  ThrowIfError(cpu::CheckTopKExpertsAttributes(attrs, &config, op.name));  // checked at creation: lookups
  ThrowIfError(cpu::CheckTopKExpertsInt8Shape(shape, config));
  const int32_t* expert_index = in.Data<int32_t>(topk8::kExpertIndex);
  ThrowIfError(cpu::CheckTopKExpertsIndex(shape, expert_index));
  // Every sum is an exact int32 sum and the tasks follow the shape: the session's workers only
  // pull them.
  cpu::TopKExpertsInt8Plan plan;
  ThrowIfError(cpu::PlanTopKExpertsInt8(shape, run.max_workers(), &plan));
  size_t outputs = 0;
  float* out = AllocateOutput<float>(op, ctx, topk8::kOut, env, &outputs);
  Scratch scratch(ctx, (plan.scratch_bytes() + sizeof(float) - 1) / sizeof(float), op.name);
  cpu::TopKExpertsInt8(shape, plan, config, in.Data<float>(topk8::kHidden), expert_index,
                       in.Data<float>(topk8::kExpertWeight), in.Data<int8_t>(topk8::kGateUp),
                       in.Data<float>(topk8::kGateUpScale), in.Data<float>(topk8::kGateUpBias),
                       in.Data<int8_t>(topk8::kDown), in.Data<float>(topk8::kDownScale),
                       in.Data<float>(topk8::kDownBias), out, scratch.data(), run.parallel());
}

LinearInt8Kernel::LinearInt8Kernel(const Attributes& /*attrs*/) {}

void LinearInt8Kernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::LinearInt8Shape shape = cpu::LinearInt8ShapeOf(attrs, env);
  ThrowIfError(cpu::CheckLinearInt8Shape(shape));
  // Every sum is an exact int32 sum and the tasks follow the shape: the session's workers only
  // pull them.
  cpu::LinearInt8Plan plan;
  ThrowIfError(cpu::PlanLinearInt8(shape, run.max_workers(), &plan));
  size_t outputs = 0;
  float* out = AllocateOutput<float>(op, ctx, linear8::kOut, env, &outputs);
  Scratch scratch(ctx, (plan.scratch_bytes() + sizeof(float) - 1) / sizeof(float), op.name);
  cpu::LinearInt8(shape, plan, in.Data<float>(linear8::kInput), in.Data<int8_t>(linear8::kWeight),
                  in.Data<float>(linear8::kWeightScale), in.Data<float>(linear8::kBias), out, scratch.data(),
                  run.parallel());
}

// H against N: checked per call (both are input dims).
MaskedAttentionKernel::MaskedAttentionKernel(const Attributes& /*attrs*/) {}

void MaskedAttentionKernel::Compute(CpuRun& run, const OrtInputs& in, const Attributes& attrs, const Bindings& env) {
  Ort::KernelContext& ctx = run.ctx;
  const spec::OpSpec& op = Spec();
  const cpu::MaskedAttentionShape shape = cpu::MaskedAttentionShapeOf(attrs, env);
  cpu::MaskedAttentionPlan plan;
  ThrowIfError(cpu::PlanMaskedAttention(shape, run.max_workers(), &plan));
  // float16 (T): the inputs widened, the output rounded once from float32.
  const bool half = env.float_type() == spec::DType::kFloat16;
  const int floats[] = {attention::kQuery, attention::kKey, attention::kValue, attention::kSinks};
  size_t counts[4] = {}, widened_floats = 0;
  for (int i = 0; i < 4; ++i) {
    counts[i] = in.values[floats[i]].GetTensorTypeAndShapeInfo().GetElementCount();
    widened_floats += half ? counts[i] : 0;
  }
  size_t outputs = 0;
  void* out = half ? static_cast<void*>(AllocateOutput<Ort::Float16_t>(op, ctx, attention::kOut, env, &outputs))
                   : static_cast<void*>(AllocateOutput<float>(op, ctx, attention::kOut, env, &outputs));
  Scratch widened(ctx, half ? widened_floats + outputs : 0, op.name);
  const float* data[4];
  float* w = widened.data();
  for (int i = 0; i < 4; ++i) {
    if (half) {
      WidenHalf(in.Data<Ort::Float16_t>(floats[i]), w, counts[i]);
      data[i] = w;
      w += counts[i];
    } else {
      data[i] = in.Data<float>(floats[i]);
    }
  }
  float* out_f = half ? w : static_cast<float*>(out);
  Scratch scratch(ctx, plan.scratch_floats(), op.name);
  cpu::MaskedAttention(shape, plan, data[0], data[1], data[2], in.Data<int32_t>(attention::kMask), data[3], out_f,
                       scratch.data(), run.parallel());
  if (half) NarrowToHalf(out_f, static_cast<Ort::Float16_t*>(out), outputs);
}

}  // namespace bucketrt::ort
