// What the plugins share with the library's entry points (library.cc): the creators of this build
// and logging through TensorRT's logger.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace bucketrt::trt {

// One creator per op the CUDA op table has a kernel for (cuda::HasKernel), in catalogue order.
// They live for the whole process: TensorRT's registry may hold them until after static
// destruction.
const std::vector<nvinfer1::IPluginCreatorInterface*>& Creators();

// Logs through TensorRT's logger: the one the logger finder (setLoggerFinder) gives for the calling
// thread, else TensorRT's global logger (getLogger) when TensorRT is loaded, else stderr (errors
// and warnings only). Never throws.
void Log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept;

}  // namespace bucketrt::trt
