// The CPU backend's FP8 row kernels (elementwise.h): packed E4M3/E8M0 rows dequantized to F32
// where the model reads them (GatherRows). Three paths, chosen by CpuIsa:
//  - portable: a 256-entry table of e4m3 / 2^8 times the block's factor;
//  - AVX2 (F16C) and AVX-512F: each code becomes an F16 by bit manipulation and the F16 -> F32
//    conversion instruction widens it. S.EEEE.MMM placed as the F16 S.0EEEE.MMM0000000 (bias
//    15 instead of 7) is e4m3 / 2^8 exactly, E = 0 (an E4M3 subnormal) included, since F16
//    has subnormals down to 2^-24; the conversion gives a normal F32. NaN codes (S.1111.111)
//    become the F16 quiet NaN S.11111.1000000000, i.e. the F32 quiet NaN E4M3ToF32 gives.
// Each block's values are then multiplied by one factor 2^(s - 127) * 2^8 (s the E8M0 scale),
// a normal F32 for s <= 246; larger scales multiply by 2^8 and then by 2^(s - 127). Every
// product e4m3 * 2^(s - 127) is exact in F32 or overflows to inf (|e4m3| >= 2^-9 has 4
// significant bits and 2^-136 is above the F32 subnormal floor), so whichever way it is
// formed it equals DequantFp8Row's e4m3 * e8m0 bitwise. No multiply here reads an F32
// subnormal (they are slow on x86, and DAZ would flush them): only the scale 0 block's results
// can be subnormal.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "common/dtype.h"
#include "common/fp8.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gather_loop.h"
#include "kernels/cpu/simd_avx2.h"

#define ENGRAM_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define ENGRAM_AVX512_INLINE __attribute__((target("avx512f,avx2,fma,f16c"), always_inline)) inline

namespace engram {
namespace {

float FloatOfBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The block's factors: `first` multiplies the values widened as e4m3 / 2^8; when `second` is
// not 1 (scales 247..254, whose 2^(s - 119) is not an F32), `first` is 2^8 and `second` the
// scale. Scale 255 gives NaN.
struct BlockFactor {
  float first;
  float second;
};
inline BlockFactor FactorOf(uint8_t s) {
  if (s == 0xff) return {FloatOfBits(0x7fc00000u), 1.f};
  if (s <= 246) return {FloatOfBits(static_cast<uint32_t>(s + 8) << 23), 1.f};
  return {256.f, E8M0ToF32(s)};
}

std::array<float, 256> MakeTable() {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = E4M3ToF32(static_cast<uint8_t>(c)) * (1.f / 256);
  return t;
}

// e4m3(c) / 2^8 (exact: the smallest, 2^-17, is a normal F32; NaN stays NaN).
const float* E4M3Over256() {
  static const std::array<float, 256> table = MakeTable();
  return table.data();
}

void RowPortable(const uint8_t* row, int64_t dh, float* out) {
  const float* lut = E4M3Over256();
  const uint8_t* scales = row + dh;
  for (int64_t b = 0; b < dh / kFp8Block; ++b) {
    const BlockFactor f = FactorOf(scales[b]);
    const uint8_t* c = row + b * kFp8Block;
    float* o = out + b * kFp8Block;
    if (f.second == 1.f) {
      for (int64_t i = 0; i < kFp8Block; ++i) o[i] = lut[c[i]] * f.first;
    } else {
      for (int64_t i = 0; i < kFp8Block; ++i) o[i] = lut[c[i]] * f.first * f.second;
    }
  }
}

// 16 codes at p as the F16 values e4m3 / 2^8 (NaN codes: the F16 quiet NaN of their sign).
ENGRAM_AVX2_INLINE __m256i CodesToF16x16(const uint8_t* p) {
  // Sign-extended, x << 7 has the sign in bit 15 and a copy in bit 14; clearing bit 14 leaves
  // S.0EEEE.MMM0000000.
  const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(x, 7), _mm256_set1_epi16(-0x4080));
  const __m256i nan =
      _mm256_cmpeq_epi16(_mm256_and_si256(x, _mm256_set1_epi16(0x7f)), _mm256_set1_epi16(0x7f));
  // A NaN code's F16 is S.01111.1110000000 (0x3f80): xor 0x4180 makes it S.11111.1000000000.
  return _mm256_xor_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x4180)));
}

ENGRAM_AVX2 void RowAvx2(const uint8_t* row, int64_t dh, float* out) {
  const uint8_t* scales = row + dh;
  for (int64_t b = 0; b < dh / kFp8Block; ++b) {
    const BlockFactor f = FactorOf(scales[b]);
    const __m256 first = _mm256_set1_ps(f.first), second = _mm256_set1_ps(f.second);
    const bool two = f.second != 1.f;
    const uint8_t* c = row + b * kFp8Block;
    float* o = out + b * kFp8Block;
    for (int half = 0; half < 2; ++half) {
      const __m256i h = CodesToF16x16(c + 16 * half);
      __m256 lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), first);
      __m256 hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), first);
      if (two) {
        lo = _mm256_mul_ps(lo, second);
        hi = _mm256_mul_ps(hi, second);
      }
      _mm256_storeu_ps(o + 16 * half, lo);
      _mm256_storeu_ps(o + 16 * half + 8, hi);
    }
  }
}

// The all-lanes maskz forms are the plain instructions; they avoid GCC 12's false
// -Wmaybe-uninitialized on the unmasked intrinsics' _mm512_undefined operand.
constexpr __mmask16 kAll = 0xffff;

ENGRAM_AVX512_INLINE __m512 WidenF16x16(__m256i h) { return _mm512_maskz_cvtph_ps(kAll, h); }

ENGRAM_AVX512 void RowAvx512(const uint8_t* row, int64_t dh, float* out) {
  const uint8_t* scales = row + dh;
  for (int64_t b = 0; b < dh / kFp8Block; ++b) {
    const BlockFactor f = FactorOf(scales[b]);
    const __m512 first = _mm512_set1_ps(f.first);
    const uint8_t* c = row + b * kFp8Block;
    float* o = out + b * kFp8Block;
    __m512 v0 = _mm512_mul_ps(WidenF16x16(CodesToF16x16(c)), first);
    __m512 v1 = _mm512_mul_ps(WidenF16x16(CodesToF16x16(c + 16)), first);
    if (f.second != 1.f) {
      const __m512 second = _mm512_set1_ps(f.second);
      v0 = _mm512_mul_ps(v0, second);
      v1 = _mm512_mul_ps(v1, second);
    }
    _mm512_storeu_ps(o, v0);
    _mm512_storeu_ps(o + 16, v1);
  }
}

}  // namespace

void Fp8RowToF32(CpuIsa isa, const uint8_t* row, int64_t dh, float* out) {
  switch (isa) {
    case CpuIsa::kAvx512:
      RowAvx512(row, dh, out);
      return;
    case CpuIsa::kAvx2:
      RowAvx2(row, dh, out);
      return;
    case CpuIsa::kScalar:
      break;
  }
  RowPortable(row, dh, out);
}

void GatherFp8RowsToF32(CpuIsa isa, ThreadPool& pool, const uint8_t* table, int64_t dh,
                        const int64_t* index, int64_t count, float* out) {
  GatherRowLoop(pool, table, Fp8RowBytes(dh), index, count, dh, out,
                [&](const uint8_t* row, float* dst) { Fp8RowToF32(isa, row, dh, dst); });
}

}  // namespace engram
