// Small AVX2/FMA helpers shared by the CPU kernels (internal to src/kernels/cpu). Every
// function here is compiled for AVX2/FMA/F16C (F16C ships with every AVX2 CPU and is checked
// by CpuHasAvx2Fma); call them only from ENGRAM_AVX2 functions, which run only after
// CpuHasAvx2Fma() said yes. Lambdas do not inherit target attributes: keep
// intrinsics out of lambdas.
#pragma once

#include <immintrin.h>

#include <cstdint>

#define ENGRAM_AVX2 __attribute__((target("avx2,fma,f16c")))
#define ENGRAM_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace engram {

// The e^x polynomial of avx2::Exp, shared by the wider kernels (attention_avx512.cc): inputs
// clamped to [kExpLo, kExpHi], n = round(x log2 e), r = x - n ln 2 (in two parts), e^r by a
// degree-5 polynomial, times 2^n.
namespace exp_poly {
inline constexpr float kHi = 88.3762626647949f, kLo = -87.3365478515625f;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
inline constexpr float kC[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
}  // namespace exp_poly

namespace avx2 {

ENGRAM_AVX2_INLINE float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

ENGRAM_AVX2_INLINE float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Eight BF16 values at p as F32.
ENGRAM_AVX2_INLINE __m256 LoadBf16x8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Eight F16 values at p as F32.
ENGRAM_AVX2_INLINE __m256 LoadF16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Lane mask selecting the first n (0..8) lanes.
ENGRAM_AVX2_INLINE __m256i TailMask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

// e^x, relative error ~2e-7 for x in [-87, 88]; inputs outside are clamped (so e^-inf is
// ~1e-38, not 0, which is harmless for softmax and SiLU).
ENGRAM_AVX2_INLINE __m256 Exp(__m256 x) {
  using namespace exp_poly;
  x = _mm256_min_ps(x, _mm256_set1_ps(kHi));
  x = _mm256_max_ps(x, _mm256_set1_ps(kLo));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 y = _mm256_set1_ps(kC[0]);
  for (int i = 1; i < 6; ++i) y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kC[i]));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  // n is in [-126, 128]; 2^n built in two halves so n = 128 does not overflow the exponent.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 p1 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 p2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
}

// x * sigmoid(x).
ENGRAM_AVX2_INLINE __m256 Silu(__m256 x) {
  const __m256 e = Exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), e));
}

}  // namespace avx2
}  // namespace engram
