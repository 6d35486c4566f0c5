// Host memory for the CPU backend: 64-byte aligned blocks owned by shared_ptr (so a Tensor's
// `owner` frees them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/tensor.h"

namespace engram {

inline constexpr size_t kCpuAlignment = 64;

// `bytes` (rounded up to the alignment; at least one line) of uninitialized or zeroed memory;
// null when the allocation fails.
std::shared_ptr<void> AllocAligned(size_t bytes, bool zero);

// A CPU tensor owning `mem` (from AllocAligned): a prepared weight of the given dtype, layout
// and logical shape.
Tensor OwningCpuTensor(std::shared_ptr<void> mem, DType dtype, Layout layout,
                       std::vector<int64_t> shape);

}  // namespace engram
