#include "ort/op_base.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "cpu/huge_pages.h"

namespace bucketrt::ort {

namespace {

// numpy-style names, as schema.py and its error messages use them.
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
    case spec::DType::kInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
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

void BackWeightsWithHugePages(const spec::OpSpec& op, spec::DType float_type, const OrtKernelInfo* info) noexcept {
  // A hint only: the kernel computes the same without it, so nothing here may fail the session
  // (an input the node does not have, or of another kind, is the run's checks' to report).
  try {
    const OrtApi& api = Ort::GetApi();
    for (int i = 0; i < op.num_inputs; ++i) {
      if (!op.inputs[i].weights) continue;
      int is_constant = 0;
      const OrtValue* value = nullptr;
      OrtStatus* status = api.KernelInfoGetConstantInput_tensor(info, static_cast<size_t>(i), &is_constant, &value);
      if (status != nullptr) {
        api.ReleaseStatus(status);
        continue;
      }
      if (!is_constant || value == nullptr) continue;  // fed at run time: the caller's memory, not moved
      Ort::ConstValue tensor(value);
      if (!tensor.IsTensor()) continue;
      const size_t elements = tensor.GetTensorTypeAndShapeInfo().GetElementCount();
      const spec::DType dtype = spec::Concrete(op.inputs[i].dtype, float_type);
      cpu::BackWithHugePages(tensor.GetTensorRawData(), elements * spec::ElementBytes(dtype));
    }
  } catch (...) {
  }
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

namespace {

// What one KernelInfoGetAttribute* call found.
enum class Probe { kRead, kAbsent, kOtherType };

// ONNX Runtime's attribute getters fail alike for an absent attribute and one of another type;
// only the message tells them apart ("No attribute with name:'x'is defined." from
// OpNodeProtoHelper::GetAttr, unchanged since ORT 1.0). Anything else is taken as present, so
// that an attribute of an unexpected kind is reported, never silently defaulted.
Probe Classify(OrtStatus* status) {
  if (status == nullptr) return Probe::kRead;
  const OrtApi& api = Ort::GetApi();
  const char* message = api.GetErrorMessage(status);
  const bool absent = message != nullptr && std::strstr(message, "No attribute with name") != nullptr;
  api.ReleaseStatus(status);
  return absent ? Probe::kAbsent : Probe::kOtherType;
}

// The attribute `name` of the node with whatever type it has (the C API, not the C++ wrappers:
// the misspelling probes below make thousands of failing calls, too many for exceptions).
RawAttribute ReadRaw(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  RawAttribute r;
  Probe probe = Classify(api.KernelInfoGetAttribute_int64(info, name, &r.int_value));
  if (probe == Probe::kAbsent) return r;  // kMissing
  if (probe == Probe::kRead) {
    r.kind = RawAttribute::Kind::kInt;
    return r;
  }
  size_t size = 0;
  if (Classify(api.KernelInfoGetAttribute_string(info, name, nullptr, &size)) == Probe::kRead) {
    std::string text(size, '\0');
    if (size > 0 && Classify(api.KernelInfoGetAttribute_string(info, name, &text[0], &size)) == Probe::kRead) {
      text.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
      r.kind = RawAttribute::Kind::kString;
      r.string_value = std::move(text);
      return r;
    }
  }
  float f = 0;
  if (Classify(api.KernelInfoGetAttribute_float(info, name, &f)) == Probe::kRead) {
    r.kind = RawAttribute::Kind::kFloat;
    r.float_value = f;
    return r;
  }
  // The list getters read the other list kinds as empty lists (ORT takes ints() of a FLOATS
  // attribute): a list is only ints or floats when it has values of that kind.
  size_t ints = 0, floats = 0;
  const bool int_list = Classify(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &ints)) == Probe::kRead;
  const bool float_list = Classify(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &floats)) == Probe::kRead;
  if (int_list && ints > 0) {
    r.int_values.resize(ints);
    if (Classify(api.KernelInfoGetAttributeArray_int64(info, name, r.int_values.data(), &ints)) == Probe::kRead) {
      r.int_values.resize(ints);
      r.kind = RawAttribute::Kind::kInts;
      return r;
    }
  }
  if (float_list && floats > 0) {
    std::vector<float> values(floats);
    if (Classify(api.KernelInfoGetAttributeArray_float(info, name, values.data(), &floats)) == Probe::kRead) {
      r.kind = RawAttribute::Kind::kFloats;
      r.float_values.assign(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(floats));
      return r;
    }
  }
  OrtAllocator* allocator = nullptr;
  if (Classify(api.GetAllocatorWithDefaultOptions(&allocator)) == Probe::kRead) {
    OrtValue* tensor = nullptr;
    if (Classify(api.KernelInfoGetAttribute_tensor(info, name, allocator, &tensor)) == Probe::kRead) {
      api.ReleaseValue(tensor);
      r.kind = RawAttribute::Kind::kTensor;
      return r;
    }
  }
  r.kind = RawAttribute::Kind::kOther;  // strings, graphs, ...: present, of a kind no bucketrt op takes
  return r;
}

bool Present(const OrtKernelInfo* info, const std::string& name) {
  int64_t ignored = 0;
  return Classify(Ort::GetApi().KernelInfoGetAttribute_int64(info, name.c_str(), &ignored)) != Probe::kAbsent;
}

// ONNX Runtime shows a custom op no list of its node's attributes (not through OrtKernelInfo in
// any version up to 1.24; the graph API's Node_GetAttributes needs an OrtNode, which only plugin
// execution providers get). What it can do is look a name up. So the names one edit away from
// each of the op's attributes (a letter dropped, added, changed, or two swapped: `activatio`,
// `chunks_befor`, `Causal`) are looked up, and any the node carries is an unknown attribute.
// A name further off is not seen by this backend (the reference, the exporter and TensorRT see
// every name); docs/ops.md says so.
std::vector<std::string> MisspeltNames(const spec::OpSpec& op, const OrtKernelInfo* info) {
  // The characters of attribute names; capitals only as a letter of the name changed in case
  // (`Causal`), which keeps the lookups near 2,000 for an op like SignHash (about 10 ms at session
  // creation on this machine's 2 cores).
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
  std::vector<std::string> candidates;
  for (int a = 0; a < op.num_attributes; ++a) {
    const std::string name = op.attributes[a].name;
    for (size_t i = 0; i <= name.size(); ++i) {
      if (i < name.size()) {
        candidates.push_back(name.substr(0, i) + name.substr(i + 1));  // dropped
        if (i + 1 < name.size()) {
          std::string swapped = name;
          std::swap(swapped[i], swapped[i + 1]);
          candidates.push_back(swapped);
        }
      }
      if (i < name.size() && name[i] >= 'a' && name[i] <= 'z') {
        std::string recased = name;
        recased[i] = static_cast<char>(name[i] - 'a' + 'A');
        candidates.push_back(recased);
      }
      for (const char* c = kAlphabet; *c; ++c) {
        candidates.push_back(name.substr(0, i) + *c + name.substr(i));  // added
        if (i < name.size() && name[i] != *c) {
          std::string changed = name;
          changed[i] = *c;
          candidates.push_back(changed);
        }
      }
    }
  }
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  std::vector<std::string> found;
  for (const std::string& candidate : candidates) {
    bool declared = candidate.empty() || IsRoutingAttribute(candidate.c_str());
    for (int a = 0; a < op.num_attributes && !declared; ++a) declared = candidate == op.attributes[a].name;
    if (!declared && Present(info, candidate)) found.push_back(candidate);
  }
  return found;
}

}  // namespace

Attributes ReadAttributes(const spec::OpSpec& op, const OrtKernelInfo* info) {
  std::vector<RawAttribute> raw(static_cast<size_t>(op.num_attributes));
  for (int i = 0; i < op.num_attributes; ++i) raw[static_cast<size_t>(i)] = ReadRaw(info, op.attributes[i].name);
  std::string error = CheckAttributeNames(op, MisspeltNames(op, info));
  Attributes attrs;
  if (error.empty()) error = ResolveAttributes(op, raw, &attrs);
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
