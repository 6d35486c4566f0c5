#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/gather_loop.h"
#include "kernels/cpu/simd_avx2.h"

namespace engram {
namespace {

// Work below this many elements per chunk is not worth waking another thread for.
constexpr int64_t kElementGrain = 16384;

// ---- sum of squares

float SumOfSquaresScalar(const float* x, int64_t n) {
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) acc[j] += x[i + j] * x[i + j];
  }
  for (; i < n; ++i) acc[0] += x[i] * x[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

ENGRAM_AVX2 float SumOfSquaresAvx2(const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    const __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
    a2 = _mm256_fmadd_ps(v2, v2, a2);
    a3 = _mm256_fmadd_ps(v3, v3, a3);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(v, v, a0);
  }
  if (i < n) {
    const __m256 v = _mm256_maskload_ps(x + i, avx2::TailMask(static_cast<int>(n - i)));
    a1 = _mm256_fmadd_ps(v, v, a1);
  }
  return avx2::HorizontalSum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

// ---- scale rows: out = x * s * w

void ScaleMulScalar(const float* x, float s, const float* w, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s * w[i];
}

ENGRAM_AVX2 void ScaleMulAvx2(const float* x, float s, const float* w, int64_t n, float* out) {
  const __m256 sv = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(
        out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _mm256_loadu_ps(w + i)));
  }
  for (; i < n; ++i) out[i] = x[i] * s * w[i];
}

// ---- add

void AddScalar(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

ENGRAM_AVX2 void AddAvx2(float* x, const float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) x[i] += y[i];
}

// ---- swiglu

void SwiGluRowScalar(const float* g, const float* u, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

ENGRAM_AVX2 void SwiGluRowAvx2(const float* g, const float* u, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i,
                     _mm256_mul_ps(avx2::Silu(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) out[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

// ---- rope

void RotateScalar(float* x, const float* cs, const float* sn, int half) {
  for (int i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cs[i] - x2 * sn[i];
    x[i + half] = x2 * cs[i] + x1 * sn[i];
  }
}

ENGRAM_AVX2 void RotateAvx2(float* x, const float* cs, const float* sn, int half) {
  int i = 0;
  for (; i + 8 <= half; i += 8) {
    const __m256 x1 = _mm256_loadu_ps(x + i), x2 = _mm256_loadu_ps(x + i + half);
    const __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
    _mm256_storeu_ps(x + i, _mm256_fmsub_ps(x1, c, _mm256_mul_ps(x2, s)));
    _mm256_storeu_ps(x + i + half, _mm256_fmadd_ps(x2, c, _mm256_mul_ps(x1, s)));
  }
  for (; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cs[i] - x2 * sn[i];
    x[i + half] = x2 * cs[i] + x1 * sn[i];
  }
}

// ---- row conversion

ENGRAM_AVX2 void Bf16ToF32Avx2(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, avx2::LoadBf16x8(s + i));
  for (; i < n; ++i) d[i] = Bf16ToF32(s[i]);
}

ENGRAM_AVX2 void F16ToF32Avx2(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, avx2::LoadF16x8(s + i));
  for (; i < n; ++i) d[i] = F16ToF32(s[i]);
}

template <typename Index>
void GatherImpl(CpuIsa isa, ThreadPool& pool, const void* table, DType dtype, int64_t d,
                const Index* index, int64_t count, float* out) {
  GatherRowLoop(pool, static_cast<const uint8_t*>(table), static_cast<size_t>(d) * DTypeSize(dtype),
                index, count, d, out,
                [&](const uint8_t* row, float* dst) { RowToF32(isa, dtype, row, dst, d); });
}

}  // namespace

float SumOfSquares(CpuIsa isa, const float* x, int64_t n) {
  return UsesAvx2(isa) ? SumOfSquaresAvx2(x, n) : SumOfSquaresScalar(x, n);
}

void RmsNormRows(CpuIsa isa, ThreadPool& pool, const float* x, const float* w, float eps,
                 int64_t rows, int64_t d, float* out) {
  const int64_t grain = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(d, 1));
  ParallelRange(pool, rows, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * d;
      const float ss = SumOfSquares(isa, xr, d);
      const float s = 1.f / std::sqrt(ss / static_cast<float>(d) + eps);
      if (UsesAvx2(isa)) {
        ScaleMulAvx2(xr, s, w, d, out + r * d);
      } else {
        ScaleMulScalar(xr, s, w, d, out + r * d);
      }
    }
  });
}

void AddInPlace(CpuIsa isa, ThreadPool& pool, float* x, const float* y, int64_t n) {
  ParallelRange(pool, n, 4 * kElementGrain, [&](int64_t begin, int64_t end, int) {
    if (UsesAvx2(isa)) {
      AddAvx2(x + begin, y + begin, end - begin);
    } else {
      AddScalar(x + begin, y + begin, end - begin);
    }
  });
}

void SwiGluRows(CpuIsa isa, ThreadPool& pool, const float* gate_up, int64_t rows, int64_t inter,
                float* out) {
  const int64_t grain = std::max<int64_t>(1, kElementGrain / 4 / std::max<int64_t>(inter, 1));
  ParallelRange(pool, rows, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      const float* g = gate_up + t * 2 * inter;
      if (UsesAvx2(isa)) {
        SwiGluRowAvx2(g, g + inter, inter, out + t * inter);
      } else {
        SwiGluRowScalar(g, g + inter, inter, out + t * inter);
      }
    }
  });
}

void RopeInPlace(CpuIsa isa, ThreadPool& pool, float* qkv, int64_t tokens, const int32_t* positions,
                 int nq, int nkv, int hd, const float* inv_freq) {
  const int half = hd / 2;
  const int64_t row = static_cast<int64_t>(nq + 2 * nkv) * hd;
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(row, 1));
  ParallelRange(pool, tokens, grain, [&](int64_t begin, int64_t end, int) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = begin; t < end; ++t) {
      const float pos = static_cast<float>(positions[t]);
      for (int i = 0; i < half; ++i) {
        const float angle = pos * inv_freq[i];
        cs[i] = std::cos(angle);
        sn[i] = std::sin(angle);
      }
      float* x = qkv + t * row;
      for (int h = 0; h < nq + nkv; ++h) {
        if (UsesAvx2(isa)) {
          RotateAvx2(x + h * hd, cs.data(), sn.data(), half);
        } else {
          RotateScalar(x + h * hd, cs.data(), sn.data(), half);
        }
      }
    }
  });
}

void RowToF32(CpuIsa isa, DType dtype, const void* src, float* dst, int64_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kBF16:
      if (UsesAvx2(isa)) {
        Bf16ToF32Avx2(static_cast<const uint16_t*>(src), dst, n);
      } else {
        ConvertToF32(dtype, src, dst, static_cast<size_t>(n));
      }
      return;
    case DType::kF16:
      if (UsesAvx2(isa)) {
        F16ToF32Avx2(static_cast<const uint16_t*>(src), dst, n);
      } else {
        ConvertToF32(dtype, src, dst, static_cast<size_t>(n));
      }
      return;
    default:
      ConvertToF32(dtype, src, dst, static_cast<size_t>(n));
  }
}

void GatherRowsToF32(CpuIsa isa, ThreadPool& pool, const void* table, DType dtype, int64_t d,
                     const int32_t* index, int64_t count, float* out) {
  GatherImpl(isa, pool, table, dtype, d, index, count, out);
}

void GatherRowsToF32(CpuIsa isa, ThreadPool& pool, const void* table, DType dtype, int64_t d,
                     const int64_t* index, int64_t count, float* out) {
  GatherImpl(isa, pool, table, dtype, d, index, count, out);
}

}  // namespace engram
