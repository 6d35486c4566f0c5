// Row-wise and elementwise kernels of the CPU backend: RMSNorm, add, SwiGLU, rotary
// embedding and row gathers (Embedding, GatherRows; the FP8 row kernels are in fp8_gather.cc).
// Pointers are F32 row-major unless said otherwise; shapes are the caller's (the backend's) to
// check.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"

namespace engram {

// out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w; out may equal x.
void RmsNormRows(CpuIsa isa, ThreadPool& pool, const float* x, const float* w, float eps,
                 int64_t rows, int64_t d, float* out);

// Sum of squares of n floats with F32 accumulation (the norm's inner loop).
float SumOfSquares(CpuIsa isa, const float* x, int64_t n);

// x[i] += y[i] for i < n.
void AddInPlace(CpuIsa isa, ThreadPool& pool, float* x, const float* y, int64_t n);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i].
void SwiGluRows(CpuIsa isa, ThreadPool& pool, const float* gate_up, int64_t rows, int64_t inter,
                float* out);

// Rotary embedding (rotate_half) in place on the first nq + nkv heads of each token's qkv
// row of (nq + 2 nkv) * hd floats; angle = float(positions[t]) * inv_freq[i] in F32.
void RopeInPlace(CpuIsa isa, ThreadPool& pool, float* qkv, int64_t tokens, const int32_t* positions,
                 int nq, int nkv, int hd, const float* inv_freq);

// out[i, :] = F32(table[index[i], :]) for i < count; table rows of `d` elements of dtype
// F32, BF16 or F16. Indices must be valid. Rows ahead are prefetched.
void GatherRowsToF32(CpuIsa isa, ThreadPool& pool, const void* table, DType dtype, int64_t d,
                     const int32_t* index, int64_t count, float* out);
void GatherRowsToF32(CpuIsa isa, ThreadPool& pool, const void* table, DType dtype, int64_t d,
                     const int64_t* index, int64_t count, float* out);

// Packed FP8 rows (common/fp8.h: dh E4M3 codes, then dh / 32 E8M0 scales, Fp8RowBytes(dh)
// bytes; dh a multiple of 32). Dequantized as DequantFp8Row does, with results bitwise equal to
// it except that NaNs (NaN codes, the NaN scale 0xFF) may differ in sign and payload. The SIMD
// paths (fp8_gather.cc) need denormals honoured (MXCSR DAZ off, the default), as the scalar
// reference does: the scale 0 is 2^-127, an F32 subnormal.
// out[0, dh) = the row at `row` as F32.
void Fp8RowToF32(CpuIsa isa, const uint8_t* row, int64_t dh, float* out);
// out[i, :] = Fp8RowToF32(table row index[i]) for i < count; table rows are Fp8RowBytes(dh)
// bytes. Indices must be valid. Rows ahead are prefetched; rows are split over the pool.
void GatherFp8RowsToF32(CpuIsa isa, ThreadPool& pool, const uint8_t* table, int64_t dh,
                        const int64_t* index, int64_t count, float* out);

// Converts n elements (F32, BF16 or F16) to F32.
void RowToF32(CpuIsa isa, DType dtype, const void* src, float* dst, int64_t n);

}  // namespace engram
