#include "kernels/cpu/engram_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/simd_avx2.h"

namespace engram {
namespace {

constexpr int64_t kRowGrainElements = 16384;
constexpr int kMaxKernel = 16;  // conv taps handled per token (validated by the backend)

// ---- gate: the three sums a token's gate needs

struct GateSums {
  float kk = 0.f, hh = 0.f, dot = 0.f;  // sum k^2, sum h^2, sum k*wk*h*wq
};

GateSums GateSumsScalar(const float* k, const float* h, const float* wk, const float* wq,
                        int64_t d) {
  GateSums s;
  for (int64_t c = 0; c < d; ++c) {
    s.kk += k[c] * k[c];
    s.hh += h[c] * h[c];
    s.dot += (k[c] * wk[c]) * (h[c] * wq[c]);
  }
  return s;
}

ENGRAM_AVX2 GateSums GateSumsAvx2(const float* k, const float* h, const float* wk, const float* wq,
                                  int64_t d) {
  __m256 kk = _mm256_setzero_ps(), hh = _mm256_setzero_ps(), dot = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= d; c += 8) {
    const __m256 kv = _mm256_loadu_ps(k + c), hv = _mm256_loadu_ps(h + c);
    kk = _mm256_fmadd_ps(kv, kv, kk);
    hh = _mm256_fmadd_ps(hv, hv, hh);
    dot = _mm256_fmadd_ps(_mm256_mul_ps(kv, _mm256_loadu_ps(wk + c)),
                          _mm256_mul_ps(hv, _mm256_loadu_ps(wq + c)), dot);
  }
  GateSums s{avx2::HorizontalSum(kk), avx2::HorizontalSum(hh), avx2::HorizontalSum(dot)};
  for (; c < d; ++c) {
    s.kk += k[c] * k[c];
    s.hh += h[c] * h[c];
    s.dot += (k[c] * wk[c]) * (h[c] * wq[c]);
  }
  return s;
}

// Trivially vectorized by the compiler; the same code serves every ISA.
void ScaleInPlace(float* v, float a, int64_t d) {
  for (int64_t c = 0; c < d; ++c) v[c] *= a;
}

// ---- conv: out[c] = h[c] + v[c] + silu(sum_i w[i][c] * src[i][c]) (null sources are zero)

void ConvRowScalar(const float* const* src, const float* w, int taps, int64_t d, const float* v,
                   float* h) {
  for (int64_t c = 0; c < d; ++c) {
    float y = 0.f;
    for (int i = 0; i < taps; ++i) {
      if (src[i] != nullptr) y += w[i * d + c] * src[i][c];
    }
    h[c] += v[c] + y / (1.f + std::exp(-y));
  }
}

ENGRAM_AVX2 void ConvRowAvx2(const float* const* src, const float* w, int taps, int64_t d,
                             const float* v, float* h) {
  int64_t c = 0;
  for (; c + 8 <= d; c += 8) {
    __m256 y = _mm256_setzero_ps();
    for (int i = 0; i < taps; ++i) {
      if (src[i] != nullptr) {
        y = _mm256_fmadd_ps(_mm256_loadu_ps(w + i * d + c), _mm256_loadu_ps(src[i] + c), y);
      }
    }
    const __m256 r =
        _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(h + c), _mm256_loadu_ps(v + c)), avx2::Silu(y));
    _mm256_storeu_ps(h + c, r);
  }
  for (; c < d; ++c) {
    float y = 0.f;
    for (int i = 0; i < taps; ++i) {
      if (src[i] != nullptr) y += w[i * d + c] * src[i][c];
    }
    h[c] += v[c] + y / (1.f + std::exp(-y));
  }
}

}  // namespace

void EngramGateRows(CpuIsa isa, ThreadPool& pool, const float* k, const float* h,
                    const float* w_key, const float* w_query, float eps, int64_t tokens, int64_t d,
                    float* v) {
  const int64_t grain = std::max<int64_t>(1, kRowGrainElements / std::max<int64_t>(d, 1));
  const float inv_sqrt_d = 1.f / std::sqrt(static_cast<float>(d));
  ParallelRange(pool, tokens, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      const float* kt = k + t * d;
      const float* ht = h + t * d;
      const GateSums s = UsesAvx2(isa) ? GateSumsAvx2(kt, ht, w_key, w_query, d)
                                       : GateSumsScalar(kt, ht, w_key, w_query, d);
      const float rk = 1.f / std::sqrt(s.kk / static_cast<float>(d) + eps);
      const float rh = 1.f / std::sqrt(s.hh / static_cast<float>(d) + eps);
      float g = s.dot * rk * rh * inv_sqrt_d;
      const float mag = std::sqrt(std::max(std::fabs(g), 1e-6f));
      g = g > 0.f ? mag : (g < 0.f ? -mag : 0.f);
      ScaleInPlace(v + t * d, 1.f / (1.f + std::exp(-g)), d);
    }
  });
}

void EngramShortConv(CpuIsa isa, ThreadPool& pool, const ShortConvArgs& a) {
  const int K = a.kernel_size;
  const int64_t d = a.d;
  const int64_t W = static_cast<int64_t>(K - 1) * a.dilation;  // state ring length
  // Conv weights tap-major, so a tap's weights are contiguous over channels.
  for (int64_t c = 0; c < d; ++c) {
    for (int i = 0; i < K; ++i) a.w_scratch[i * d + c] = a.conv_w[c * K + i];
  }
  // 1. x = RmsNorm(v) * norm_w for this step's tokens.
  RmsNormRows(isa, pool, a.v, a.norm_w, a.eps, a.tokens, d, a.x_scratch);
  // 2. Every token's conv reads this step's x or the (not yet updated) state.
  const int64_t grain = std::max<int64_t>(1, kRowGrainElements / std::max<int64_t>(d * K, 1));
  ParallelRange(pool, a.tokens, grain, [&](int64_t begin, int64_t end, int) {
    const float* src[kMaxKernel];
    for (int64_t t = begin; t < end; ++t) {
      const int s = a.seq_of_token[t];
      const int64_t first_tok = a.seq_token_start[s];
      const int64_t first_pos = a.positions[first_tok];
      const int64_t pos = a.positions[t];
      const float* ring = a.state + static_cast<int64_t>(a.state_slots[s]) * W * d;
      for (int i = 0; i < K; ++i) {
        const int64_t q = pos - static_cast<int64_t>(K - 1 - i) * a.dilation;
        if (q >= first_pos) {
          src[i] = a.x_scratch + (first_tok + (q - first_pos)) * d;
        } else if (q >= 0) {
          src[i] = ring + (q % W) * d;
        } else {
          src[i] = nullptr;
        }
      }
      if (UsesAvx2(isa)) {
        ConvRowAvx2(src, a.w_scratch, K, d, a.v + t * d, a.h + t * d);
      } else {
        ConvRowScalar(src, a.w_scratch, K, d, a.v + t * d, a.h + t * d);
      }
    }
  });
  // 3. The ring keeps x of each sequence's last W positions.
  if (W == 0) return;
  for (int s = 0; s < a.num_seqs; ++s) {
    const int64_t b = a.seq_token_start[s], e = a.seq_token_start[s + 1];
    float* ring = a.state + static_cast<int64_t>(a.state_slots[s]) * W * d;
    for (int64_t t = std::max(b, e - W); t < e; ++t) {
      std::memcpy(ring + (a.positions[t] % W) * d, a.x_scratch + t * d, sizeof(float) * d);
    }
  }
}

}  // namespace engram
