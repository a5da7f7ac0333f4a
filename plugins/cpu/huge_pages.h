// Huge pages for the weights the expert kernels stream.
//
// Why: a decoding step reads every picked expert's weights once, hundreds of MB a step at the
// benchmark's sizes, at the memory's speed. In 4 KiB pages that stream crosses a page every 64
// cache lines, where the hardware prefetchers stop and the TLB misses; in 2 MiB pages the same
// read runs faster (docs/benchmarks.md, TopKExperts, has the figures). ONNX Runtime allocates initializers with malloc,
// and Linux backs such memory with huge pages only where asked (transparent huge pages set to
// "madvise", the usual default), which by then it is not: the tensors are already written.
#pragma once

#include <cstddef>

namespace bucketrt::cpu {

// Asks Linux to back the whole 2 MiB pages inside [data, data + bytes) with huge pages, now
// (MADV_COLLAPSE, Linux 6.1): the contents and addresses stay as they are, so it is safe on
// memory another owner (the runtime) allocated. A performance hint only: where it cannot be done
// (an older kernel, huge pages turned off, no free 2 MiB of memory, a file mapping) the memory is
// left as it was (and elsewhere than Linux, always).
void BackWithHugePages(const void* data, size_t bytes);

}  // namespace bucketrt::cpu
