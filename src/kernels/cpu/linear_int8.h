// Int8 Linear of the CPU backend (BackendOptions::weights = "int8"): symmetric int8 weights in
// blocks of 32 input values with one F32 scale per block per output row, activations quantized
// on the fly per token per 32-block (symmetric int8, scale = amax / 127, round to nearest
// even), int32 dot products per block, scaled by (weight scale x activation scale) and
// accumulated in F32:
//   out[m, n] = sum_b ws[n, b] * xs[m, b] * sum_{k in b} qw[n, k] * qx[m, k]  (+ bias[n]).
// K need not be a multiple of 32: the last block is partial (zero padded in both operands,
// which adds nothing). N need not be a multiple of 16 (missing rows are zero).
//
// Layout (Layout::kInt8Block32, dtype U8, logical shape [N, K]): ceil(N / 16) panels of
// Kb = ceil(K / 32) blocks of kInt8BlockBytes bytes, panel p block b at (p * Kb + b) *
// kInt8BlockBytes:
//   bytes [0, 512): qw + 128 as u8 (offset binary, so AVX-512 VNNI's vpdpbusd takes the
//     weights as its unsigned operand); group g < 8 of 4 inputs k = 32b + 4g + i at
//     64 g + 4 j + i for column j = n - 16 p (one zmm per group: 16 columns x 4 inputs);
//   bytes [512, 576): the 16 columns' F32 scales.
// 1.125 bytes per weight. VNNI computes sum (qw + 128) qx and subtracts 128 * sum qx (per
// token and block, computed when quantizing); AVX2 flips the bytes back to signed and uses
// vpsignb/vpmaddubsw/vpmaddwd (no saturation: |products| <= 127 * 127 * 2).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/tensor.h"

namespace engram {

inline constexpr int kInt8Block = 32;
inline constexpr int kInt8PanelWidth = 16;
inline constexpr int64_t kInt8BlockBytes = 512 + 64;

// The int8 kernel families; the driver picks one from the backend's CpuIsa.
enum class Int8Kernel : unsigned char { kScalar, kAvx2, kAvx512Vnni };

// Whether this CPU executes AVX-512F/BW and AVX-512 VNNI.
bool CpuHasAvx512Vnni();
// The family a backend at `isa` runs: VNNI at kAvx512 when the CPU has it, AVX2 at kAvx2 (or
// kAvx512 without VNNI), else scalar.
Int8Kernel Int8KernelFor(CpuIsa isa);
std::string_view Int8KernelName(Int8Kernel k);

size_t Int8LinearBytes(int64_t n, int64_t k);

// Quantizes a row-major host weight [N, K] (F32, F16 or BF16) into the layout above (threads
// over panels). The result owns its memory and has layout kInt8Block32, dtype U8, shape [N, K].
Result<Tensor> QuantizeLinearWeightInt8(const Tensor& host, ThreadPool& pool);
// The same layout from weights already quantized that way (a model's quantization_config
// "engram_int8": I8 codes with F32 scale_inv, blocks [1, 32]), stacked along N; the codes and
// scales are copied, not recomputed. INVALID_ARGUMENT naming the part for another dtype or
// block size, or a code of -128.
Result<Tensor> PackInt8LinearWeight(const std::vector<LinearSource>& parts, ThreadPool& pool);

// The weight's dequantized value at (n, k): qw * scale, exact in double (tests, references).
double Int8WeightAt(const Tensor& w, int64_t n, int64_t k);

// Quantizes activation rows x [m, k] per 32-block: q [m, Kb * 32] (zero padded), scales
// [m, Kb], sums [m, Kb] (sum of the block's q). The scalar rule; the VNNI path runs
// linear_int8_internal::QuantizeActivationsInt8Avx512, which gives the same bytes.
void QuantizeActivationsInt8(const float* x, int64_t m, int64_t k, int8_t* q, float* scales,
                             int32_t* sums);

// out[m, n] as above; w from QuantizeLinearWeightInt8; x, out row-major (K, N); bias may be null.
void LinearInt8Forward(Int8Kernel kernel, ThreadPool& pool, const float* x, int64_t m,
                       const Tensor& w, const float* bias, float* out);

namespace linear_int8_internal {
// One register tile: rows [0, mr) of the quantized activations against np consecutive panels,
// over all Kb blocks; writes (not accumulates) out, + bias.
struct TileArgs {
  int64_t kb;            // blocks
  const int8_t* q;       // activations at the tile's first row
  const float* xs;       // their scales [mr][kb]
  const int32_t* xsum;   // their block sums [mr][kb]
  int64_t ldq;           // row stride of q (kb * 32)
  const uint8_t* w;      // first panel's block 0
  int64_t panel_stride;  // bytes from one panel to the next (kb * kInt8BlockBytes)
  float* c;              // out at (first row, first column)
  int64_t ldc;
  int nc;             // valid columns, 1 .. 16 * np
  const float* bias;  // at the tile's first column, or null
};
using TileFn = void (*)(const TileArgs&);
inline constexpr int kMaxMr = 8;
inline constexpr int kMaxNp = 2;
struct TileKernels {
  int max_mr = 0;
  int max_np = 0;
  TileFn fn[kMaxNp + 1][kMaxMr + 1] = {};
};
TileKernels Avx512VnniTileKernels();
// QuantizeActivationsInt8 with AVX-512 (F, BW): the same codes, scales and sums, bit for bit
// (for finite inputs). Only where CpuHasAvx512Vnni().
void QuantizeActivationsInt8Avx512(const float* x, int64_t m, int64_t k, int8_t* q, float* scales,
                                   int32_t* sums);
}  // namespace linear_int8_internal

}  // namespace engram
