// AVX-512 micro-kernels of the Linear driver: one zmm register per panel row (16 columns),
// tiles of up to 12 rows x 2 panels (24 accumulators). Compiled for AVX-512F and used only
// when the CPU has it (CpuIsa::kAvx512).
#include <immintrin.h>

#include "kernels/cpu/linear_micro.h"

#define ENGRAM_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define ENGRAM_AVX512_INLINE __attribute__((target("avx512f,avx2,fma"), always_inline)) inline

namespace engram::linear_internal {
namespace {

// One panel row of 16 values as F32. BF16 panels hold columns (i, i + 8) in 32-bit word i;
// widening each 16-bit value in memory order puts column i in lane 2i and column i + 8 in
// lane 2i + 1, undone once per tile by Unpermute.
template <bool kBf16>
ENGRAM_AVX512_INLINE __m512 LoadPanelRow(const void* b, int64_t offset) {
  if constexpr (kBf16) {
    const __m256i w = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(b) + offset));
    // The all-lanes maskz forms are the plain instructions; they avoid GCC 12's false
    // -Wmaybe-uninitialized on the unmasked intrinsics' _mm512_undefined operand.
    constexpr __mmask16 kAll = 0xffff;
    return _mm512_castsi512_ps(
        _mm512_maskz_slli_epi32(kAll, _mm512_maskz_cvtepu16_epi32(kAll, w), 16));
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(b) + offset);
  }
}

template <bool kBf16>
ENGRAM_AVX512_INLINE __m512 Unpermute(__m512 v) {
  if constexpr (kBf16) {
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    return _mm512_maskz_permutexvar_ps(0xffff, idx, v);
  } else {
    return v;
  }
}

// KU independent accumulator sets hide the FMA latency when MR * NP is small.
template <int MR, int NP, int KU, bool kBf16>
ENGRAM_AVX512 void MicroAvx512(const MicroArgs& p) {
  __m512 acc[KU][MR][NP];
#pragma GCC unroll 16
  for (int u = 0; u < KU; ++u) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) acc[u][r][j] = _mm512_setzero_ps();
    }
  }
  const float* a = p.a;
  const int64_t lda = p.lda;
  int64_t k = 0;
  for (; k + KU <= p.kc; k += KU) {
#pragma GCC unroll 16
    for (int u = 0; u < KU; ++u) {
      __m512 b[NP];
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j)
        b[j] = LoadPanelRow<kBf16>(p.b, j * p.b_stride + (k + u) * kPanel);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[r * lda + k + u]);
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) acc[u][r][j] = _mm512_fmadd_ps(av, b[j], acc[u][r][j]);
      }
    }
  }
  for (; k < p.kc; ++k) {
    __m512 b[NP];
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) b[j] = LoadPanelRow<kBf16>(p.b, j * p.b_stride + k * kPanel);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) acc[0][r][j] = _mm512_fmadd_ps(av, b[j], acc[0][r][j]);
    }
  }
#pragma GCC unroll 16
  for (int u = 1; u < KU; ++u) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) acc[0][r][j] = _mm512_add_ps(acc[0][r][j], acc[u][r][j]);
    }
  }
#pragma GCC unroll 2
  for (int j = 0; j < NP; ++j) {
    const int cols = p.nc - j * kPanel;
    if (cols <= 0) break;
    const __mmask16 mask =
        cols >= kPanel ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << cols) - 1);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* crow = p.c + r * p.ldc + j * kPanel;
      __m512 v = Unpermute<kBf16>(acc[0][r][j]);
      if (p.accumulate) {
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, crow));
      } else if (p.bias != nullptr) {
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p.bias + j * kPanel));
      }
      _mm512_mask_storeu_ps(crow, mask, v);
    }
  }
}

template <int MR, int NP, bool kBf16>
constexpr MicroFn Pick() {
  // Aim for >= 8 independent accumulators (FMA latency x 2 pipes).
  constexpr int kChains = MR * NP;
  constexpr int KU = kChains >= 6 ? 1 : kChains >= 3 ? 2 : 4;
  return &MicroAvx512<MR, NP, KU, kBf16>;
}

template <int NP, bool kBf16>
void Fill(MicroKernels& k) {
  k.fn[NP][1] = Pick<1, NP, kBf16>();
  k.fn[NP][2] = Pick<2, NP, kBf16>();
  k.fn[NP][3] = Pick<3, NP, kBf16>();
  k.fn[NP][4] = Pick<4, NP, kBf16>();
  k.fn[NP][5] = Pick<5, NP, kBf16>();
  k.fn[NP][6] = Pick<6, NP, kBf16>();
  k.fn[NP][7] = Pick<7, NP, kBf16>();
  k.fn[NP][8] = Pick<8, NP, kBf16>();
  k.fn[NP][9] = Pick<9, NP, kBf16>();
  k.fn[NP][10] = Pick<10, NP, kBf16>();
  k.fn[NP][11] = Pick<11, NP, kBf16>();
  k.fn[NP][12] = Pick<12, NP, kBf16>();
}

}  // namespace

MicroKernels Avx512MicroKernels(bool bf16) {
  MicroKernels k;
  k.max_mr = 12;
  k.max_np = 2;
  k.kc_block = 256;
  if (bf16) {
    Fill<1, true>(k);
    Fill<2, true>(k);
  } else {
    Fill<1, false>(k);
    Fill<2, false>(k);
  }
  return k;
}

}  // namespace engram::linear_internal
