// GatherRowLoop: the CPU backend's row gathers (elementwise.cc for F32/F16/BF16 rows,
// fp8_gather.cc for packed FP8 rows) share this loop: rows split over the pool in chunks of
// ~16k output values, each row's cache lines prefetched a few rows ahead of its decode.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace engram {

// For i < count: decode(base + index[i] * row_bytes, out + i * d), d values a row.
template <typename Index, typename Decode>
void GatherRowLoop(ThreadPool& pool, const uint8_t* base, size_t row_bytes, const Index* index,
                   int64_t count, int64_t d, float* out, Decode decode) {
  constexpr int64_t kGrainValues = 16384;
  constexpr int64_t kAhead = 4;  // rows prefetched ahead of the decode
  const int64_t grain = std::max<int64_t>(1, kGrainValues / std::max<int64_t>(d, 1));
  ParallelRange(pool, count, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      if (i + kAhead < end) {
        const uint8_t* ahead = base + static_cast<size_t>(index[i + kAhead]) * row_bytes;
        for (size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(ahead + off, 0, 0);
        __builtin_prefetch(ahead + row_bytes - 1, 0, 0);  // a row may straddle one more line
      }
      decode(base + static_cast<size_t>(index[i]) * row_bytes, out + i * d);
    }
  });
}

}  // namespace engram
