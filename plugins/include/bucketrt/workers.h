// How many workers a CPU kernel's run offers its parallel-for (scratch slots, tasks), header-only
// and runtime-free so that tests/workers_check.cc drives it directly.
//
//   * CpuLimit: the CPUs the process may use: the hardware threads, the affinity mask (taskset,
//     cpusets) and a cgroup CPU quota (a container's --cpus), whichever is smallest.
//   * WorkerCount: ORT does not tell a custom op its session's intra_op_num_threads, so a node
//     learns it from ORT's own pool: each run reports how many of its tasks the pool ran at once.
//     Where fewer ran than were offered, the pool is the limit and the next run offers one more
//     than ran (so that the count can grow back); otherwise it keeps what it offered, or grows to
//     one more than ran. Always within the CPU limit.
// Results never depend on the count: every kernel's work split is fixed by the shapes (and the CPU
// limit), the workers only pull it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace bucketrt {

// A cgroup CPU quota as a whole number of CPUs (rounded up); 0 when none applies. `root` prefixes
// every path read ("" in production; a test's fake tree otherwise). cgroup v2: cpu.max ("max
// 100000" or "200000 100000") in the process's own cgroup (the "0::" line of
// root/proc/self/cgroup) and every ancestor; v1: cpu.cfs_quota_us / cpu.cfs_period_us (-1: none).
inline int64_t CgroupCpuQuota(const std::string& root) {
  int64_t best = 0;
  auto keep = [&best](int64_t quota, int64_t period) {
    if (quota <= 0 || period <= 0) return;
    const int64_t cpus = (quota + period - 1) / period;
    if (best == 0 || cpus < best) best = cpus;
  };
  std::string path;
  {
    std::ifstream self(root + "/proc/self/cgroup");
    std::string line;
    while (std::getline(self, line)) {
      if (line.rfind("0::", 0) == 0) path = line.substr(3);
    }
  }
  if (!path.empty()) {
    while (!path.empty() && path.back() == '/') path.pop_back();
    for (std::string dir = path;;) {
      std::ifstream max(root + "/sys/fs/cgroup" + dir + "/cpu.max");
      std::string quota;
      int64_t period = 0;
      if (max >> quota >> period && quota != "max") keep(std::atoll(quota.c_str()), period);
      if (dir.empty()) break;
      dir = dir.substr(0, dir.find_last_of('/'));
    }
  }
  for (const char* v1 : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
    std::ifstream quota_file(root + v1 + "/cpu.cfs_quota_us"), period_file(root + v1 + "/cpu.cfs_period_us");
    int64_t quota = 0, period = 0;
    if (quota_file >> quota && period_file >> period) keep(quota, period);
  }
  return best;
}

// The smallest of the positive bounds given (0: no bound), at least 1.
inline int64_t CpuLimit(int64_t hardware_threads, int64_t affinity_cpus, int64_t quota_cpus) {
  int64_t limit = 0;
  for (int64_t bound : {hardware_threads, affinity_cpus, quota_cpus}) {
    if (bound > 0 && (limit == 0 || bound < limit)) limit = bound;
  }
  return std::max<int64_t>(1, limit);
}

class WorkerCount {
 public:
  explicit WorkerCount(int64_t limit) : limit_(std::max<int64_t>(1, limit)), next_(limit_) {}
  // The workers the next run offers.
  int64_t next() const { return next_.load(std::memory_order_relaxed); }
  // A run's widest parallel-for: `offered` tasks, of which `ran_at_once` were running together at
  // some moment. Concurrent runs of one node may interleave here; any of their counts is valid.
  void Observe(size_t offered, size_t ran_at_once) {
    if (offered == 0) return;
    const int64_t grown = std::clamp<int64_t>(static_cast<int64_t>(ran_at_once) + 1, 1, limit_);
    if (ran_at_once < offered || grown > next()) next_.store(grown, std::memory_order_relaxed);
  }

 private:
  const int64_t limit_;
  std::atomic<int64_t> next_;
};

}  // namespace bucketrt
