#include "ort/op_base.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <thread>

namespace bucketrt::ort {

namespace {

// numpy-style names, as spec.py and its error messages use them.
const char* ElementTypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return "uint64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    default: return "an unsupported element type";
  }
}

}  // namespace

ONNXTensorElementDataType ToOrt(spec::DType dtype) {
  switch (dtype) {
    case spec::DType::kInt32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case spec::DType::kFloat32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case spec::DType::kFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case spec::DType::kFloat: break;  // unresolved type parameter: a programming error
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

void WidenHalf(const Ort::Float16_t* src, float* dst, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] = src[i].ToFloat();
}

void NarrowToHalf(const float* src, Ort::Float16_t* dst, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] = Ort::Float16_t(src[i]);
}

void BindOrtInputs(const spec::OpSpec& op, const Attributes& attrs, Ort::KernelContext& ctx, OrtInputs* inputs,
                   Bindings* env) {
  const size_t count = ctx.GetInputCount();
  if (count != static_cast<size_t>(op.num_inputs) || count > static_cast<size_t>(OrtInputs::kMax)) {
    throw InvalidArgument(Format("%s: expected %d inputs, got %zu", op.name, op.num_inputs, count));
  }
  inputs->count = static_cast<int>(count);
  for (int i = 0; i < inputs->count; ++i) {
    Ort::ConstValue value = ctx.GetInput(static_cast<size_t>(i));
    if (value == nullptr || !value.IsTensor()) {
      throw InvalidArgument(Format("%s: input '%s' must be a tensor", op.name, op.inputs[i].name));
    }
    Ort::TensorTypeAndShapeInfo info = value.GetTensorTypeAndShapeInfo();
    inputs->shapes[i] = info.GetShape();
    inputs->descs[i].dtype = ElementTypeName(info.GetElementType());
    inputs->descs[i].rank = static_cast<int>(inputs->shapes[i].size());
    inputs->descs[i].dims = inputs->shapes[i].data();
    inputs->values[i] = value;
  }
  const std::string error = BindInputs(op, attrs, inputs->descs, inputs->count, env);
  if (!error.empty()) throw InvalidArgument(error);
}

Attributes ReadAttributes(const spec::OpSpec& op, const OrtKernelInfo* info) {
  Ort::ConstKernelInfo kernel_info(info);
  std::vector<RawAttribute> raw(static_cast<size_t>(op.num_attributes));
  for (int i = 0; i < op.num_attributes; ++i) {
    const char* name = op.attributes[i].name;
    RawAttribute& r = raw[static_cast<size_t>(i)];
    // ORT offers no "has attribute" query: probe the types in turn (kernel creation only).
    try {
      r.int_value = kernel_info.GetAttribute<int64_t>(name);
      r.kind = RawAttribute::Kind::kInt;
      continue;
    } catch (const Ort::Exception&) {
    }
    try {
      r.string_value = kernel_info.GetAttribute<std::string>(name);
      r.kind = RawAttribute::Kind::kString;
      continue;
    } catch (const Ort::Exception&) {
    }
    try {
      r.float_value = kernel_info.GetAttribute<float>(name);
      r.kind = RawAttribute::Kind::kFloat;
    } catch (const Ort::Exception&) {
    }
  }
  Attributes attrs;
  const std::string error = ResolveAttributes(op, raw, &attrs);
  if (!error.empty()) throw InvalidArgument(error);
  return attrs;
}

Scratch::Scratch(Ort::KernelContext& ctx, size_t floats, const char* op) {
  if (floats == 0) return;
  const Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  allocator_ = ctx.GetAllocator(*static_cast<const OrtMemoryInfo*>(cpu));
  if (allocator_ == nullptr) throw Ort::Exception(Format("%s: no CPU allocator", op), ORT_FAIL);
  void* p = nullptr;
  try {
    p = allocator_->Alloc(allocator_, floats * sizeof(float));
  } catch (...) {
    p = nullptr;
  }
  if (p == nullptr) {
    Ort::GetApi().ReleaseAllocator(allocator_);
    allocator_ = nullptr;
    throw Ort::Exception(Format("%s: could not allocate %zu bytes of scratch memory", op, floats * sizeof(float)),
                         ORT_FAIL);
  }
  data_ = static_cast<float*>(p);
}

Scratch::~Scratch() {
  if (allocator_ == nullptr) return;
  if (data_ != nullptr) allocator_->Free(allocator_, data_);
  Ort::GetApi().ReleaseAllocator(allocator_);
}

namespace {

// fn's tasks wrapped so that the parallel-for sees how many ran at once.
struct CountedTasks {
  void (*fn)(void*, size_t);
  void* data;
  std::atomic<size_t> running{0};
  std::atomic<size_t> most{0};

  static void Run(void* self, size_t index) {
    auto* tasks = static_cast<CountedTasks*>(self);
    const size_t now = tasks->running.fetch_add(1, std::memory_order_relaxed) + 1;
    size_t most = tasks->most.load(std::memory_order_relaxed);
    while (now > most && !tasks->most.compare_exchange_weak(most, now, std::memory_order_relaxed)) {
    }
    tasks->fn(tasks->data, index);
    tasks->running.fetch_sub(1, std::memory_order_relaxed);
  }
};

}  // namespace

int64_t MachineWorkers() {
  static const int64_t workers = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    const int64_t affinity = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
    return CpuLimit(static_cast<int64_t>(std::thread::hardware_concurrency()), affinity, CgroupCpuQuota(""));
  }();
  return workers;
}

void CpuRun::Run(void* self, void (*fn)(void*, size_t), size_t total, void* data) {
  auto* run = static_cast<CpuRun*>(self);
  CountedTasks tasks;
  tasks.fn = fn;
  tasks.data = data;
  // num_batch 0: every index its own task, taken by the pool's threads as they free up.
  run->ctx.ParallelFor(&CountedTasks::Run, total, 0, &tasks);
  run->offered_ = std::max(run->offered_, total);
  run->ran_at_once_ = std::max(run->ran_at_once_, tasks.most.load(std::memory_order_relaxed));
}

CpuRun::~CpuRun() {
  // The run's widest parallel-for speaks for the pool (a kernel's short follow-up passes, such as
  // ExpertFFN's combine, would understate it).
  if (offered_ > 0) workers_.Observe(offered_, ran_at_once_);
}

}  // namespace bucketrt::ort
