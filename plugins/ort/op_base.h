// The ONNX Runtime side of every op, generic over the op's spec:
//   * SpecCustomOp: the one Ort::CustomOpBase of the library, for every op, execution provider and
//     float type T; its name, input/output counts and element types come from the op's spec (the
//     generated op_specs.h). It reads and checks the attributes when ORT creates the kernel (so
//     attribute errors surface at session creation), then a KernelFactory makes the backend's
//     NodeKernel;
//   * NodeKernel: the one kernel base (CPU: CpuNodeKernel<Kernel> here; CUDA: ort/cuda_kernels.h).
//     CpuNodeKernel checks all inputs against the spec on every run before the kernel reads data.
// Errors travel back to ORT as OrtStatus (ORT_INVALID_ARGUMENT for bad models/inputs); no
// exception crosses the C boundary.
//
// A CPU kernel class (ort/kernels.h, named <Op>Kernel for the op table) provides:
//   static const spec::OpSpec& Spec();
//   explicit Kernel(const Attributes&);   // may throw Ort::Exception (InvalidArgument)
//   void Compute(CpuRun&, const OrtInputs&, const Attributes&, const Bindings&);     // may throw
// Compute gets the node's resolved attributes (the constructor's) along with the bindings, so that
// a kernel reads its shape with the op's cpu::<Op>ShapeOf, as the CUDA op table does, rather than
// keeping attribute copies of its own.
//
// ORT sees one SpecCustomOp per (op, execution provider, float type T): a custom op has fixed
// element types, so an op whose spec allows float32 and float16 is registered twice per provider,
// and ORT picks the registration whose types match the node. Bindings::float_type() tells Compute
// which.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/parallel.h"
#include "bucketrt/validate.h"
#include "bucketrt/workers.h"

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
  static constexpr int kMax = spec::kMaxInputs;  // the catalogue's widest op
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

// Reads every attribute the spec declares, and resolves/checks them like schema.py.
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

// The CPUs this process may use (bucketrt/workers.h's CpuLimit over this process's hardware
// threads, affinity mask and cgroup quota). Read once per load of the library.
int64_t MachineWorkers();

// What a CPU kernel's Compute gets besides its inputs: ORT's context (outputs, scratch) and the
// node's worker count, with ORT's intra-op pool as the parallel-for.
class CpuRun {
 public:
  CpuRun(Ort::KernelContext& context, WorkerCount& workers) : ctx(context), workers_(workers) {}
  ~CpuRun();  // tells the node's WorkerCount what this run saw
  CpuRun(const CpuRun&) = delete;
  CpuRun& operator=(const CpuRun&) = delete;
  Ort::KernelContext& ctx;
  // Upper bound on the tasks to offer the parallel-for (scratch slots to provide).
  int64_t max_workers() const { return workers_.next(); }
  ParallelFor parallel() { return {&Run, this}; }

 private:
  static void Run(void* self, void (*fn)(void*, size_t), size_t total, void* data);
  WorkerCount& workers_;
  size_t offered_ = 0;      // the most tasks one parallel-for of this run offered
  size_t ran_at_once_ = 0;  // the most that ran at once
};

// Session-wide settings read when the library is registered (session config entries).
struct RegistrationOptions {
  // "bucketrt.deterministic" = "1": every node with a 'deterministic' attribute runs as if it were 1.
  bool force_deterministic = false;
  // "bucketrt.cuda_sync_checks" = "1": the CUDA kernels wait for their data checks and fail the
  // same run (ort/cuda_kernels.h); by default a run's data error fails the node's next run.
  bool cuda_sync_checks = false;
  // "bucketrt.no_huge_pages" = "1": the CPU kernels leave their constant expert weights in the
  // runtime's pages (BackWeightsWithHugePages not called).
  bool no_huge_pages = false;
};

// One node's kernel as ORT holds it. Every backend's kernel derives from it, so that one CustomOp
// class (SpecCustomOp) serves every (op, execution provider, T).
class NodeKernel {
 public:
  virtual ~NodeKernel() = default;
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    return Guard([&] {
      Ort::KernelContext ctx(context);
      Compute(ctx);
    });
  }

 protected:
  virtual void Compute(Ort::KernelContext& ctx) = 0;
};

// Backs the node's constant expert weights (the spec's `weights` inputs that the session holds as
// initializers) with huge pages (cpu/huge_pages.h): for the CPU kernels, when ORT makes them.
// Never fails: where it cannot, the weights stay where they are.
void BackWeightsWithHugePages(const spec::OpSpec& op, spec::DType float_type, const OrtKernelInfo* info) noexcept;

// Makes a node's kernel from its resolved attributes (may throw Ort::Exception: InvalidArgument).
using KernelFactory = std::unique_ptr<NodeKernel> (*)(const spec::OpSpec& op, Attributes attrs,
                                                     const RegistrationOptions& options);

// A CPU kernel class (kernels.h) as a NodeKernel: checks every input against the spec before the
// kernel reads any data.
template <class Kernel>
class CpuNodeKernel final : public NodeKernel {
 public:
  CpuNodeKernel(const spec::OpSpec& op, Attributes attrs)
      : op_(op), attrs_(std::move(attrs)), kernel_(attrs_), workers_(MachineWorkers()) {}

 protected:
  void Compute(Ort::KernelContext& ctx) override {
    OrtInputs inputs;
    Bindings env;
    BindOrtInputs(op_, attrs_, ctx, &inputs, &env);
    CpuRun run(ctx, workers_);
    kernel_.Compute(run, inputs, attrs_, env);
  }

 private:
  const spec::OpSpec& op_;
  Attributes attrs_;
  Kernel kernel_;
  WorkerCount workers_;
};

template <class Kernel>
std::unique_ptr<NodeKernel> CreateCpuKernel(const spec::OpSpec& op, Attributes attrs, const RegistrationOptions&) {
  return std::make_unique<CpuNodeKernel<Kernel>>(op, std::move(attrs));
}

inline constexpr const char* kCpuProvider = "CPUExecutionProvider";
inline constexpr const char* kCudaProvider = "CUDAExecutionProvider";

// One registration of an op for one execution provider with T = float_type (kFloat32 or
// kFloat16): name, input/output counts and element types from the op's spec; at kernel creation
// the attributes are read and checked (so attribute errors surface at session creation), then
// `create` makes the backend's kernel.
struct SpecCustomOp : Ort::CustomOpBase<SpecCustomOp, NodeKernel, /*WithStatus=*/true> {
  SpecCustomOp(const spec::OpSpec& op, const char* provider, spec::DType float_type,
               const RegistrationOptions& options, KernelFactory create)
      : op_(op), provider_(provider), float_type_(float_type), options_(options), create_(create) {
    this->start_ver_ = spec::kVersion;
  }

  const char* GetName() const { return op_.name; }
  const char* GetExecutionProviderType() const { return provider_; }

  size_t GetInputTypeCount() const { return static_cast<size_t>(op_.num_inputs); }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return ToOrt(spec::Concrete(op_.inputs[index].dtype, float_type_));
  }
  size_t GetOutputTypeCount() const { return static_cast<size_t>(op_.num_outputs); }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return ToOrt(spec::Concrete(op_.outputs[index].dtype, float_type_));
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const noexcept {
    return Guard([&] {
      Attributes attrs = ReadAttributes(op_, info);
      if (options_.force_deterministic) attrs.SetIntIfDeclared("deterministic", 1);
      std::unique_ptr<NodeKernel> made = create_(op_, std::move(attrs), options_);
      if (std::string_view(provider_) == kCpuProvider && !options_.no_huge_pages) {
        BackWeightsWithHugePages(op_, float_type_, info);
      }
      // ORT hands the pointer back as NodeKernel* (CustomOpBase's KernelComputeV2 and KernelDestroy).
      *kernel = static_cast<NodeKernel*>(made.release());
    });
  }

  const spec::OpSpec& op() const { return op_; }
  const char* provider() const { return provider_; }

 private:
  const spec::OpSpec& op_;
  const char* provider_;
  spec::DType float_type_;
  RegistrationOptions options_;
  KernelFactory create_;
};

}  // namespace bucketrt::ort
