// AVX-512 VNNI tiles of the int8 Linear (linear_int8.h): vpdpbusd of the offset-binary weights
// (u8) with broadcast activation groups (s8), the int32 accumulators started at -128 * sum qx
// (the offset's contribution), one zmm of 16 columns per panel; up to 6 rows x 2 panels (12
// int32 + 12 F32 accumulators). Used only when the CPU has AVX-512 VNNI and BW.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "common/int8_block.h"
#include "kernels/cpu/linear_int8.h"

#define ENGRAM_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))

namespace engram::linear_int8_internal {
namespace {

// The all-lanes maskz forms are the plain instructions; they avoid GCC 12's false
// -Wmaybe-uninitialized on the unmasked intrinsics' _mm512_undefined operand.
constexpr __mmask16 kAll = 0xffff;

template <int MR, int NP>
ENGRAM_VNNI void TileVnni(const TileArgs& p) {
  __m512 facc[MR][NP];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) facc[r][j] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < p.kb; ++b) {
    __m512i iacc[MR][NP];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i init = _mm512_set1_epi32(-128 * p.xsum[r * p.kb + b]);
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) iacc[r][j] = init;
    }
    const uint8_t* blk = p.w + b * kInt8BlockBytes;
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) {
      __m512i wv[NP];
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) {
        wv[j] = _mm512_loadu_si512(blk + j * p.panel_stride + 64 * g);
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        int32_t x4;
        std::memcpy(&x4, p.q + r * p.ldq + b * kInt8Block + 4 * g, 4);
        const __m512i xb = _mm512_set1_epi32(x4);
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) iacc[r][j] = _mm512_dpbusd_epi32(iacc[r][j], wv[j], xb);
      }
    }
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
      const __m512 ws =
          _mm512_loadu_ps(reinterpret_cast<const float*>(blk + j * p.panel_stride + 512));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m512 sc = _mm512_mul_ps(ws, _mm512_set1_ps(p.xs[r * p.kb + b]));
        facc[r][j] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAll, iacc[r][j]), sc, facc[r][j]);
      }
    }
  }
#pragma GCC unroll 2
  for (int j = 0; j < NP; ++j) {
    const int cols = p.nc - j * kInt8PanelWidth;
    if (cols <= 0) break;
    const __mmask16 mask = cols >= kInt8PanelWidth ? static_cast<__mmask16>(0xffff)
                                                   : static_cast<__mmask16>((1u << cols) - 1);
    const __m512 bias = p.bias != nullptr
                            ? _mm512_maskz_loadu_ps(mask, p.bias + j * kInt8PanelWidth)
                            : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_storeu_ps(p.c + r * p.ldc + j * kInt8PanelWidth, mask,
                            _mm512_add_ps(facc[r][j], bias));
    }
  }
}

template <int NP>
void Fill(TileKernels& k) {
  k.fn[NP][1] = &TileVnni<1, NP>;
  k.fn[NP][2] = &TileVnni<2, NP>;
  k.fn[NP][3] = &TileVnni<3, NP>;
  k.fn[NP][4] = &TileVnni<4, NP>;
  k.fn[NP][5] = &TileVnni<5, NP>;
  k.fn[NP][6] = &TileVnni<6, NP>;
}

}  // namespace

// Horizontal max / sum by halving (512 -> 256 -> 128 -> 32 bits), and |x|; maskz forms only
// (see kAll).
ENGRAM_VNNI inline float MaxLanes(__m512 v) {
  const __m512d d = _mm512_castps_pd(v);
  const __m256 h = _mm256_max_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, d, 0)),
                                 _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, d, 1)));
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
ENGRAM_VNNI inline int32_t SumLanes(__m512i v) {
  const __m256i h = _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xff, v, 0),
                                     _mm512_maskz_extracti64x4_epi64(0xff, v, 1));
  __m128i x = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
  x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xB1));
  return _mm_cvtsi128_si32(x);
}
ENGRAM_VNNI inline __m512 Abs(__m512 v) {
  return _mm512_castsi512_ps(
      _mm512_maskz_and_epi32(kAll, _mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
}

// round-to-nearest-even(v * inv) clamped to [-127, 127] (no lambdas: they would not inherit
// the target attribute).
ENGRAM_VNNI inline __m512i Codes(__m512 v, __m512 inv) {
  const __m512i c = _mm512_maskz_cvtps_epi32(kAll, _mm512_maskz_mul_ps(kAll, v, inv));
  return _mm512_maskz_min_epi32(kAll, _mm512_maskz_max_epi32(kAll, c, _mm512_set1_epi32(-127)),
                                _mm512_set1_epi32(127));
}

ENGRAM_VNNI void QuantizeActivationsInt8Avx512(const float* x, int64_t m, int64_t k, int8_t* q,
                                               float* scales, int32_t* sums) {
  const int64_t kb = (k + kInt8Block - 1) / kInt8Block;
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    for (int64_t b = 0; b < kb; ++b) {
      const int64_t k0 = b * kInt8Block;
      __m512 v0, v1;
      if (k0 + kInt8Block <= k) {
        v0 = _mm512_loadu_ps(xr + k0);
        v1 = _mm512_loadu_ps(xr + k0 + 16);
      } else {  // the partial last block, zero padded
        const int kl = static_cast<int>(k - k0);
        const __mmask16 m0 = kl >= 16 ? kAll : static_cast<__mmask16>((1u << kl) - 1);
        const __mmask16 m1 =
            kl > 16 ? static_cast<__mmask16>((1u << (kl - 16)) - 1) : static_cast<__mmask16>(0);
        v0 = _mm512_maskz_loadu_ps(m0, xr + k0);
        v1 = _mm512_maskz_loadu_ps(m1, xr + k0 + 16);
      }
      // max |x| is exact, so it equals the scalar loop's; the rest is the same F32 arithmetic,
      // and cvtps rounds to nearest even as nearbyint does in the default rounding mode.
      const float amax = MaxLanes(_mm512_maskz_max_ps(kAll, Abs(v0), Abs(v1)));
      const float inv = Int8InverseScale(amax);
      const __m512 vi = _mm512_set1_ps(inv);
      const __m512i q0 = Codes(v0, vi), q1 = Codes(v1, vi);
      // Narrowed in registers and written with one 32-byte store.
      const __m128i b0 = _mm512_maskz_cvtsepi32_epi8(kAll, q0);
      const __m128i b1 = _mm512_maskz_cvtsepi32_epi8(kAll, q1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + r * kb * kInt8Block + k0),
                          _mm256_inserti128_si256(_mm256_castsi128_si256(b0), b1, 1));
      scales[r * kb + b] = Int8Scale(amax);
      sums[r * kb + b] = SumLanes(_mm512_maskz_add_epi32(kAll, q0, q1));
    }
  }
}

TileKernels Avx512VnniTileKernels() {
  TileKernels k;
  k.max_mr = 6;  // 6 x 2 tiles: 12 int32 + 12 F32 accumulators, weights and broadcasts
  k.max_np = 2;
  Fill<1>(k);
  Fill<2>(k);
  return k;
}

}  // namespace engram::linear_int8_internal
