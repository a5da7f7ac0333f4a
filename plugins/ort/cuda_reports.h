// The host side of the CUDA kernels' data reports for one compute stream (ort/cuda_kernels.cc):
// slots of pinned host memory, each with an event recorded after the copies into it, read once the
// event has passed, never waited for on the default path. Header-only over a `Device` (the CUDA
// runtime calls it makes: CudaReportDevice below) and the binding type a report is read with, so
// that a CPU test drives the logic with a fake device (tests/cuda_reports_check.cc).
//
// Device provides: Event; static cudaError_t CreateEvent(Event*), DestroyEvent(Event),
// Query(Event) (cudaSuccess, cudaErrorNotReady or an error), Synchronize(Event),
// AllocHost(void**, size_t), FreeHost(void*).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

namespace bucketrt::ort {

template <class Device, class Env>
class ReportQueue {
 public:
  struct Slot {
    void* host = nullptr;
    size_t bytes = 0;
    typename Device::Event landed{};
    bool pending = false;
    uint64_t run = 0;  // submission order: the earliest run's error is reported first
    Env env{};
  };
  // A landed report's data error ("" if none): cuda::ReportError with the op and its attributes.
  using Reader = std::function<std::string(const Env& env, const void* report)>;
  // "" or the text of a failed CUDA call.
  using ErrorText = std::function<std::string(const char* what, cudaError_t status)>;

  ReportQueue(size_t max_pending, ErrorText error_text) : max_pending_(max_pending), error_text_(std::move(error_text)) {}
  ~ReportQueue() {
    for (Slot& s : slots_) {
      if (s.host != nullptr) Device::FreeHost(s.host);
      Device::DestroyEvent(s.landed);
    }
  }
  ReportQueue(const ReportQueue&) = delete;
  ReportQueue& operator=(const ReportQueue&) = delete;

  // Reads every pending report whose event has passed (a query, never a wait); returns the data
  // error of the earliest such run ("" if none). A report still on the device stays pending.
  std::string Collect(const Reader& read) {
    std::string error;
    uint64_t error_run = 0;
    for (Slot& s : slots_) {
      if (!s.pending) continue;
      const cudaError_t status = Device::Query(s.landed);
      if (status == cudaErrorNotReady) continue;
      s.pending = false;
      std::string found = status == cudaSuccess ? read(s.env, s.host) : error_text_("an earlier run's kernels", status);
      if (!found.empty() && (error.empty() || s.run < error_run)) {
        error = std::move(found);
        error_run = s.run;
      }
    }
    return error;
  }

  // A slot of at least `bytes` whose report has been read (the smallest such), else a read one
  // regrown, else a new one. When max_pending reports are in flight, first waits for the oldest
  // (a bound on how far the host runs ahead; its error, if any, is returned).
  std::string Take(size_t bytes, const Reader& read, Slot** slot) {
    size_t pending = 0;
    for (const Slot& s : slots_) pending += s.pending ? 1 : 0;
    if (pending >= max_pending_) {
      Slot* oldest = nullptr;
      for (Slot& s : slots_) {
        if (s.pending && (oldest == nullptr || s.run < oldest->run)) oldest = &s;
      }
      std::string error = Wait(*oldest, read);
      if (!error.empty()) return error;
    }
    Slot* best = nullptr;
    for (Slot& s : slots_) {
      if (!s.pending && s.bytes >= bytes && (best == nullptr || s.bytes < best->bytes)) best = &s;
    }
    if (best == nullptr) {
      for (Slot& s : slots_) {
        if (!s.pending) {  // too small: regrow a read one rather than keep both
          Device::FreeHost(s.host);
          s.host = nullptr;
          s.bytes = 0;
          best = &s;
          break;
        }
      }
      if (best == nullptr) {
        Slot fresh;
        std::string error = error_text_("creating an event", Device::CreateEvent(&fresh.landed));
        if (!error.empty()) return error;
        slots_.push_back(fresh);
        best = &slots_.back();
      }
      std::string error = error_text_("allocating the data check's host memory", Device::AllocHost(&best->host, bytes));
      if (!error.empty()) {
        best->host = nullptr;
        return error;
      }
      best->bytes = bytes;
    }
    *slot = best;
    return {};
  }

  // After the report's copies and the slot's event were enqueued: pending until read.
  void Submit(Slot& slot, const Env& env) {
    slot.env = env;
    slot.run = ++runs_;
    slot.pending = true;
  }

  // Waits for one pending report and reads it (the opt-in synchronous checks; the run-ahead bound).
  std::string Wait(Slot& slot, const Reader& read) {
    slot.pending = false;
    const std::string error = error_text_("waiting for the data check", Device::Synchronize(slot.landed));
    return error.empty() ? read(slot.env, slot.host) : error;
  }

  size_t slots() const { return slots_.size(); }

 private:
  size_t max_pending_;
  ErrorText error_text_;
  std::deque<Slot> slots_;  // a deque: slots keep their address as more are added
  uint64_t runs_ = 0;
};

// The CUDA runtime as ReportQueue's Device: pinned, mapped host memory (copies and kernels write
// it), events without timing.
struct CudaReportDevice {
  using Event = cudaEvent_t;
  static cudaError_t CreateEvent(Event* e) { return cudaEventCreateWithFlags(e, cudaEventDisableTiming); }
  static cudaError_t DestroyEvent(Event e) { return e != nullptr ? cudaEventDestroy(e) : cudaSuccess; }
  static cudaError_t Query(Event e) { return cudaEventQuery(e); }
  static cudaError_t Synchronize(Event e) { return cudaEventSynchronize(e); }
  static cudaError_t AllocHost(void** p, size_t bytes) { return cudaHostAlloc(p, bytes, cudaHostAllocMapped); }
  // May wait for the device (the CUDA runtime's choice): called on a slot's regrowth and at teardown.
  static cudaError_t FreeHost(void* p) { return p != nullptr ? cudaFreeHost(p) : cudaSuccess; }
};

}  // namespace bucketrt::ort
