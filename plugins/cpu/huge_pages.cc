#include "cpu/huge_pages.h"

#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace bucketrt::cpu {

#ifdef __linux__
// glibc's headers name it from 2.37; the value is the kernel's ABI.
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

void BackWithHugePages(const void* data, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t start = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (start + kHuge - 1) & ~(kHuge - 1);  // only whole huge pages of the tensor
  const uintptr_t last = (start + bytes) & ~(kHuge - 1);
  // One huge page at a time: a failed page (no free 2 MiB to move it to) leaves the others to try.
  for (uintptr_t page = first; page + kHuge <= last; page += kHuge) {
    madvise(reinterpret_cast<void*>(page), kHuge, MADV_COLLAPSE);
  }
}
#else
void BackWithHugePages(const void*, size_t) {}
#endif

}  // namespace bucketrt::cpu
