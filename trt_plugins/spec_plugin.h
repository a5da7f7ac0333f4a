// The TensorRT plugin of a bucketrt op: one generic IPluginV3 over the spec (bucketrt/op_specs.h)
// and the CUDA op table (cuda/ops.h), as ort/cuda_kernels.h is for ONNX Runtime's CUDA EP. Every op
// the table has a kernel for gets a creator (library.cc); nothing here names an op.
//
//   creator.createPlugin(fields)  -> spec attributes: ResolveAttributes + cuda::CheckAttributes
//   getOutputDataTypes            -> int32, or T (the first float input's type) for float outputs
//   getOutputShapes               -> each output dim: an int attribute (constant) or an input's dim
//   supportsFormatCombination     -> linear; int32 where the spec says so; float tensors one type in
//                                    the op's float_types (kFLOAT / kHALF)
//   configurePlugin               -> types checked; the profile's min shapes planned (a failure is a
//                                    warning: such shapes fail at run time); the workspace bound over
//                                    the whole profile (cuda::WorkspaceBound: a failure fails the build)
//   getWorkspaceSize              -> that bound, which the plugin keeps as its declared workspace
//   onShapeChange                 -> BindInputs + cuda::Plan on the real shapes; refused when the
//                                    shapes need more workspace than declared (errors are errors)
//   enqueue                       -> the same, then cuda::Launch on TensorRT's stream with TensorRT's
//                                    workspace of the declared size; no allocation, no synchronisation
//   getFieldsToSerialize          -> the resolved attributes (ints as kINT64, strings as kCHAR) and the
//                                    declared workspace (kDeclaredWorkspaceField, kINT64)
//
// Errors are the shared checks' words with the node's name, returned as non-zero and reported
// through the execution context's error recorder (attachToContext) or else TensorRT's logger;
// nothing throws across TensorRT's interface.
//
// Data errors the CUDA op table can check (cuda::EnqueueReport / ReportError: LSHCumulation's
// out-of-range codes) are not checked here: enqueue has no later call of the node to read a report
// at, and must not wait (CUDA graph capture, TensorRT's own overlap). The kernels clamp such codes,
// so nothing reads out of bounds.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"

namespace bucketrt::trt {

class SpecPlugin final : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime {
 public:
  // `attrs` resolved and checked (SpecPluginCreator::createPlugin); `node` names it in messages.
  SpecPlugin(const spec::OpSpec& op, Attributes attrs, std::string node, size_t declared_workspace = 0);

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, const nvinfer1::DataType* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;
  const char* getTimingCacheID() noexcept override;
  const char* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

 private:
  // Binds `count` inputs of the given types and dims (BindInputs) and plans them (cuda::Plan).
  std::string PlanShapes(int count, const nvinfer1::DataType* types, const nvinfer1::Dims* dims, Bindings* env,
                         size_t* workspace_bytes) const;
  // The same for runtime tensor descriptions (onShapeChange, enqueue), refused when the shapes need
  // more workspace than the plugin declared (what TensorRT allocated).
  std::string PlanShapes(int count, const nvinfer1::PluginTensorDesc* in, Bindings* env, size_t* workspace_bytes) const;
  // The workspace every shape of the profile `in` describes fits (cuda::WorkspaceBound over its
  // min and max shapes), or the error.
  std::string ProfileWorkspace(int count, const nvinfer1::DynamicPluginTensorDesc* in, size_t* workspace_bytes) const;
  // Reports `error` (shared checks' words) with the node's name: the error recorder when attached,
  // TensorRT's logger otherwise.
  void Report(nvinfer1::ErrorCode code, const std::string& error) const noexcept;

  const spec::OpSpec* op_;
  Attributes attrs_;
  std::string node_;
  std::string metadata_;  // "Op(attr=value,...)": timing cache ID and metadata string
  nvinfer1::IErrorRecorder* recorder_ = nullptr;
  // The workspace TensorRT allocates for this plugin: the largest bound getWorkspaceSize gave
  // (mutable: that method is const), serialised with the attributes and read back at run time.
  mutable size_t declared_workspace_ = 0;
  // getFieldsToSerialize's storage, valid until the next call.
  std::vector<int64_t> field_ints_;
  std::vector<double> field_floats_;
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection field_collection_{};
};

// The creator of one op's plugins: name = the op's name, version = the spec's version ("1"),
// namespace = spec::kPluginNamespace ("bucketrt"), as TensorRT's ONNX parser looks them up from
// the node's op type and its plugin_version / plugin_namespace attributes.
class SpecPluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  explicit SpecPluginCreator(const spec::OpSpec& op);

  // Fields: the op's attributes (ints as kINT32, kINT64, kINT16 or kINT8; strings as kCHAR, NUL
  // or length terminated); the two routing attributes are ignored, any other field is an error.
  // Returns nullptr (logged) when they fail the spec's checks.
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  // The op's attributes, ints as kINT32 and strings as kCHAR: what TensorRT's ONNX parser converts
  // a node's attributes to.
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  const spec::OpSpec& op() const { return *op_; }

 private:
  const spec::OpSpec* op_;
  std::vector<nvinfer1::PluginField> field_names_;
  nvinfer1::PluginFieldCollection field_collection_{};
};

// The serialised field carrying a plugin's declared workspace in bytes (kINT64): not an attribute,
// never in getFieldNames (TensorRT's ONNX parser does not pass it), read back by createPlugin.
inline constexpr const char* kDeclaredWorkspaceField = "bucketrt_workspace_bytes";

// The plugins' version string: spec::kVersion in decimal ("1").
const char* PluginVersion();

// The attributes given as TensorRT plugin fields, in spec order (kMissing where absent), or the
// error: an unknown field (the routing attributes excepted), a field of no readable type.
std::string ReadFields(const spec::OpSpec& op, const nvinfer1::PluginFieldCollection* fields,
                       std::vector<RawAttribute>* raw);

}  // namespace bucketrt::trt
