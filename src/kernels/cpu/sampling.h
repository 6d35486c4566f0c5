// Sampling kernels of the CPU backend: greedy argmax per row (Backend::ArgmaxRows).
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace engram {

// ids[r] = index of the largest of x[r * v, (r + 1) * v), ties to the lowest index; -1 for a
// row holding a NaN or whose largest value is not finite (engram::GreedyToken; see
// Backend::ArgmaxRows). v >= 1. Long rows are split into segments over the pool's threads.
void ArgmaxRowsF32(ThreadPool& pool, const float* x, int64_t rows, int64_t v, int32_t* ids);

}  // namespace engram
