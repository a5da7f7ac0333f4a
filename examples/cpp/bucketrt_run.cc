// bucketrt_run: runs a bucketrt export with ONNX Runtime's C++ API and bucketrt's op library, from
// a C++ program with no Python in it.
//
//   bucketrt_run MODEL LIBRARY IDS [IDS ...]
//
// MODEL is an export folder (its model.onnx) or one .onnx file of an export (e.g. a Switch export's
// encoder.onnx); LIBRARY is the op library's path (`bucketrt ops --library` prints it), which ONNX
// Runtime loads, or `linked`: the copy this program links through the C/C++ package
// (find_package(bucketrt), bucketrt::ort_ops), registered by calling its entry point; each IDS is
// one batch row of token ids, comma-separated ("101,7592,102"), all rows of one length. The model's
// inputs are read from the session: input_ids gets the ids, attention_mask ones, token_type_ids
// zeros, position_ids 0..n-1; any other input is refused. Each output is printed as a line
// "output NAME TYPE [d0,d1,...]" followed by a line of its values (%.9g: float32 round-trips).
// Errors are one "bucketrt_run: error: ..." line on stderr and exit status 1 (2 for bad usage).

#include <bucketrt/bucketrt_ort.h>
#include <onnxruntime_cxx_api.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace {

// A mistake of the caller's (arguments, files, a model this example cannot feed): reported as is.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char kUsage[] =
    "usage: bucketrt_run MODEL LIBRARY IDS [IDS ...]\n"
    "  MODEL    an export folder (its model.onnx) or one of its .onnx files\n"
    "  LIBRARY  bucketrt's ONNX Runtime op library (`bucketrt ops --library`), or `linked`: the one\n"
    "           this program links (bucketrt " BUCKETRT_VERSION ")\n"
    "  IDS      one batch row of token ids, comma-separated, e.g. 101,7592,102\n";

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ModelPath(const std::string& arg) {
  if (IsDirectory(arg)) {
    std::string path = arg + "/model.onnx";
    if (!IsFile(path))
      throw UsageError("no model.onnx in " + arg + " (an export of several components: pass one of its .onnx files)");
    return path;
  }
  if (!IsFile(arg)) throw UsageError("model '" + arg + "' is not a file or an export folder");
  return arg;
}

// One batch row: "101,7592,102".
std::vector<int64_t> ParseRow(const std::string& text, size_t row) {
  std::vector<int64_t> ids;
  size_t start = 0;
  while (true) {
    size_t end = text.find(',', start);
    std::string item = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    char* stop = nullptr;
    errno = 0;
    long long value = std::strtoll(item.c_str(), &stop, 10);
    if (item.empty() || *stop != '\0' || errno == ERANGE)
      throw UsageError("row " + std::to_string(row + 1) + ": '" + item + "' is not an integer token id");
    if (value < 0) throw UsageError("row " + std::to_string(row + 1) + ": token id " + item + " is negative");
    ids.push_back(value);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return ids;
}

const char* TypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    default: return nullptr;
  }
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

void PrintValues(const Ort::Value& value, ONNXTensorElementDataType type, size_t count) {
  std::string line;
  char buffer[32];
  for (size_t i = 0; i < count; ++i) {
    switch (type) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
        std::snprintf(buffer, sizeof buffer, "%.9g", value.GetTensorData<float>()[i]);
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
        std::snprintf(buffer, sizeof buffer, "%.9g", value.GetTensorData<Ort::Float16_t>()[i].ToFloat());
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
        std::snprintf(buffer, sizeof buffer, "%.17g", value.GetTensorData<double>()[i]);
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
        std::snprintf(buffer, sizeof buffer, "%lld", static_cast<long long>(value.GetTensorData<int64_t>()[i]));
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
        std::snprintf(buffer, sizeof buffer, "%d", value.GetTensorData<int32_t>()[i]);
        break;
      default:  // bool (TypeName refused every other type before the run)
        std::snprintf(buffer, sizeof buffer, "%d", value.GetTensorData<bool>()[i] ? 1 : 0);
    }
    line += (i ? " " : "") + std::string(buffer);
  }
  std::printf("%s\n", line.c_str());
}

int Run(int argc, char** argv) {
  const std::string model = ModelPath(argv[1]);
  const std::string library = argv[2];
  const bool linked = library == "linked";
  if (!linked && !IsFile(library)) throw UsageError("op library '" + library + "' is not a file (`bucketrt ops --library`)");
  std::vector<std::vector<int64_t>> rows;
  for (int i = 3; i < argc; ++i) {
    rows.push_back(ParseRow(argv[i], rows.size()));
    if (rows.back().size() != rows.front().size())
      throw UsageError("row " + std::to_string(rows.size()) + " has " + std::to_string(rows.back().size()) +
                       " token ids, row 1 has " + std::to_string(rows.front().size()) + ": rows must be of one length");
  }
  const int64_t batch = static_cast<int64_t>(rows.size());
  const int64_t length = static_cast<int64_t>(rows.front().size());

  // Errors come back as exceptions, printed once by main(); ONNX Runtime's log would repeat them.
  Ort::Env env(ORT_LOGGING_LEVEL_FATAL, "bucketrt_run");
  Ort::SessionOptions options;
  // The op library registers bucketrt's kernels on these options (domain "bucketrt").
  if (linked) {
    Ort::ThrowOnError(RegisterCustomOps(options, OrtGetApiBase()));
  } else {
    options.RegisterCustomOpsLibrary(library.c_str());
  }
  Ort::Session session(env, model.c_str(), options);
  Ort::AllocatorWithDefaultOptions allocator;
  Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);

  // The inputs as the model declares them: names, element types, fixed or symbolic dimensions.
  std::vector<Ort::AllocatedStringPtr> input_names_owned;
  std::vector<const char*> input_names;
  std::vector<std::vector<int64_t>> input_data;
  std::vector<Ort::Value> inputs;
  const std::vector<int64_t> shape = {batch, length};
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    input_names_owned.push_back(session.GetInputNameAllocated(i, allocator));
    const std::string name = input_names_owned.back().get();
    input_names.push_back(input_names_owned.back().get());
    Ort::TypeInfo info = session.GetInputTypeInfo(i);
    auto tensor = info.GetTensorTypeAndShapeInfo();
    if (tensor.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
      throw UsageError("input " + name + " is not int64 token data; this example feeds token ids only");
    const std::vector<int64_t> declared = tensor.GetShape();
    if (declared.size() != 2) throw UsageError("input " + name + " has rank " + std::to_string(declared.size()) + ", not [batch, sequence]");
    for (size_t d = 0; d < 2; ++d)
      if (declared[d] > 0 && declared[d] != shape[d])
        throw UsageError("input " + name + " takes " + ShapeText(declared) + ", the ids given are " + ShapeText(shape));
    std::vector<int64_t> data;
    data.reserve(static_cast<size_t>(batch * length));
    for (const auto& row : rows)
      for (int64_t t = 0; t < length; ++t) {
        if (name == "input_ids") data.push_back(row[t]);
        else if (name == "attention_mask") data.push_back(1);
        else if (name == "token_type_ids") data.push_back(0);
        else if (name == "position_ids") data.push_back(t);
        else throw UsageError("input " + name + ": this example feeds input_ids, attention_mask, token_type_ids and position_ids only");
      }
    std::printf("input %s int64 %s\n", name.c_str(), ShapeText(shape).c_str());
    input_data.push_back(std::move(data));
    inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, input_data.back().data(), input_data.back().size(),
                                                       shape.data(), shape.size()));
  }

  std::vector<Ort::AllocatedStringPtr> output_names_owned;
  std::vector<const char*> output_names;
  for (size_t i = 0; i < session.GetOutputCount(); ++i) {
    output_names_owned.push_back(session.GetOutputNameAllocated(i, allocator));
    output_names.push_back(output_names_owned.back().get());
  }

  std::vector<Ort::Value> outputs = session.Run(Ort::RunOptions{nullptr}, input_names.data(), inputs.data(),
                                                inputs.size(), output_names.data(), output_names.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    auto tensor = outputs[i].GetTensorTypeAndShapeInfo();
    const char* type = TypeName(tensor.GetElementType());
    if (type == nullptr) throw UsageError(std::string("output ") + output_names[i] + " has an element type this example does not print");
    std::printf("output %s %s %s\n", output_names[i], type, ShapeText(tensor.GetShape()).c_str());
    PrintValues(outputs[i], tensor.GetElementType(), tensor.GetElementCount());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  try {
    return Run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "bucketrt_run: error: %s\n", e.what());
  } catch (const Ort::Exception& e) {
    // ONNX Runtime's own message: a model it cannot load, a library it cannot register, a kernel's
    // refusal of its inputs (e.g. a token id beyond the vocabulary).
    std::fprintf(stderr, "bucketrt_run: error: onnxruntime: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bucketrt_run: error: %s\n", e.what());
  }
  return 1;
}
