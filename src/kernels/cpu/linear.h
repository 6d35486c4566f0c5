// Linear (GEMM/GEMV) kernels of the CPU backend: out[M, N] = x[M, K] · Wᵀ (+ bias[N]), F32
// accumulation. One register-blocked micro-kernel family serves both decode (M = 1..few:
// each weight panel streamed once, BF16 widened in registers) and prefill (M >= 64: panel
// blocks reused from L1 across row tiles). Tiles: scalar and AVX2 6 rows x 16 columns,
// AVX-512 12 rows x 32 columns. Work is split over (row chunk, panel group) units.
//
// Packed layout (Layout::kBackendPacked) of a weight [N, K]: ceil(N / 16) panels, panel p
// holding rows 16p .. 16p + 15 as [K][16] (rows past N are zero):
//   F32:  element (k, j) at panel[k * 16 + j];
//   BF16: at k, 32-bit word i (i < 8) holds column i in its low half and column i + 8 in its
//         high half, so one shift and one mask turn 16 BF16 values into two F32 vectors.
// F16 weights are packed as F32 (exact).
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/tensor.h"

namespace engram {

inline constexpr int kLinearPanelWidth = 16;

// Bytes of the packed form of an [n, k] weight of the given source dtype.
size_t PackedLinearBytes(DType src_dtype, int64_t n, int64_t k);

// Repacks a row-major host weight [N, K] (F32, F16 or BF16) into the packed layout above.
// The result owns its memory (64-byte aligned), keeps the logical shape [N, K] and has
// layout kBackendPacked, dtype F32 or BF16.
Result<Tensor> PackLinearWeight(const Tensor& host, ThreadPool& pool);

// out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]). w is [N, K]: row-major F32/F16/BF16, or
// packed by PackLinearWeight. x, out row-major with leading dimensions K and N; bias may be
// null. Shapes are the caller's to check; out must not overlap x.
void LinearForward(CpuIsa isa, ThreadPool& pool, const float* x, int64_t m, const Tensor& w,
                   const float* bias, float* out);

}  // namespace engram
