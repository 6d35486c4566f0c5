#include "common/fp8.h"

#include <algorithm>
#include <cstring>

#include "common/dtype.h"

namespace engram {
namespace {

uint32_t AbsBits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x & 0x7fffffffu;
}

// The scale for a block whose largest |x| has the bits `amax_bits` (sign cleared): as
// E8M0ScaleFor. Finite positive magnitudes order like their bit patterns, and any NaN or inf
// has bits >= 0x7f800000, so the block's amax is the integer max of its |x| bits.
uint8_t ScaleForAbsBits(uint32_t amax_bits) {
  if (amax_bits >= 0x7f800000u) return 0xff;  // inf or NaN
  if (amax_bits == 0) return 127;
  // F32 subnormals (< 2^-126) need k < -127: clamped to 0.
  if (amax_bits < 0x00800000u) return 0;
  // amax = m * 2^e, m in [1, 2); 448 = 1.75 * 2^8. amax <= 1.75 * 2^(8 + k) holds for
  // k >= e - 8 when m <= 1.75, else for k >= e - 7.
  const int e = static_cast<int>(amax_bits >> 23) - 127;
  const int k = e - 8 + ((amax_bits & 0x7fffffu) > 0x600000u ? 1 : 0);
  return static_cast<uint8_t>(std::clamp(k + 127, 0, 254));
}

// 2^(127 - s) as an F32, for the scales a finite block gets (s <= 247: amax <= FLT_MAX < 448 *
// 2^121); x * this is exactly ldexp(x, 127 - s), correctly rounded where it underflows.
float InverseScale(uint8_t s) {
  const uint32_t bits = static_cast<uint32_t>(254 - s) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

uint8_t E8M0ScaleFor(float amax) { return ScaleForAbsBits(AbsBits(amax)); }

uint8_t BlockScale(const float* xb) {
  uint32_t amax = 0;
  for (int64_t i = 0; i < kFp8Block; ++i) amax = std::max(amax, AbsBits(xb[i]));
  return ScaleForAbsBits(amax);
}

void Fp8RowScales(const float* x, int64_t dim, uint8_t* scales) {
  for (int64_t b = 0; b < dim / kFp8Block; ++b) scales[b] = BlockScale(x + b * kFp8Block);
}

void QuantizeFp8Row(const float* x, int64_t dim, uint8_t* codes, uint8_t* scales) {
  for (int64_t b = 0; b < dim / kFp8Block; ++b) {
    const float* xb = x + b * kFp8Block;
    uint8_t* cb = codes + b * kFp8Block;
    const uint8_t s = BlockScale(xb);
    scales[b] = s;
    if (s == 0xff) {
      std::memset(cb, 0x7f, kFp8Block);
      continue;
    }
    const float inv = InverseScale(s);
    for (int64_t i = 0; i < kFp8Block; ++i) cb[i] = F32ToE4M3(xb[i] * inv);
  }
}

void DequantFp8Row(const uint8_t* codes, const uint8_t* scales, int64_t dim, float* out) {
  for (int64_t i = 0; i < dim; ++i) {
    out[i] = E4M3ToF32(codes[i]) * E8M0ToF32(scales[i / kFp8Block]);
  }
}

void QuantizeFp8Tiles(const float* w, int64_t rows, int64_t cols, uint8_t* codes, uint8_t* scales) {
  const int64_t tc = (cols + kFp8Block - 1) / kFp8Block;
  for (int64_t r0 = 0; r0 < rows; r0 += kFp8Block) {
    const int64_t r1 = std::min(rows, r0 + kFp8Block);
    for (int64_t c0 = 0; c0 < cols; c0 += kFp8Block) {
      const int64_t c1 = std::min(cols, c0 + kFp8Block);
      uint32_t amax = 0;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, AbsBits(w[r * cols + c]));
      }
      const uint8_t s = ScaleForAbsBits(amax);
      scales[(r0 / kFp8Block) * tc + c0 / kFp8Block] = s;
      const float inv = InverseScale(s);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) {
          codes[r * cols + c] = s == 0xff ? 0x7f : F32ToE4M3(w[r * cols + c] * inv);
        }
      }
    }
  }
}

void DequantFp8Tiles(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                     float* out) {
  const int64_t tc = (cols + kFp8Block - 1) / kFp8Block;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* srow = scales + (r / kFp8Block) * tc;
    for (int64_t c = 0; c < cols; ++c) {
      out[r * cols + c] = E4M3ToF32(codes[r * cols + c]) * E8M0ToF32(srow[c / kFp8Block]);
    }
  }
}

}  // namespace engram
