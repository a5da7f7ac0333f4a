// What the TensorRT test drivers (tests/trt_plugin_check.cc, trt_workspace_check.cc,
// trt_loading_check.cc) share: one line per check with a failure count, a logger with its finder
// that keeps what the plugin library says (warnings and worse) for the checks to read, and plugin
// field collections.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>
#include <deque>
#include <initializer_list>
#include <string>
#include <vector>

namespace trt_check {

inline int g_failures = 0;

inline void Check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  std::fflush(stdout);  // a driver that crashes later still shows how far it got
  if (!ok) ++g_failures;
}

struct Logger : nvinfer1::ILogger {
  std::vector<std::string> messages;
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) messages.emplace_back(msg);
  }
  std::string Last() const { return messages.empty() ? "" : messages.back(); }
};

struct Finder : nvinfer1::ILoggerFinder {
  explicit Finder(nvinfer1::ILogger* logger) : logger_(logger) {}
  nvinfer1::ILogger* findLogger() override { return logger_; }
  nvinfer1::ILogger* logger_;
};

// Plugin fields built the way a test needs them; ParserStr is a STRING attribute as TensorRT's ONNX
// parser converts it (kCHAR, the NUL counted).
struct Fields {
  std::deque<int32_t> ints;
  std::deque<int64_t> longs;
  std::deque<float> floats;
  std::deque<std::string> strings;
  std::vector<nvinfer1::PluginField> fields;
  nvinfer1::PluginFieldCollection collection{};
  Fields& Int(const char* name, int32_t v) {
    fields.emplace_back(name, &ints.emplace_back(v), nvinfer1::PluginFieldType::kINT32, 1);
    return *this;
  }
  Fields& Long(const char* name, int64_t v) {
    fields.emplace_back(name, &longs.emplace_back(v), nvinfer1::PluginFieldType::kINT64, 1);
    return *this;
  }
  Fields& Float(const char* name, float v) {
    fields.emplace_back(name, &floats.emplace_back(v), nvinfer1::PluginFieldType::kFLOAT32, 1);
    return *this;
  }
  // A list of ints (an ONNX INTS attribute as the parser hands it over).
  Fields& Ints(const char* name, std::initializer_list<int32_t> values) {
    int32_t* first = nullptr;
    for (int32_t v : values) {
      int32_t* at = &ints.emplace_back(v);
      if (first == nullptr) first = at;
    }
    fields.emplace_back(name, first, nvinfer1::PluginFieldType::kINT32, static_cast<int32_t>(values.size()));
    return *this;
  }
  Fields& Str(const char* name, const char* v) {
    const std::string& s = strings.emplace_back(v);
    fields.emplace_back(name, s.data(), nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(s.size()));
    return *this;
  }
  // A string as TensorRT's ONNX parser converts a STRING attribute: kCHAR, the NUL counted.
  Fields& ParserStr(const char* name, const char* v) {
    const std::string& s = strings.emplace_back(v);
    fields.emplace_back(name, s.c_str(), nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(s.size() + 1));
    return *this;
  }
  const nvinfer1::PluginFieldCollection* Get() {
    collection.nbFields = static_cast<int32_t>(fields.size());
    collection.fields = fields.data();
    return &collection;
  }
};

}  // namespace trt_check
