// Host memory for the CPU backend: 64-byte aligned blocks owned by shared_ptr (so a Tensor's
// `owner` frees them).
#pragma once

#include <cstddef>
#include <memory>

namespace engram {

inline constexpr size_t kCpuAlignment = 64;

// `bytes` (rounded up to the alignment; at least one line) of uninitialized or zeroed memory;
// null when the allocation fails.
std::shared_ptr<void> AllocAligned(size_t bytes, bool zero);

}  // namespace engram
