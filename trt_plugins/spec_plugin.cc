#include "spec_plugin.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <utility>

#include "cuda/ops.h"
#include "library.h"
#include "output_dims.h"

namespace bucketrt::trt {

namespace {

using nvinfer1::DataType;
using nvinfer1::ErrorCode;
using Severity = nvinfer1::ILogger::Severity;

constexpr bool EveryOpsOutputDimsResolve() {
  for (const spec::OpSpec* op : spec::kAllOps) {
    if (!OutputDimsResolve(*op)) return false;
  }
  return true;
}
static_assert(EveryOpsOutputDimsResolve(),
              "every output dim of every op must be an int attribute or an input's dim (see output_dims.h)");

// The most inputs or outputs an op has (ExpertFFN: 6 inputs; Top1Dispatch: 5 outputs).
constexpr int kMaxTensors = 8;

// numpy names, as the shared checks word dtypes.
const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    case DataType::kINT8: return "int8";
    case DataType::kUINT8: return "uint8";
    case DataType::kBOOL: return "bool";
    case DataType::kBF16: return "bfloat16";
    case DataType::kFP8: return "float8";
    default: return "a type bucketrt does not take";
  }
}

DataType ToTrt(spec::DType dtype) {
  switch (dtype) {
    case spec::DType::kInt32: return DataType::kINT32;
    case spec::DType::kInt8: return DataType::kINT8;
    case spec::DType::kFloat16: return DataType::kHALF;
    default: return DataType::kFLOAT;
  }
}

bool IsFloatTypeOf(const spec::OpSpec& op, DataType type) {
  for (int k = 0; k < op.num_float_types; ++k) {
    if (ToTrt(op.float_types[k]) == type) return true;
  }
  return false;
}

// TensorRT numbers a plugin's tensors inputs first, then outputs.
const spec::TensorSpec& TensorAt(const spec::OpSpec& op, int pos) {
  return pos < op.num_inputs ? op.inputs[pos] : op.outputs[pos - op.num_inputs];
}

std::string CountError(const spec::OpSpec& op, int32_t inputs, int32_t outputs) {
  if (inputs != op.num_inputs) return Format("%s: expected %d inputs, got %d", op.name, op.num_inputs, inputs);
  if (outputs != op.num_outputs) return Format("%s: expected %d outputs, got %d", op.name, op.num_outputs, outputs);
  return {};
}

std::string WithNode(const std::string& error, const std::string& node) {
  return node.empty() ? error : Format("%s (node '%s')", error.c_str(), node.c_str());
}

// Runs `body`; an exception (std::bad_alloc, a programming error) is logged and becomes `failed`.
template <class Body, class Result>
Result Guard(const char* where, Body&& body, Result failed) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    Log(Severity::kERROR, Format("bucketrt: %s failed: %s", where, e.what()));
  } catch (...) {
    Log(Severity::kERROR, Format("bucketrt: %s failed", where));
  }
  return failed;
}

template <class Int>
int64_t ReadInt(const void* data) {
  Int value;
  std::memcpy(&value, data, sizeof value);
  return static_cast<int64_t>(value);
}

template <class Float>
double ReadFloat(const void* data) {
  Float value;
  std::memcpy(&value, data, sizeof value);
  return static_cast<double>(value);
}

std::string ReadField(const spec::OpSpec& /*op*/, const nvinfer1::PluginField& field, RawAttribute* out) {
  using Type = nvinfer1::PluginFieldType;
  if (field.type == Type::kCHAR) {
    // With or without the terminating NUL in `length`: ONNX's parser and our own serialisation.
    const char* text = static_cast<const char*>(field.data);
    const size_t length = text != nullptr && field.length > 0 ? static_cast<size_t>(field.length) : 0;
    out->kind = RawAttribute::Kind::kString;
    out->string_value.assign(text != nullptr ? text : "", length > 0 ? strnlen(text, length) : 0);
    return {};
  }
  const bool is_int = field.type == Type::kINT8 || field.type == Type::kINT16 || field.type == Type::kINT32 ||
                      field.type == Type::kINT64;
  const bool is_float = field.type == Type::kFLOAT32 || field.type == Type::kFLOAT64;
  // Any other field type, or a list, is kept as such: ResolveAttributes reports it as of the wrong
  // type, in the reference's words (an attribute of ours is one int, one float or one string).
  if (!is_int && !is_float) {
    out->kind = RawAttribute::Kind::kOther;
    return {};
  }
  const int32_t length = field.data != nullptr ? std::max<int32_t>(field.length, 0) : 0;
  const size_t size = field.type == Type::kINT8    ? 1
                      : field.type == Type::kINT16 ? 2
                      : field.type == Type::kINT32 || field.type == Type::kFLOAT32 ? 4
                                                                                   : 8;
  const char* data = static_cast<const char*>(field.data);
  auto int_at = [&](int32_t i) {
    const void* at = data + static_cast<size_t>(i) * size;
    return field.type == Type::kINT8    ? ReadInt<int8_t>(at)
           : field.type == Type::kINT16 ? ReadInt<int16_t>(at)
           : field.type == Type::kINT32 ? ReadInt<int32_t>(at)
                                        : ReadInt<int64_t>(at);
  };
  auto float_at = [&](int32_t i) {
    const void* at = data + static_cast<size_t>(i) * size;
    return field.type == Type::kFLOAT32 ? ReadFloat<float>(at) : ReadFloat<double>(at);
  };
  if (length == 1 && is_int) {
    out->kind = RawAttribute::Kind::kInt;
    out->int_value = int_at(0);
  } else if (length == 1) {
    out->kind = RawAttribute::Kind::kFloat;
    out->float_value = float_at(0);
  } else if (is_int) {
    out->kind = RawAttribute::Kind::kInts;
    for (int32_t i = 0; i < length; ++i) out->int_values.push_back(int_at(i));
  } else {
    out->kind = RawAttribute::Kind::kFloats;
    for (int32_t i = 0; i < length; ++i) out->float_values.push_back(float_at(i));
  }
  return {};
}

}  // namespace

const char* PluginVersion() {
  // Never destroyed: TensorRT's registry may ask for it after this library's static destructors ran.
  static const std::string* version = new std::string(std::to_string(spec::kVersion));
  return version->c_str();
}

std::string ReadFields(const spec::OpSpec& op, const nvinfer1::PluginFieldCollection* fields,
                       std::vector<RawAttribute>* raw) {
  raw->assign(static_cast<size_t>(op.num_attributes), RawAttribute());
  std::vector<std::string> names;
  const int count = fields != nullptr && fields->fields != nullptr ? fields->nbFields : 0;
  for (int f = 0; f < count; ++f) {
    const nvinfer1::PluginField& field = fields->fields[f];
    if (field.name == nullptr) continue;
    int index = -1;
    for (int a = 0; a < op.num_attributes; ++a) {
      if (std::strcmp(op.attributes[a].name, field.name) == 0) index = a;
    }
    names.push_back(field.name);
    if (index >= 0) {
      std::string error = ReadField(op, field, &(*raw)[static_cast<size_t>(index)]);
      if (!error.empty()) return error;
    }
  }
  return CheckAttributeNames(op, names);
}

// ---- SpecPlugin --------------------------------------------------------------------------------

SpecPlugin::SpecPlugin(const spec::OpSpec& op, Attributes attrs, std::string node, size_t declared_workspace)
    : op_(&op), attrs_(std::move(attrs)), node_(std::move(node)), declared_workspace_(declared_workspace) {
  metadata_ = std::string(op.name) + "(";
  for (size_t i = 0; i < attrs_.values().size(); ++i) {
    const Attributes::Value& v = attrs_.values()[i];
    metadata_ += (i ? "," : "") + std::string(v.spec->name) + "=" +
                 (v.spec->type == spec::AttrType::kInt     ? std::to_string(v.int_value)
                  : v.spec->type == spec::AttrType::kFloat ? Format("%.17g", v.float_value)
                                                           : v.string_value);
  }
  metadata_ += ")";
}

nvinfer1::IPluginCapability* SpecPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* SpecPlugin::clone() noexcept {
  return Guard(
      "clone",
      [&]() -> nvinfer1::IPluginV3* {
        auto* copy = new SpecPlugin(*op_, attrs_, node_, declared_workspace_);
        copy->recorder_ = recorder_;
        return copy;
      },
      static_cast<nvinfer1::IPluginV3*>(nullptr));
}

const char* SpecPlugin::getPluginName() const noexcept { return op_->name; }
const char* SpecPlugin::getPluginVersion() const noexcept { return PluginVersion(); }
const char* SpecPlugin::getPluginNamespace() const noexcept { return spec::kPluginNamespace; }

int32_t SpecPlugin::getNbOutputs() const noexcept { return op_->num_outputs; }

int32_t SpecPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                       int32_t nbInputs) const noexcept {
  return Guard(
      "getOutputDataTypes",
      [&]() -> int32_t {
        std::string error = CountError(*op_, nbInputs, nbOutputs);
        spec::DType float_type = spec::DType::kFloat32;
        if (error.empty()) {
          const char* names[kMaxTensors];
          for (int i = 0; i < nbInputs; ++i) names[i] = DataTypeName(inputTypes[i]);
          error = CheckInputTypes(*op_, names, nbInputs, &float_type);
        }
        if (!error.empty()) {
          Report(ErrorCode::kINVALID_ARGUMENT, error);
          return -1;
        }
        for (int o = 0; o < nbOutputs; ++o) outputTypes[o] = ToTrt(spec::Concrete(op_->outputs[o].dtype, float_type));
        return 0;
      },
      -1);
}

int32_t SpecPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                    const nvinfer1::DimsExprs* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                    nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                    nvinfer1::IExprBuilder& exprBuilder) noexcept {
  return Guard(
      "getOutputShapes",
      [&]() -> int32_t {
        std::string error = CountError(*op_, nbInputs, nbOutputs);
        for (int i = 0; error.empty() && i < nbInputs; ++i) {
          const spec::TensorSpec& t = op_->inputs[i];
          if (inputs[i].nbDims != t.rank) {
            std::string dims;
            for (int a = 0; a < t.rank; ++a) dims += (a ? "," : "") + std::string(t.dims[a]);
            error = Format("%s: input '%s' must have rank %d [%s], got rank %d", op_->name, t.name, t.rank,
                           dims.c_str(), static_cast<int>(inputs[i].nbDims));
          }
        }
        for (int o = 0; error.empty() && o < nbOutputs; ++o) {
          const spec::TensorSpec& t = op_->outputs[o];
          outputs[o].nbDims = t.rank;
          for (int axis = 0; axis < t.rank; ++axis) {
            const DimSource source = OutputDimSource(*op_, t.dims[axis]);
            if (source.kind == DimSource::Kind::kAttribute) {
              outputs[o].d[axis] = exprBuilder.constant(attrs_.Int(op_->attributes[source.index].name));
            } else if (source.kind == DimSource::Kind::kInput) {
              outputs[o].d[axis] = inputs[source.index].d[source.axis];
            } else {  // excluded at compile time by the static_assert above
              error = Format("%s: output '%s' dim %d (%s) is neither an attribute nor an input's dim", op_->name,
                             t.name, axis, t.dims[axis]);
            }
          }
        }
        if (!error.empty()) {
          Report(ErrorCode::kINVALID_ARGUMENT, error);
          return -1;
        }
        return 0;
      },
      -1);
}

bool SpecPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                           int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != op_->num_inputs || nbOutputs != op_->num_outputs || pos < 0 || pos >= nbInputs + nbOutputs) {
    return false;
  }
  const nvinfer1::PluginTensorDesc& desc = inOut[pos].desc;
  if (desc.format != nvinfer1::TensorFormat::kLINEAR) return false;
  const spec::TensorSpec& t = TensorAt(*op_, pos);
  if (t.dtype != spec::DType::kFloat) return desc.type == ToTrt(t.dtype);
  // T: the first float tensor picks it among the op's float types; the others follow.
  for (int earlier = 0; earlier < pos; ++earlier) {
    if (TensorAt(*op_, earlier).dtype == spec::DType::kFloat) return desc.type == inOut[earlier].desc.type;
  }
  return IsFloatTypeOf(*op_, desc.type);
}

std::string SpecPlugin::PlanShapes(int count, const DataType* types, const nvinfer1::Dims* dims, Bindings* env,
                                   size_t* workspace_bytes) const {
  if (count < 0 || count > kMaxTensors) {
    return Format("%s: expected %d inputs, got %d", op_->name, op_->num_inputs, count);
  }
  TensorDesc descs[kMaxTensors];
  for (int i = 0; i < count; ++i) {
    descs[i].dtype = DataTypeName(types[i]);
    descs[i].rank = dims[i].nbDims;
    descs[i].dims = dims[i].d;
  }
  std::string error = BindInputs(*op_, attrs_, descs, count, env);
  if (error.empty()) error = cuda::Plan(*op_, attrs_, *env, workspace_bytes);
  return error;
}

std::string SpecPlugin::PlanShapes(int count, const nvinfer1::PluginTensorDesc* in, Bindings* env,
                                   size_t* workspace_bytes) const {
  DataType types[kMaxTensors];
  nvinfer1::Dims dims[kMaxTensors];
  // A count out of range is the other PlanShapes' error; only what fits is copied.
  for (int i = 0; i < std::min(count, kMaxTensors); ++i) {
    types[i] = in[i].type;
    dims[i] = in[i].dims;
  }
  std::string error = PlanShapes(count, types, dims, env, workspace_bytes);
  if (error.empty() && *workspace_bytes > declared_workspace_) {
    error = Format("%s: these shapes need %zu bytes of workspace, more than the %zu the engine's optimisation "
                   "profile declared (shapes outside the profile the engine was built for?)",
                   op_->name, *workspace_bytes, declared_workspace_);
  }
  return error;
}

std::string SpecPlugin::ProfileWorkspace(int count, const nvinfer1::DynamicPluginTensorDesc* in,
                                         size_t* workspace_bytes) const {
  *workspace_bytes = 0;
  if (count != op_->num_inputs) return Format("%s: expected %d inputs, got %d", op_->name, op_->num_inputs, count);
  DataType types[kMaxTensors];
  nvinfer1::Dims low_dims[kMaxTensors], high_dims[kMaxTensors];
  TensorDesc low[kMaxTensors], high[kMaxTensors];
  for (int i = 0; i < count; ++i) {
    types[i] = in[i].desc.type;
    low_dims[i] = in[i].min;
    high_dims[i] = in[i].max;
    low[i] = {DataTypeName(types[i]), low_dims[i].nbDims, low_dims[i].d};
    high[i] = {DataTypeName(types[i]), high_dims[i].nbDims, high_dims[i].d};
  }
  Bindings low_env, high_env;
  std::string error = BindInputs(*op_, attrs_, high, count, &high_env);
  // The smallest shapes only narrow the bound (LSHCumulation's D); unbound, every dim counts from 0.
  const bool low_bound = BindInputs(*op_, attrs_, low, count, &low_env).empty();
  if (error.empty()) error = cuda::WorkspaceBound(*op_, attrs_, low_bound ? &low_env : nullptr, high_env, workspace_bytes);
  if (!error.empty()) {
    return Format("%s; the optimisation profile's max shapes admit no workspace bound, so the engine cannot be built "
                  "(narrow the profile)", error.c_str());
  }
  return {};
}

int32_t SpecPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                    const nvinfer1::DynamicPluginTensorDesc* /*out*/, int32_t nbOutputs) noexcept {
  return Guard(
      "configurePlugin",
      [&]() -> int32_t {
        std::string error = CountError(*op_, nbInputs, nbOutputs);
        DataType types[kMaxTensors];
        if (error.empty()) {
          const char* names[kMaxTensors];
          for (int i = 0; i < nbInputs; ++i) names[i] = DataTypeName(types[i] = in[i].desc.type);
          spec::DType float_type;
          error = CheckInputTypes(*op_, names, nbInputs, &float_type);
        }
        if (!error.empty()) {
          Report(ErrorCode::kINVALID_ARGUMENT, error);
          return -1;
        }
        // The profile may admit shapes the op refuses (a minimum below what the op's own checks
        // allow, say): they fail in onShapeChange when they come, so a warning is enough here.
        {
          nvinfer1::Dims dims[kMaxTensors];
          for (int i = 0; i < nbInputs; ++i) dims[i] = in[i].min;
          Bindings env;
          size_t bytes = 0;
          error = PlanShapes(nbInputs, types, dims, &env, &bytes);
          if (!error.empty()) {
            Log(Severity::kWARNING, Format("%s; inputs of the optimisation profile's min shapes will be refused at run time",
                                           WithNode(error, node_).c_str()));
          }
        }
        // The workspace TensorRT allocates once for the whole profile: without a bound (the max
        // shapes refused, or planning them failed) no workspace is safe, so the build fails here.
        size_t bound = 0;
        error = ProfileWorkspace(nbInputs, in, &bound);
        if (!error.empty()) {
          Report(ErrorCode::kINVALID_ARGUMENT, error);
          return -1;
        }
        declared_workspace_ = std::max(declared_workspace_, bound);
        return 0;
      },
      -1);
}

size_t SpecPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                    const nvinfer1::DynamicPluginTensorDesc* /*outputs*/,
                                    int32_t nbOutputs) const noexcept {
  return Guard(
      "getWorkspaceSize",
      [&]() -> size_t {
        // TensorRT allocates this once for every shape of the profile: a bound over all of them
        // (cuda::WorkspaceBound), not the plan of a few. configurePlugin failed the build already
        // where there is none; the error is repeated here rather than a size that could be overrun.
        std::string error = CountError(*op_, nbInputs, nbOutputs);
        size_t bound = 0;
        if (error.empty()) error = ProfileWorkspace(nbInputs, inputs, &bound);
        if (!error.empty()) {
          Report(ErrorCode::kINVALID_ARGUMENT, error);
          return size_t{0};
        }
        declared_workspace_ = std::max(declared_workspace_, bound);
        return bound;
      },
      size_t{0});
}

const char* SpecPlugin::getTimingCacheID() noexcept { return metadata_.c_str(); }
const char* SpecPlugin::getMetadataString() noexcept { return metadata_.c_str(); }

int32_t SpecPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                                  const nvinfer1::PluginTensorDesc* /*out*/, int32_t nbOutputs) noexcept {
  return Guard(
      "onShapeChange",
      [&]() -> int32_t {
        std::string error = CountError(*op_, nbInputs, nbOutputs);
        if (error.empty()) {
          Bindings env;
          size_t bytes = 0;
          error = PlanShapes(nbInputs, in, &env, &bytes);
        }
        if (!error.empty()) {
          Report(ErrorCode::kINVALID_ARGUMENT, error);
          return -1;
        }
        return 0;
      },
      -1);
}

int32_t SpecPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* /*outputDesc*/,
                            const void* const* inputs, void* const* outputs, void* workspace,
                            cudaStream_t stream) noexcept {
  return Guard(
      "enqueue",
      [&]() -> int32_t {
        // Bound and planned again rather than cached from onShapeChange: a few comparisons, and
        // right whatever TensorRT called before.
        Bindings env;
        size_t bytes = 0;
        std::string error = PlanShapes(op_->num_inputs, inputDesc, &env, &bytes);
        if (!error.empty()) {
          Report(ErrorCode::kINVALID_ARGUMENT, error);
          return -1;
        }
        if (bytes > 0 && workspace == nullptr) {
          Report(ErrorCode::kFAILED_EXECUTION,
                 Format("%s: TensorRT gave no workspace, %zu bytes needed", op_->name, bytes));
          return -1;
        }
        // What TensorRT allocated (the declared size), so that the launchers' own guard holds.
        error = cuda::Launch(*op_, attrs_, env, inputs, outputs, workspace, declared_workspace_, stream);
        if (!error.empty()) {
          Report(ErrorCode::kFAILED_EXECUTION, error);
          return -1;
        }
        return 0;
      },
      -1);
}

nvinfer1::IPluginV3* SpecPlugin::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept {
  return Guard(
      "attachToContext",
      [&]() -> nvinfer1::IPluginV3* {
        auto* attached = new SpecPlugin(*op_, attrs_, node_, declared_workspace_);
        attached->recorder_ = context != nullptr ? context->getErrorRecorder() : nullptr;
        return attached;
      },
      static_cast<nvinfer1::IPluginV3*>(nullptr));
}

const nvinfer1::PluginFieldCollection* SpecPlugin::getFieldsToSerialize() noexcept {
  return Guard(
      "getFieldsToSerialize",
      [&]() -> const nvinfer1::PluginFieldCollection* {
        const std::vector<Attributes::Value>& values = attrs_.values();
        field_ints_.assign(values.size() + 1, 0);  // sized first: the fields point into them
        field_floats_.assign(values.size(), 0.0);
        fields_.clear();
        for (size_t i = 0; i < values.size(); ++i) {
          const Attributes::Value& v = values[i];
          if (v.spec->type == spec::AttrType::kInt) {
            field_ints_[i] = v.int_value;
            fields_.emplace_back(v.spec->name, &field_ints_[i], nvinfer1::PluginFieldType::kINT64, 1);
          } else if (v.spec->type == spec::AttrType::kFloat) {
            // kFLOAT64: the value as resolved, to the bit (createPlugin reads either width).
            field_floats_[i] = v.float_value;
            fields_.emplace_back(v.spec->name, &field_floats_[i], nvinfer1::PluginFieldType::kFLOAT64, 1);
          } else {
            fields_.emplace_back(v.spec->name, v.string_value.c_str(), nvinfer1::PluginFieldType::kCHAR,
                                 static_cast<int32_t>(v.string_value.size() + 1));
          }
        }
        field_ints_.back() = static_cast<int64_t>(declared_workspace_);
        fields_.emplace_back(kDeclaredWorkspaceField, &field_ints_.back(), nvinfer1::PluginFieldType::kINT64, 1);
        field_collection_.nbFields = static_cast<int32_t>(fields_.size());
        field_collection_.fields = fields_.data();
        return &field_collection_;
      },
      static_cast<const nvinfer1::PluginFieldCollection*>(nullptr));
}

void SpecPlugin::Report(ErrorCode code, const std::string& error) const noexcept {
  try {
    const std::string text = WithNode(error, node_);
    if (recorder_ != nullptr) {
      recorder_->reportError(code, text.c_str());
    } else {
      Log(Severity::kERROR, text);
    }
  } catch (...) {
  }
}

// ---- SpecPluginCreator -------------------------------------------------------------------------

SpecPluginCreator::SpecPluginCreator(const spec::OpSpec& op) : op_(&op) {
  for (int a = 0; a < op.num_attributes; ++a) {
    const spec::AttrSpec& attr = op.attributes[a];
    // What the ONNX parser converts a node's attribute to: an INT to kINT32, a FLOAT (a float32 in
    // ONNX) to kFLOAT32, a STRING to kCHAR.
    field_names_.emplace_back(attr.name, nullptr,
                              attr.type == spec::AttrType::kInt     ? nvinfer1::PluginFieldType::kINT32
                              : attr.type == spec::AttrType::kFloat ? nvinfer1::PluginFieldType::kFLOAT32
                                                                    : nvinfer1::PluginFieldType::kCHAR,
                              1);
  }
  field_collection_.nbFields = static_cast<int32_t>(field_names_.size());
  field_collection_.fields = field_names_.data();
}

nvinfer1::IPluginV3* SpecPluginCreator::createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                                     nvinfer1::TensorRTPhase /*phase*/) noexcept {
  return Guard(
      "createPlugin",
      [&]() -> nvinfer1::IPluginV3* {
        const std::string node = name != nullptr ? name : "";
        // The declared workspace (a serialised plugin) is no attribute: taken out before the rest.
        std::vector<nvinfer1::PluginField> attribute_fields;
        size_t declared_workspace = 0;
        std::string error;
        const int count = fc != nullptr && fc->fields != nullptr ? fc->nbFields : 0;
        for (int f = 0; f < count; ++f) {
          const nvinfer1::PluginField& field = fc->fields[f];
          if (field.name == nullptr || std::strcmp(field.name, kDeclaredWorkspaceField) != 0) {
            attribute_fields.push_back(field);
          } else if (field.type != nvinfer1::PluginFieldType::kINT64 || field.length != 1 || field.data == nullptr ||
                     ReadInt<int64_t>(field.data) < 0) {
            error = Format("%s: field '%s' must be one non-negative kINT64", op_->name, kDeclaredWorkspaceField);
          } else {
            declared_workspace = static_cast<size_t>(ReadInt<int64_t>(field.data));
          }
        }
        nvinfer1::PluginFieldCollection attributes{static_cast<int32_t>(attribute_fields.size()),
                                                   attribute_fields.data()};
        std::vector<RawAttribute> raw;
        Attributes attrs;
        if (error.empty()) error = ReadFields(*op_, &attributes, &raw);
        if (error.empty()) error = ResolveAttributes(*op_, raw, &attrs);
        if (error.empty()) error = cuda::CheckAttributes(*op_, attrs);
        if (!error.empty()) {
          Log(Severity::kERROR, WithNode(error, node));
          return nullptr;
        }
        return new SpecPlugin(*op_, std::move(attrs), node, declared_workspace);
      },
      static_cast<nvinfer1::IPluginV3*>(nullptr));
}

const nvinfer1::PluginFieldCollection* SpecPluginCreator::getFieldNames() noexcept { return &field_collection_; }
const char* SpecPluginCreator::getPluginName() const noexcept { return op_->name; }
const char* SpecPluginCreator::getPluginVersion() const noexcept { return PluginVersion(); }
const char* SpecPluginCreator::getPluginNamespace() const noexcept { return spec::kPluginNamespace; }

}  // namespace bucketrt::trt
