// Drives plugins/include/bucketrt/workers.h (compiled and run by tests/test_library_hygiene.py):
//   workers_check quota ROOT        prints CgroupCpuQuota(ROOT)
//   workers_check observe LIMIT O:R [O:R ...]
//                                   prints WorkerCount(LIMIT).next() after each Observe(O, R)
//   workers_check limit H A Q       prints CpuLimit(H, A, Q)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bucketrt/workers.h"

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "quota") == 0) {
    std::printf("%lld\n", static_cast<long long>(bucketrt::CgroupCpuQuota(argv[2])));
    return 0;
  }
  if (argc >= 5 && std::strcmp(argv[1], "limit") == 0) {
    std::printf("%lld\n", static_cast<long long>(bucketrt::CpuLimit(std::atoll(argv[2]), std::atoll(argv[3]),
                                                                     std::atoll(argv[4]))));
    return 0;
  }
  if (argc >= 3 && std::strcmp(argv[1], "observe") == 0) {
    bucketrt::WorkerCount count(std::atoll(argv[2]));
    std::printf("%lld", static_cast<long long>(count.next()));
    for (int i = 3; i < argc; ++i) {
      unsigned long offered = 0, ran = 0;
      if (std::sscanf(argv[i], "%lu:%lu", &offered, &ran) != 2) return 2;
      count.Observe(offered, ran);
      std::printf(" %lld", static_cast<long long>(count.next()));
    }
    std::printf("\n");
    return 0;
  }
  std::fprintf(stderr, "usage: workers_check quota ROOT | limit H A Q | observe LIMIT O:R...\n");
  return 2;
}
