// FP8 block formats: E4M3 values with one E8M0 (power-of-two) scale per block of 32, the
// storage of DeepSeek-V4.1's Engram tables (per row) and of its FP8 projections (32x32 tiles).
// A value is x = e4m3(code) * 2^(scale - 127). The scalar codecs are in dtype.h.
//
// The packed FP8 row (how a table row travels through the tiers, the caches and over the bus):
// the `dim` E4M3 codes, then the dim / 32 E8M0 scales; 256 values -> 264 bytes.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace engram {

inline constexpr int64_t kFp8Block = 32;

// Bytes of one packed FP8 row of `dim` values (dim a multiple of kFp8Block).
constexpr size_t Fp8RowBytes(int64_t dim) { return static_cast<size_t>(dim + dim / kFp8Block); }

// The scale of a block whose largest magnitude is `amax`: the smallest power of two 2^k with
// amax / 2^k <= 448, as the E8M0 byte k + 127 clamped to [0, 254]; an all-zero block gets
// 127 (1.0); a NaN or infinite amax gets 0xFF (NaN).
uint8_t E8M0ScaleFor(float amax);

// One row of `dim` values (a multiple of 32): codes[i] = e4m3(x[i] / scale of i's block),
// rounded to nearest even and saturating; scales[b] = E8M0ScaleFor(max |x| of block b).
void QuantizeFp8Row(const float* x, int64_t dim, uint8_t* codes, uint8_t* scales);
// The scales QuantizeFp8Row would choose, without the codes.
void Fp8RowScales(const float* x, int64_t dim, uint8_t* scales);
// out[i] = e4m3(codes[i]) * e8m0(scales[i / 32]). The scalar reference of the kernels.
void DequantFp8Row(const uint8_t* codes, const uint8_t* scales, int64_t dim, float* out);

// A [rows, cols] matrix in 32x32 tiles (any rows, cols): scales [ceil(rows/32), ceil(cols/32)]
// row-major, codes [rows, cols].
void QuantizeFp8Tiles(const float* w, int64_t rows, int64_t cols, uint8_t* codes, uint8_t* scales);
void DequantFp8Tiles(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                     float* out);

}  // namespace engram
