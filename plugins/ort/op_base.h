// The ONNX Runtime side of every op, generic over the op's spec:
//   * SpecOp<Kernel>: an Ort::CustomOpBase whose name, input/output counts and element types
//     come from Kernel::Spec() (the generated op_specs.h);
//   * KernelAdapter<Kernel>: reads and checks the attributes when ORT creates the kernel (so
//     attribute errors surface at session creation), and on every run checks all inputs against
//     the spec before the kernel reads any data.
// Errors travel back to ORT as OrtStatus (ORT_INVALID_ARGUMENT for bad models/inputs); no
// exception crosses the C boundary.
//
// A Kernel provides:
//   static const spec::OpSpec& Spec();
//   explicit Kernel(const Attributes&);   // may throw Ort::Exception (InvalidArgument)
//   void Compute(Ort::KernelContext&, const OrtInputs&, const Attributes&,
//                const Bindings&);     // may throw
// Compute gets the node's resolved attributes (the constructor's) along with the bindings, so that
// a kernel reads its shape with the op's cpu::<Op>ShapeOf, as the CUDA op table does, rather than
// keeping attribute copies of its own.
//
// ORT sees one SpecOp per (op, execution provider, float type T): a custom op has fixed element
// types, so an op whose spec allows float32 and float16 is registered twice per provider, and ORT
// picks the registration whose types match the node. Bindings::float_type() tells Compute which.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/parallel.h"
#include "bucketrt/validate.h"

namespace bucketrt::ort {

inline Ort::Exception InvalidArgument(std::string message) {
  return Ort::Exception(std::move(message), ORT_INVALID_ARGUMENT);
}

// Runs fn, turning any exception into an OrtStatus (nullptr = success).
template <class Fn>
OrtStatusPtr Guard(Fn&& fn) noexcept {
  try {
    fn();
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::bad_alloc&) {
    return Ort::Status("bucketrt: out of memory", ORT_FAIL).release();
  } catch (const std::exception& e) {
    return Ort::Status(e.what(), ORT_FAIL).release();
  } catch (...) {
    return Ort::Status("bucketrt: unknown error", ORT_FAIL).release();
  }
}

// The ORT element type of a concrete dtype (kFloat must have been resolved with spec::Concrete).
ONNXTensorElementDataType ToOrt(spec::DType dtype);

// float16 <-> float32 (round to nearest even), for kernels that compute in float32.
void WidenHalf(const Ort::Float16_t* src, float* dst, size_t count);
void NarrowToHalf(const float* src, Ort::Float16_t* dst, size_t count);

// The inputs of one run, with their element types and shapes for the spec checks.
struct OrtInputs {
  static constexpr int kMax = 8;
  int count = 0;
  Ort::ConstValue values[kMax];
  std::vector<int64_t> shapes[kMax];
  TensorDesc descs[kMax];

  template <class T>
  const T* Data(int index) const {
    return values[index].GetTensorData<T>();
  }
};

// Reads the inputs and checks them against the spec (count, dtype, rank, symbolic dims).
void BindOrtInputs(const spec::OpSpec& op, const Attributes& attrs, Ort::KernelContext& ctx, OrtInputs* inputs,
                   Bindings* env);

// Reads every attribute the spec declares, and resolves/checks them like spec.py.
Attributes ReadAttributes(const spec::OpSpec& op, const OrtKernelInfo* info);

// Allocates output `index` with the shape its spec dims take under `env`; *elements (optional)
// receives its element count.
template <class T>
T* AllocateOutput(const spec::OpSpec& op, Ort::KernelContext& ctx, int index, const Bindings& env,
                  size_t* elements = nullptr) {
  const spec::TensorSpec& t = op.outputs[index];
  int64_t dims[4];
  int64_t count = 1;
  for (int a = 0; a < t.rank; ++a) {
    dims[a] = env[t.dims[a]];
    if (dims[a] < 0) throw Ort::Exception(Format("%s: output '%s' dim %s is unbound", op.name, t.name, t.dims[a]), ORT_FAIL);
    // An attribute-sized dim (BucketSum's num_buckets) may make the product overflow: an error, not a wrap.
    if (!CheckedMul(count, dims[a], &count) || !CheckedMul(count, static_cast<int64_t>(sizeof(T)), nullptr)) {
      throw InvalidArgument(SizeOverflowError(op.name, (std::string("output '") + t.name + "'").c_str()));
    }
  }
  if (elements) *elements = static_cast<size_t>(count);
  return ctx.GetOutput(index, dims, static_cast<size_t>(t.rank)).GetTensorMutableData<T>();
}

// Scratch memory from the session's CPU allocator (ORT's arena by default, so that repeated runs
// reuse the same block instead of going to the heap). Freed on destruction.
class Scratch {
 public:
  Scratch(Ort::KernelContext& ctx, size_t floats, const char* op);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() const { return data_; }

 private:
  OrtAllocator* allocator_ = nullptr;
  float* data_ = nullptr;
};

// ORT's intra-op thread pool as the kernels' parallel-for.
ParallelFor OrtParallelFor(Ort::KernelContext& ctx);

// Upper bound on the threads ORT may run a ParallelFor on (scratch slots to provide).
int64_t MaxWorkers();

// Session-wide settings read when the library is registered (session config entries).
struct RegistrationOptions {
  // "bucketrt.deterministic" = "1": every node with a 'deterministic' attribute runs as if it were 1.
  bool force_deterministic = false;
};

template <class Kernel>
class KernelAdapter {
 public:
  explicit KernelAdapter(Attributes attrs) : attrs_(std::move(attrs)), kernel_(attrs_) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    return Guard([&] {
      Ort::KernelContext ctx(context);
      OrtInputs inputs;
      Bindings env;
      BindOrtInputs(Kernel::Spec(), attrs_, ctx, &inputs, &env);
      kernel_.Compute(ctx, inputs, attrs_, env);
    });
  }

 private:
  Attributes attrs_;
  Kernel kernel_;
};

inline constexpr const char* kCpuProvider = "CPUExecutionProvider";
inline constexpr const char* kCudaProvider = "CUDAExecutionProvider";

template <class Kernel>
struct SpecOp : Ort::CustomOpBase<SpecOp<Kernel>, KernelAdapter<Kernel>, /*WithStatus=*/true> {
  // One registration of Kernel's op for `provider` with T = float_type (kFloat32 or kFloat16).
  SpecOp(const char* provider, spec::DType float_type, const RegistrationOptions& options)
      : provider_(provider), float_type_(float_type), options_(options) {
    this->start_ver_ = spec::kVersion;
  }

  const char* GetName() const { return Kernel::Spec().name; }
  const char* GetExecutionProviderType() const { return provider_; }

  size_t GetInputTypeCount() const { return static_cast<size_t>(Kernel::Spec().num_inputs); }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return ToOrt(spec::Concrete(Kernel::Spec().inputs[index].dtype, float_type_));
  }
  size_t GetOutputTypeCount() const { return static_cast<size_t>(Kernel::Spec().num_outputs); }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return ToOrt(spec::Concrete(Kernel::Spec().outputs[index].dtype, float_type_));
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const noexcept {
    return Guard([&] {
      Attributes attrs = ReadAttributes(Kernel::Spec(), info);
      if (options_.force_deterministic) attrs.SetIntIfDeclared("deterministic", 1);
      auto adapter = std::make_unique<KernelAdapter<Kernel>>(std::move(attrs));
      *kernel = adapter.release();
    });
  }

 private:
  const char* provider_;
  spec::DType float_type_;
  RegistrationOptions options_;
};

}  // namespace bucketrt::ort
