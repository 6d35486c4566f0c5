// Micro-kernels of the Linear driver (internal to src/kernels/cpu; see linear.h for the
// packed layout). A micro-kernel computes one register tile: rows [0, mr) of x against `np`
// consecutive 16-column panels over one k-block.
#pragma once

#include <cstdint>

namespace engram::linear_internal {

inline constexpr int kPanel = 16;  // columns per panel
inline constexpr int kMaxMr = 12;  // most rows any ISA's tile has
inline constexpr int kMaxNp = 2;   // most panels any ISA's tile spans

struct MicroArgs {
  int64_t kc;         // k-block length
  const float* a;     // x at (first row, k0)
  int64_t lda;        // x row stride
  const void* b;      // first panel at k0 (F32 or BF16 per the panel layout)
  int64_t b_stride;   // elements from one panel to the next
  float* c;           // out at (first row, first column)
  int64_t ldc;        // out row stride
  int nc;             // valid columns, 1 .. 16 * np
  bool accumulate;    // add to c (later k-blocks) instead of overwriting it
  const float* bias;  // at the tile's first column (first k-block only), or null
};
using MicroFn = void (*)(const MicroArgs&);

// An ISA's micro-kernels: fn[np][mr] for 1 <= np <= max_np, 1 <= mr <= max_mr.
struct MicroKernels {
  int max_mr = 0;
  int max_np = 0;
  int64_t kc_block = 0;  // k-block for M > max_mr
  MicroFn fn[kMaxNp + 1][kMaxMr + 1] = {};
};

MicroKernels ScalarMicroKernels(bool bf16);
MicroKernels Avx2MicroKernels(bool bf16);
MicroKernels Avx512MicroKernels(bool bf16);

// Writes finished tile row values acc[0, nc): c = acc (+ c when accumulating, else + bias).
inline void StoreTileRow(const float* acc, const MicroArgs& p, int nc, const float* bias,
                         float* crow) {
  if (p.accumulate) {
    for (int j = 0; j < nc; ++j) crow[j] += acc[j];
  } else if (bias != nullptr) {
    for (int j = 0; j < nc; ++j) crow[j] = acc[j] + bias[j];
  } else {
    for (int j = 0; j < nc; ++j) crow[j] = acc[j];
  }
}

}  // namespace engram::linear_internal
