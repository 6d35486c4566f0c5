// FP8 Linear of the CPU backend: block-scaled E4M3 weights (Hugging Face's fine-grained FP8,
// config.json quantization_config quant_method "fp8") run as they are stored, one byte per
// weight, F32 activations and F32 accumulation. Each weight is widened exactly (E4M3 -> F16 by
// bit manipulation -> F32) and multiplied by its block's scale in F32, so a weight enters the
// sum as round_f32(e4m3 x scale_inv) on every ISA; only the summation order differs.
//
// Layout (Layout::kFp8Panels, dtype U8, logical shape [N, K]): ceil(N / 16) panels of 16 rows;
// with Kp = K rounded up to 32, panel p holds Kp rows of 16 E4M3 codes (input k, column j at
// byte (p * Kp + k) * 16 + j; rows past N and inputs past K are 0), and after all panels, at
// byte Fp8FactorOffset(N, K), the F32 factors [panels][Kp / 32]: scale_inv x 2^8 of the panel's
// rows and that group of 32 inputs (the widening yields e4m3 / 2^8). So a block row count that
// is a multiple of 16 and a block column count that is a multiple of 32 are what this layout
// can hold (the checkpoints' [128, 128] is).
//
// Kernels: for M <= kFp8DirectMaxM (decode, batches up to 16) the codes are widened in
// registers (AVX-512F 4 rows at a time, AVX2/F16C 2), re-read from cache for each group of
// rows; otherwise, and on the scalar path, each k-block of a panel is widened once into F32
// and the F32 micro-kernels of linear.h run over it. Measured on `small` (docs/perf.md): at 16
// rows the register path decoded 1.4-2x faster than widening into F32 tiles.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/tensor.h"

namespace engram {

inline constexpr int64_t kFp8Group = 32;       // inputs per factor
inline constexpr int64_t kFp8DirectMaxM = 16;  // rows run by the register-widening kernels

// Bytes of the layout above for an [n, k] weight, and where its factors start.
size_t Fp8LinearBytes(int64_t n, int64_t k);
size_t Fp8FactorOffset(int64_t n, int64_t k);

// The parts (all F8_E4M3 with F32/BF16 scale_inv) stacked along N into the layout above.
// INVALID_ARGUMENT naming the part (its tensor name) when its block size cannot be held
// (block_n not a multiple of 16, block_k not a multiple of 32), when a part other than the last
// has a row count that is not a multiple of 16 (its panel would mix two parts' scales), when a
// code is the E4M3 NaN (S.1111.111), or when a scale x 2^8 overflows F32.
Result<Tensor> PackFp8LinearWeight(const std::vector<LinearSource>& parts, ThreadPool& pool);

// The weight w[n, k] of a packed tensor as the kernels use it (tests, references):
// e4m3 x scale_inv rounded to F32.
double Fp8WeightAt(const Tensor& w, int64_t n, int64_t k);

namespace linear_fp8_internal {

// Panel p's inputs [k0, k0 + kl) widened to F32 rows of 16 (dst [kl][16]); k0 a multiple of 32.
void PanelToF32(CpuIsa isa, const Tensor& w, int64_t p, int64_t k0, int64_t kl, float* dst);

// out[m, n] = sum_k x[m, k] w[n, k] (+ bias[n]) for M <= kFp8DirectMaxM with an AVX2 or
// AVX-512 isa: the register-widening kernels, threads over panels.
void LinearFp8Direct(CpuIsa isa, ThreadPool& pool, const float* x, int64_t m, const Tensor& w,
                     const float* bias, float* out);

}  // namespace linear_fp8_internal

}  // namespace engram
