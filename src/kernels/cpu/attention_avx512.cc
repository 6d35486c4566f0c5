// AVX-512 prefill tiles of PagedAttention (attention.h, attention_internal): the q rows of a
// tile (consecutive tokens of one sequence x the q heads of one kv head, at most 16) sit in the
// 16 lanes of a zmm, so each key contributes one broadcast FMA per head dimension to all rows'
// scores, the online softmax runs lane-wise (no horizontal reductions), and each value row one
// broadcast FMA per dimension to all rows' outputs, kept transposed (dimension-major) until
// the end. Compiled for AVX-512F and used only when the CPU has it (CpuIsa::kAvx512).
#include <immintrin.h>

#include <algorithm>
#include <limits>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/simd_avx2.h"

#define ENGRAM_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define ENGRAM_AVX512_INLINE __attribute__((target("avx512f,avx2,fma"), always_inline)) inline

namespace engram::attention_internal {
namespace {

constexpr int kL = kTileRows;  // lanes
// The all-lanes maskz forms are the plain instructions; they avoid GCC 12's false
// -Wmaybe-uninitialized on the unmasked intrinsics' _mm512_undefined operand.
constexpr __mmask16 kAll = 0xffff;

// e^x lane-wise: avx2::Exp's polynomial (exp_poly) at 16 lanes.
ENGRAM_AVX512_INLINE __m512 Exp(__m512 x) {
  using namespace exp_poly;
  x = _mm512_maskz_min_ps(kAll, x, _mm512_set1_ps(kHi));
  x = _mm512_maskz_max_ps(kAll, x, _mm512_set1_ps(kLo));
  const __m512 n = _mm512_maskz_roundscale_ps(kAll, _mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 y = _mm512_set1_ps(kC[0]);
  for (int i = 1; i < 6; ++i) y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kC[i]));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  // 2^n in two halves so that n = 128 does not overflow the exponent.
  const __m512i ni = _mm512_maskz_cvtps_epi32(kAll, n);
  const __m512i half = _mm512_maskz_srai_epi32(kAll, ni, 1);
  const __m512i bias = _mm512_set1_epi32(127);
  const __m512 p1 = _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(kAll, _mm512_maskz_add_epi32(kAll, half, bias), 23));
  const __m512 p2 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
      kAll, _mm512_maskz_add_epi32(kAll, _mm512_maskz_sub_epi32(kAll, ni, half), bias), 23));
  return _mm512_mul_ps(_mm512_mul_ps(y, p1), p2);
}

// st[j] = sum_d k_j[d] qt[d] for JB keys k_j = k + j * ks (lanes: the tile's rows).
template <int JB>
ENGRAM_AVX512_INLINE void ScoreKeys(const float* qt, const float* k, int64_t ks, int hd,
                                    float* st) {
  __m512 acc[JB];
  for (int j = 0; j < JB; ++j) acc[j] = _mm512_setzero_ps();
  for (int d = 0; d < hd; ++d) {
    const __m512 q = _mm512_loadu_ps(qt + d * kL);
#pragma GCC unroll 8
    for (int j = 0; j < JB; ++j) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(k[j * ks + d]), q, acc[j]);
  }
  for (int j = 0; j < JB; ++j) _mm512_storeu_ps(st + j * kL, acc[j]);
}

// ot[d] = ot[d] * corr + sum_j pt[j] v_j[d] for the 16 dimensions [d0, d0 + 16) and n keys.
ENGRAM_AVX512_INLINE void AccumulateValues(float* ot, __m512 corr, const float* pt, const float* v,
                                           int64_t vs, int n, int d0) {
  __m512 acc[16];
  for (int dd = 0; dd < 16; ++dd)
    acc[dd] = _mm512_mul_ps(_mm512_loadu_ps(ot + (d0 + dd) * kL), corr);
  for (int j = 0; j < n; ++j) {
    const __m512 p = _mm512_loadu_ps(pt + j * kL);
    const float* vj = v + j * vs + d0;
#pragma GCC unroll 16
    for (int dd = 0; dd < 16; ++dd) acc[dd] = _mm512_fmadd_ps(_mm512_set1_ps(vj[dd]), p, acc[dd]);
  }
  for (int dd = 0; dd < 16; ++dd) _mm512_storeu_ps(ot + (d0 + dd) * kL, acc[dd]);
}

}  // namespace

bool TileShapeOk(int nq, int nkv, int hd) {
  return nkv > 0 && nq % nkv == 0 && nq / nkv <= kTileRows && hd > 0 && hd % 16 == 0 &&
         hd <= kMaxTileHeadDim;
}

size_t TileScratchFloats(int hd, int block_size) {
  return static_cast<size_t>(kL) * (2 * static_cast<size_t>(hd) + 2 * block_size);
}

ENGRAM_AVX512 void AttendTileAvx512(const PagedAttentionArgs& a, int64_t t0, int nt, int kvh,
                                    float* scratch) {
  const int G = a.nq / a.nkv, hd = a.hd, bs = a.block_size, R = nt * G;
  const int64_t row = static_cast<int64_t>(a.nq + 2 * a.nkv) * hd;
  const int64_t kv_stride = static_cast<int64_t>(a.nkv) * hd;
  float* qt = scratch;                            // [hd][16], q * scale
  float* ot = qt + static_cast<size_t>(hd) * kL;  // [hd][16], unnormalized out
  float* st = ot + static_cast<size_t>(hd) * kL;  // [bs][16], scores
  float* pt = st + static_cast<size_t>(bs) * kL;  // [bs][16], probabilities
  const int32_t p0 = a.positions[t0];
  // Lane r: token t0 + r / G, q head kvh * G + r % G; lanes >= R copy nothing (q = 0) and see
  // the keys row 0 sees, so they stay finite; they are never written out.
  alignas(64) int32_t rowpos[kL];
  for (int r = 0; r < kL; ++r) rowpos[r] = p0 + (r < R ? r / G : 0);
  for (int r = 0; r < kL; ++r) {
    const float* q =
        r < R ? a.qkv + (t0 + r / G) * row + static_cast<int64_t>(kvh * G + r % G) * hd : nullptr;
    for (int d = 0; d < hd; ++d) qt[d * kL + r] = q != nullptr ? q[d] * a.scale : 0.f;
  }
  std::fill_n(ot, static_cast<size_t>(hd) * kL, 0.f);
  const __m512i pos = _mm512_load_si512(rowpos);
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 l = _mm512_setzero_ps();
  const int64_t ctx = static_cast<int64_t>(p0) + nt;  // keys [0, last position]
  const int32_t* table =
      a.block_tables + static_cast<int64_t>(a.seq_of_token[t0]) * a.max_blocks_per_seq;
  for (int64_t k0 = 0; k0 < ctx; k0 += bs) {
    const int n = static_cast<int>(std::min<int64_t>(bs, ctx - k0));
    const int64_t block =
        static_cast<int64_t>(table[k0 / bs]) * bs * kv_stride + static_cast<int64_t>(kvh) * hd;
    const float* kb = a.k_cache + block;
    const float* vb = a.v_cache + block;
    if (k0 + bs < ctx) {  // the next block's rows: a stride apart, no hardware prefetcher follows
      const int64_t next = static_cast<int64_t>(table[(k0 + bs) / bs]) * bs * kv_stride +
                           static_cast<int64_t>(kvh) * hd;
      const int rows = static_cast<int>(std::min<int64_t>(bs, ctx - k0 - bs));
      for (int j = 0; j < rows; ++j) {
        for (int d = 0; d < hd; d += 16) {
          _mm_prefetch(reinterpret_cast<const char*>(a.k_cache + next + j * kv_stride + d),
                       _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(a.v_cache + next + j * kv_stride + d),
                       _MM_HINT_T0);
        }
      }
    }
    int j = 0;
    for (; j + 8 <= n; j += 8) ScoreKeys<8>(qt, kb + j * kv_stride, kv_stride, hd, st + j * kL);
    for (; j + 4 <= n; j += 4) ScoreKeys<4>(qt, kb + j * kv_stride, kv_stride, hd, st + j * kL);
    for (; j < n; ++j) ScoreKeys<1>(qt, kb + j * kv_stride, kv_stride, hd, st + j * kL);
    // Causal mask (key position > the row's position: -inf, probability exactly 0) where the
    // block reaches past the tile's first position.
    const bool masked = k0 + n - 1 > p0;
    const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __m512 bm = ninf;
    for (j = 0; j < n; ++j) {
      __m512 s = _mm512_loadu_ps(st + j * kL);
      if (masked) {
        const __mmask16 valid =
            _mm512_cmple_epi32_mask(_mm512_set1_epi32(static_cast<int32_t>(k0 + j)), pos);
        s = _mm512_mask_mov_ps(ninf, valid, s);
        _mm512_storeu_ps(st + j * kL, s);
      }
      bm = _mm512_maskz_max_ps(kAll, bm, s);
    }
    const __m512 m_new = _mm512_maskz_max_ps(kAll, m, bm);  // finite: key 0 is valid for every row
    const __m512 corr = Exp(_mm512_sub_ps(m, m_new));       // first block: ~1e-38 x zeros
    __m512 sum = _mm512_setzero_ps();
    for (j = 0; j < n; ++j) {
      const __m512 s = _mm512_loadu_ps(st + j * kL);
      __m512 p = Exp(_mm512_sub_ps(s, m_new));
      if (masked) {
        p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s, ninf, _CMP_NEQ_OQ), p);
      }
      _mm512_storeu_ps(pt + j * kL, p);
      sum = _mm512_add_ps(sum, p);
    }
    l = _mm512_fmadd_ps(l, corr, sum);
    m = m_new;
    for (int d0 = 0; d0 < hd; d0 += 16) AccumulateValues(ot, corr, pt, vb, kv_stride, n, d0);
  }
  const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.f), l);
  for (int d = 0; d < hd; ++d) {
    _mm512_storeu_ps(ot + d * kL, _mm512_mul_ps(_mm512_loadu_ps(ot + d * kL), inv));
  }
  for (int r = 0; r < R; ++r) {
    float* out = a.out + (t0 + r / G) * static_cast<int64_t>(a.nq) * hd +
                 static_cast<int64_t>(kvh * G + r % G) * hd;
    for (int d = 0; d < hd; ++d) out[d] = ot[d * kL + r];
  }
}

}  // namespace engram::attention_internal
