#include "kernels/cpu/cpu_memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

namespace engram {
namespace {

// Blocks of at least this size are 2 MiB aligned and advised to use transparent huge pages:
// weight streaming and large activations then miss the TLB far less often.
constexpr size_t kHugePage = size_t{2} << 20;

}  // namespace

std::shared_ptr<void> AllocAligned(size_t bytes, bool zero) {
  const size_t align = bytes >= kHugePage ? kHugePage : kCpuAlignment;
  size_t size = (bytes + align - 1) / align * align;
  if (size == 0) size = kCpuAlignment;
  void* p = std::aligned_alloc(align, size);
  if (p == nullptr) return nullptr;
#ifdef MADV_HUGEPAGE
  if (align == kHugePage) madvise(p, size, MADV_HUGEPAGE);  // advice only; failure is harmless
#endif
  if (zero) std::memset(p, 0, size);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

Tensor OwningCpuTensor(std::shared_ptr<void> mem, DType dtype, Layout layout,
                       std::vector<int64_t> shape) {
  Tensor t;
  t.owner = std::move(mem);
  t.data = t.owner.get();
  t.dtype = dtype;
  t.device = Device::kCpu;
  t.layout = layout;
  t.shape = std::move(shape);
  return t;
}

}  // namespace engram
