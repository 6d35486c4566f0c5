// Element types of tensors in files and on backends, and scalar conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "common/status.h"

namespace engram {

// kF8E4M3: OCP FP8 E4M3 ("fn": bias 7, no infinities, S.1111.111 NaN, max 448).
// kF8E8M0: an unsigned power-of-two scale 2^(e - 127), 0xFF NaN (one per block of values).
enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kU8, kF8E4M3, kF8E8M0, kI8 };

size_t DTypeSize(DType t);
std::string_view DTypeName(DType t);  // safetensors spelling: "F32", "BF16", ...
// Parses a safetensors dtype string; error names the value and the accepted ones.
Result<DType> ParseDType(std::string_view name);

inline float Bf16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round to nearest even; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);
// FP8 codecs (fp8.h has the block formats built on them). Bit manipulation only: exact, and
// independent of the floating-point environment (rounding mode, FTZ/DAZ do not matter).
//
// E4M3 code S.EEEE.MMM: E > 0 is (1 + M/8) * 2^(E-7), E == 0 is M * 2^-9 (subnormal), S.1111.111
// is NaN (returned as a quiet NaN of sign S), 0x00 / 0x80 are +0 / -0.
inline float E4M3ToF32(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80u) << 24;
  const uint32_t em = v & 0x7fu;
  uint32_t bits;
  if (em == 0x7fu) {
    bits = sign | 0x7fc00000u;
  } else if (em >= 0x08u) {
    bits = sign | ((em << 20) + (120u << 23));  // rebias the exponent: 7 -> 127
  } else {
    // M * 2^-9 for M in [0, 8): exact in F32; built from the bits of M as a float.
    const float mag = static_cast<float>(em) * 0.001953125f;
    std::memcpy(&bits, &mag, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round to nearest even, saturating to +-448 (infinities too); NaN gives 0x7F (the sign kept).
// Magnitudes at or below 2^-10 give a zero of f's sign.
inline uint8_t F32ToE4M3(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 24) & 0x80u;
  const uint32_t a = x & 0x7fffffffu;
  uint32_t code;
  if (a > 0x7f800000u) {
    code = 0x7fu;  // NaN
  } else if (a >= 0x43e00000u) {
    code = 0x7eu;  // >= 448 (inf included): saturate
  } else if (a >= 0x3c800000u) {
    // Normal (>= 2^-6): rebias the exponent 127 -> 7 and round away the low 20 mantissa bits to
    // nearest even; a carry out of the mantissa correctly bumps the exponent (up to 448 = 0x7e).
    const uint32_t r = a - (120u << 23);
    code = (r + 0x7ffffu + ((r >> 20) & 1u)) >> 20;
  } else if (a >= 0x3a800000u) {
    // [2^-10, 2^-6): subnormal, round(a * 2^9). a = mant24 * 2^(e - 150), so the code is
    // mant24 >> (141 - e), rounded to nearest even; 8 (= 2^-6) is the smallest normal's code.
    const uint32_t shift = 141u - (a >> 23);  // 21..24
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    code = (m + ((1u << (shift - 1)) - 1u) + ((m >> shift) & 1u)) >> shift;
  } else {
    code = 0;  // below 2^-10 (half the smallest subnormal): zero
  }
  return static_cast<uint8_t>(sign | code);
}
// 2^(e - 127); 0xFF is NaN. e = 0 is 2^-127, an F32 subnormal.
inline float E8M0ToF32(uint8_t e) {
  const uint32_t bits = e == 0xffu ? 0x7fc00000u : e == 0 ? 0x00400000u : uint32_t{e} << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Converts n elements of type `src_type` at src to float (E8M0: the scale's value).
void ConvertToF32(DType src_type, const void* src, float* dst, size_t n);

}  // namespace engram
