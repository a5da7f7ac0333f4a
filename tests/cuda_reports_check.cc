// Drives plugins/ort/cuda_reports.h (the CUDA EP kernel's data reports per stream) with a fake
// device whose events land when the test says so: reports are read once landed and never waited
// for, the earliest run's error comes first, a report in flight stays pending, slots are reused
// and regrown, and only the run-ahead bound and the opt-in Wait wait. Built and run by
// tests/test_cuda_build.py (g++ against the CUDA headers only: nothing here links the CUDA runtime).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ort/cuda_reports.h"

namespace {

int g_failures = 0;
void Check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

// Events are indices into `landed`; AllocHost/FreeHost count.
struct FakeDevice {
  using Event = int;
  static inline std::vector<bool> landed;
  static inline int waits = 0, allocs = 0, frees = 0, live = 0;
  static cudaError_t CreateEvent(Event* e) {
    landed.push_back(false);
    *e = static_cast<int>(landed.size()) - 1;
    return cudaSuccess;
  }
  static cudaError_t DestroyEvent(Event) { return cudaSuccess; }
  static cudaError_t Query(Event e) { return landed[e] ? cudaSuccess : cudaErrorNotReady; }
  static cudaError_t Synchronize(Event e) {
    ++waits;
    landed[e] = true;
    return cudaSuccess;
  }
  static cudaError_t AllocHost(void** p, size_t bytes) {
    ++allocs;
    ++live;
    *p = std::calloc(bytes, 1);
    return cudaSuccess;
  }
  static cudaError_t FreeHost(void* p) {
    if (p != nullptr) {
      ++frees;
      --live;
    }
    std::free(p);
    return cudaSuccess;
  }
};

using Queue = bucketrt::ort::ReportQueue<FakeDevice, int>;

// A report is a NUL-terminated text the "device" writes: empty for no error.
std::string Read(const int& env, const void* report) {
  const char* text = static_cast<const char*>(report);
  return *text ? "run " + std::to_string(env) + ": " + text : std::string();
}

// What the kernel does after a launch: take a slot, "enqueue" the report, submit; the event lands later.
Queue::Slot* Run(Queue& q, int env, const char* error, size_t bytes = 64) {
  Queue::Slot* slot = nullptr;
  const std::string taken = q.Take(bytes, Read, &slot);
  if (!taken.empty() || slot == nullptr) return nullptr;
  std::memset(slot->host, 0, slot->bytes);
  std::strncpy(static_cast<char*>(slot->host), error, slot->bytes - 1);
  FakeDevice::landed[slot->landed] = false;  // recorded again: in flight
  q.Submit(*slot, env);
  return slot;
}

}  // namespace

int main() {
  {
    Queue q(4, [](const char*, cudaError_t s) { return s == cudaSuccess ? std::string() : "cuda error"; });
    Check(q.Collect(Read).empty() && q.slots() == 0, "an empty queue reports nothing");

    Queue::Slot* first = Run(q, 1, "code 8 out of range");
    Check(first != nullptr && FakeDevice::allocs == 1, "the first report takes a new pinned slot");
    Check(q.Collect(Read).empty() && first->pending, "a report still in flight is not read, and stays pending");
    FakeDevice::landed[first->landed] = true;
    const std::string landed = q.Collect(Read);
    Check(landed == "run 1: code 8 out of range", "a landed report's error surfaces at the next collect: " + landed);
    Check(q.Collect(Read).empty(), "each report is read once");

    Queue::Slot* again = Run(q, 2, "");
    Check(again == first && FakeDevice::allocs == 1, "a read slot is reused: no allocation at steady state");
    FakeDevice::landed[again->landed] = true;
    Check(q.Collect(Read).empty(), "a clean report gives no error");

    // Two runs in flight (the host ahead of the device): the second gets a slot of its own.
    Queue::Slot* a = Run(q, 3, "first bad");
    Queue::Slot* b = Run(q, 4, "second bad");
    Check(a != b && q.slots() == 2 && FakeDevice::allocs == 2, "runs in flight hold a slot each");
    FakeDevice::landed[b->landed] = true;
    Check(q.Collect(Read) == "run 4: second bad" && a->pending, "only landed reports are read");
    FakeDevice::landed[a->landed] = true;
    Check(q.Collect(Read) == "run 3: first bad", "the other one at a later collect");
    Queue::Slot* c = Run(q, 5, "early");
    Queue::Slot* d = Run(q, 6, "late");
    FakeDevice::landed[c->landed] = FakeDevice::landed[d->landed] = true;
    Check(q.Collect(Read) == "run 5: early" && !c->pending && !d->pending,
          "of several landed errors the earliest run's is reported, and all are read");

    // A larger report regrows a read slot rather than adding one.
    const int frees = FakeDevice::frees;
    Queue::Slot* big = Run(q, 7, "", 4096);
    Check(big != nullptr && big->bytes == 4096 && q.slots() == 2 && FakeDevice::frees == frees + 1,
          "a report larger than every read slot regrows one");
    FakeDevice::landed[big->landed] = true;
    q.Collect(Read);
    Check(FakeDevice::waits == 0, "no wait so far: collect and take only query");

    // The run-ahead bound: with 4 in flight, taking a fifth waits for the oldest, reporting its error.
    Run(q, 8, "oldest bad");
    Run(q, 9, "");
    Run(q, 10, "");
    Run(q, 11, "");
    Queue::Slot* slot = nullptr;
    const std::string bound = q.Take(64, Read, &slot);
    Check(FakeDevice::waits == 1 && bound == "run 8: oldest bad",
          "at 4 reports in flight the next take waits for the oldest and reports it: " + bound);

    // The opt-in synchronous check.
    Queue::Slot* sync = Run(q, 12, "same run");
    Check(sync != nullptr && q.Wait(*sync, Read) == "run 12: same run" && !sync->pending,
          "Wait reads the run's own report");
  }
  Check(FakeDevice::live == 0, "every pinned slot is freed with the queue");
  std::printf("%d failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
