// What the TensorRT test drivers (tests/trt_plugin_check.cc, trt_workspace_check.cc,
// trt_loading_check.cc) share: one line per check with a failure count, and a logger with its
// finder that keeps what the plugin library says (warnings and worse) for the checks to read.
#pragma once

#include <NvInferRuntime.h>

#include <cstdio>
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

}  // namespace trt_check
