#include "kernels/cpu/linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/dtype.h"
#include "kernels/cpu/cpu_memory.h"
#include "kernels/cpu/linear_fp8.h"
#include "kernels/cpu/linear_micro.h"
#include "kernels/cpu/simd_avx2.h"

namespace engram {
namespace {

using linear_internal::MicroArgs;
using linear_internal::MicroKernels;
using linear_internal::StoreTileRow;

constexpr int kNr = kLinearPanelWidth;  // columns per panel
constexpr int64_t kMcMax = 96;          // rows per work unit (a multiple of every tile height)

// ---- scalar and AVX2 micro-kernels: one panel (np = 1), up to 6 rows

template <int MR, bool kBf16>
void MicroScalar(const MicroArgs& p) {
  float acc[MR][kNr] = {};
  for (int64_t k = 0; k < p.kc; ++k) {
    float bv[kNr];
    if constexpr (kBf16) {
      const uint16_t* w = static_cast<const uint16_t*>(p.b) + k * kNr;
      for (int i = 0; i < 8; ++i) {
        bv[i] = Bf16ToF32(w[2 * i]);
        bv[i + 8] = Bf16ToF32(w[2 * i + 1]);
      }
    } else {
      std::memcpy(bv, static_cast<const float*>(p.b) + k * kNr, sizeof(bv));
    }
    for (int r = 0; r < MR; ++r) {
      const float av = p.a[r * p.lda + k];
      for (int j = 0; j < kNr; ++j) acc[r][j] += av * bv[j];
    }
  }
  for (int r = 0; r < MR; ++r) StoreTileRow(acc[r], p, p.nc, p.bias, p.c + r * p.ldc);
}

// ---- AVX2/FMA micro-kernel

template <bool kBf16>
ENGRAM_AVX2_INLINE void LoadPanelRow(const void* b, int64_t k, __m256& b0, __m256& b1) {
  if constexpr (kBf16) {
    const __m256i w = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(b) + k * kNr));
    b0 = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    b1 = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(-65536)));
  } else {
    const float* f = static_cast<const float*>(b) + k * kNr;
    b0 = _mm256_loadu_ps(f);
    b1 = _mm256_loadu_ps(f + 8);
  }
}

// KU independent accumulator sets hide the FMA latency when MR is small.
template <int MR, int KU, bool kBf16>
ENGRAM_AVX2 void MicroAvx2(const MicroArgs& p) {
  __m256 acc[KU][MR][2];
#pragma GCC unroll 8
  for (int u = 0; u < KU; ++u) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[u][r][0] = acc[u][r][1] = _mm256_setzero_ps();
  }
  const float* a = p.a;
  const int64_t lda = p.lda;
  int64_t k = 0;
  for (; k + KU <= p.kc; k += KU) {
#pragma GCC unroll 8
    for (int u = 0; u < KU; ++u) {
      __m256 b0, b1;
      LoadPanelRow<kBf16>(p.b, k + u, b0, b1);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256 av = _mm256_broadcast_ss(a + r * lda + k + u);
        acc[u][r][0] = _mm256_fmadd_ps(av, b0, acc[u][r][0]);
        acc[u][r][1] = _mm256_fmadd_ps(av, b1, acc[u][r][1]);
      }
    }
  }
  for (; k < p.kc; ++k) {
    __m256 b0, b1;
    LoadPanelRow<kBf16>(p.b, k, b0, b1);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
      acc[0][r][0] = _mm256_fmadd_ps(av, b0, acc[0][r][0]);
      acc[0][r][1] = _mm256_fmadd_ps(av, b1, acc[0][r][1]);
    }
  }
#pragma GCC unroll 8
  for (int u = 1; u < KU; ++u) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[0][r][0] = _mm256_add_ps(acc[0][r][0], acc[u][r][0]);
      acc[0][r][1] = _mm256_add_ps(acc[0][r][1], acc[u][r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* crow = p.c + r * p.ldc;
    __m256 v0 = acc[0][r][0], v1 = acc[0][r][1];
    if (p.nc == kNr) {
      if (p.accumulate) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(crow));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(crow + 8));
      } else if (p.bias != nullptr) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p.bias));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.bias + 8));
      }
      _mm256_storeu_ps(crow, v0);
      _mm256_storeu_ps(crow + 8, v1);
    } else {
      alignas(32) float t[kNr];
      _mm256_store_ps(t, v0);
      _mm256_store_ps(t + 8, v1);
      StoreTileRow(t, p, p.nc, p.bias, crow);
    }
  }
}

template <bool kBf16>
MicroKernels ScalarKernels() {
  MicroKernels k;
  k.max_mr = 6;
  k.max_np = 1;
  k.kc_block = 512;
  k.fn[1][1] = &MicroScalar<1, kBf16>;
  k.fn[1][2] = &MicroScalar<2, kBf16>;
  k.fn[1][3] = &MicroScalar<3, kBf16>;
  k.fn[1][4] = &MicroScalar<4, kBf16>;
  k.fn[1][5] = &MicroScalar<5, kBf16>;
  k.fn[1][6] = &MicroScalar<6, kBf16>;
  return k;
}

template <bool kBf16>
MicroKernels Avx2Kernels() {
  MicroKernels k;
  k.max_mr = 6;
  k.max_np = 1;
  k.kc_block = 512;
  k.fn[1][1] = &MicroAvx2<1, 4, kBf16>;
  k.fn[1][2] = &MicroAvx2<2, 2, kBf16>;
  k.fn[1][3] = &MicroAvx2<3, 1, kBf16>;
  k.fn[1][4] = &MicroAvx2<4, 1, kBf16>;
  k.fn[1][5] = &MicroAvx2<5, 1, kBf16>;
  k.fn[1][6] = &MicroAvx2<6, 1, kBf16>;
  return k;
}

MicroKernels KernelsFor(CpuIsa isa, bool bf16) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return linear_internal::Avx512MicroKernels(bf16);
    case CpuIsa::kAvx2:
      return linear_internal::Avx2MicroKernels(bf16);
    default:
      return linear_internal::ScalarMicroKernels(bf16);
  }
}

// Reads element k of row-major weight row `row` as F32.
inline float WeightAt(DType dtype, const void* row, int64_t k) {
  switch (dtype) {
    case DType::kBF16:
      return Bf16ToF32(static_cast<const uint16_t*>(row)[k]);
    case DType::kF16:
      return F16ToF32(static_cast<const uint16_t*>(row)[k]);
    default:
      return static_cast<const float*>(row)[k];
  }
}

// Packs rows [n0, n0 + nc) x columns [k0, k0 + kl) of a row-major weight into an F32 panel
// [kl][16] (missing rows zero).
void PackPanelF32(const Tensor& w, int64_t n0, int nc, int64_t k0, int64_t kl, float* dst) {
  const int64_t K = w.dim(1);
  const size_t es = DTypeSize(w.dtype);
  for (int j = 0; j < kNr; ++j) {
    if (j >= nc) {
      for (int64_t k = 0; k < kl; ++k) dst[k * kNr + j] = 0.f;
      continue;
    }
    const char* row = static_cast<const char*>(w.data) + ((n0 + j) * K + k0) * es;
    if (w.dtype == DType::kF32) {
      const float* r = reinterpret_cast<const float*>(row);
      for (int64_t k = 0; k < kl; ++k) dst[k * kNr + j] = r[k];
    } else {
      for (int64_t k = 0; k < kl; ++k) dst[k * kNr + j] = WeightAt(w.dtype, row, k);
    }
  }
}

// ---- row-major weights at small M: dot products along contiguous weight rows

constexpr int64_t kRowMajorGemvMaxM = 8;
constexpr int64_t kRowsPerTask = 64;

// out[m, n] = x[m] · w[n] (+ bias[n]) for n in [n0, n1), every m < M; scalar.
void RowMajorGemvScalar(const float* x, int64_t M, int64_t K, const Tensor& w, const float* bias,
                        int64_t n0, int64_t n1, float* out, int64_t N) {
  const size_t es = DTypeSize(w.dtype);
  for (int64_t n = n0; n < n1; ++n) {
    const char* row = static_cast<const char*>(w.data) + n * K * es;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      float acc = 0.f;
      for (int64_t k = 0; k < K; ++k) acc += xm[k] * WeightAt(w.dtype, row, k);
      out[m * N + n] = acc + (bias != nullptr ? bias[n] : 0.f);
    }
  }
}

template <DType kType>
ENGRAM_AVX2_INLINE __m256 LoadRow8(const void* row, int64_t k) {
  const uint16_t* h = static_cast<const uint16_t*>(row) + k;
  if constexpr (kType == DType::kBF16) {
    return avx2::LoadBf16x8(h);
  } else if constexpr (kType == DType::kF16) {
    return avx2::LoadF16x8(h);
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(row) + k);
  }
}

// Four weight rows at a time share each load of x.
template <DType kType>
ENGRAM_AVX2 void RowMajorGemvAvx2(const float* x, int64_t M, int64_t K, const Tensor& w,
                                  const float* bias, int64_t n0, int64_t n1, float* out,
                                  int64_t N) {
  const size_t es = DTypeSize(kType);
  const int64_t k8 = K & ~int64_t{7};
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const char* r0 = static_cast<const char*>(w.data) + n * K * es;
    const char* r1 = r0 + K * es;
    const char* r2 = r1 + K * es;
    const char* r3 = r2 + K * es;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int64_t k = 0; k < k8; k += 8) {
        const __m256 xv = _mm256_loadu_ps(xm + k);
        a0 = _mm256_fmadd_ps(xv, LoadRow8<kType>(r0, k), a0);
        a1 = _mm256_fmadd_ps(xv, LoadRow8<kType>(r1, k), a1);
        a2 = _mm256_fmadd_ps(xv, LoadRow8<kType>(r2, k), a2);
        a3 = _mm256_fmadd_ps(xv, LoadRow8<kType>(r3, k), a3);
      }
      const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
      alignas(16) float sum[4];
      _mm_store_ps(sum, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
      const char* rows[4] = {r0, r1, r2, r3};
      for (int r = 0; r < 4; ++r) {
        for (int64_t k = k8; k < K; ++k) sum[r] += xm[k] * WeightAt(kType, rows[r], k);
        out[m * N + n + r] = sum[r] + (bias != nullptr ? bias[n + r] : 0.f);
      }
    }
  }
  if (n < n1) RowMajorGemvScalar(x, M, K, w, bias, n, n1, out, N);
}

void RowMajorGemv(CpuIsa isa, ThreadPool& pool, const float* x, int64_t M, const Tensor& w,
                  const float* bias, float* out) {
  const int64_t N = w.dim(0), K = w.dim(1);
  pool.ParallelFor((N + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task, int) {
    const int64_t n0 = task * kRowsPerTask, n1 = std::min(N, n0 + kRowsPerTask);
    if (!UsesAvx2(isa)) {
      RowMajorGemvScalar(x, M, K, w, bias, n0, n1, out, N);
    } else if (w.dtype == DType::kBF16) {
      RowMajorGemvAvx2<DType::kBF16>(x, M, K, w, bias, n0, n1, out, N);
    } else if (w.dtype == DType::kF16) {
      RowMajorGemvAvx2<DType::kF16>(x, M, K, w, bias, n0, n1, out, N);
    } else {
      RowMajorGemvAvx2<DType::kF32>(x, M, K, w, bias, n0, n1, out, N);
    }
  });
}

}  // namespace

size_t PackedLinearBytes(DType src_dtype, int64_t n, int64_t k) {
  const int64_t panels = (n + kNr - 1) / kNr;
  const size_t es = src_dtype == DType::kBF16 ? 2 : 4;
  return static_cast<size_t>(panels * k * kNr) * es;
}

Result<Tensor> PackLinearWeight(const Tensor& host, ThreadPool& pool) {
  if (host.shape.size() != 2) {
    return InvalidArgument("PackLinearWeight: weight has shape {}, expected [N, K]",
                           host.ShapeString());
  }
  if (host.dtype != DType::kF32 && host.dtype != DType::kBF16 && host.dtype != DType::kF16) {
    return InvalidArgument("PackLinearWeight: weight dtype {} (expected F32, F16 or BF16)",
                           DTypeName(host.dtype));
  }
  const int64_t N = host.dim(0), K = host.dim(1);
  const bool bf16 = host.dtype == DType::kBF16;
  const size_t bytes = PackedLinearBytes(host.dtype, N, K);
  std::shared_ptr<void> mem = AllocAligned(bytes, /*zero=*/false);
  if (mem == nullptr) {
    return ResourceExhausted("PackLinearWeight: cannot allocate {} bytes for a {} weight", bytes,
                             host.ShapeString());
  }
  const int64_t panels = (N + kNr - 1) / kNr;
  const size_t es = DTypeSize(host.dtype);
  pool.ParallelFor(panels, [&](int64_t p, int) {
    const int64_t n0 = p * kNr;
    if (bf16) {
      uint16_t* dst = static_cast<uint16_t*>(mem.get()) + p * K * kNr;
      for (int j = 0; j < kNr; ++j) {
        const int slot = 2 * (j % 8) + j / 8;
        if (n0 + j >= N) {
          for (int64_t k = 0; k < K; ++k) dst[k * kNr + slot] = 0;
          continue;
        }
        const uint16_t* row = static_cast<const uint16_t*>(host.data) + (n0 + j) * K;
        for (int64_t k = 0; k < K; ++k) dst[k * kNr + slot] = row[k];
      }
    } else {
      float* dst = static_cast<float*>(mem.get()) + p * K * kNr;
      for (int j = 0; j < kNr; ++j) {
        if (n0 + j >= N) {
          for (int64_t k = 0; k < K; ++k) dst[k * kNr + j] = 0.f;
          continue;
        }
        const char* row = static_cast<const char*>(host.data) + (n0 + j) * K * es;
        for (int64_t k = 0; k < K; ++k) dst[k * kNr + j] = WeightAt(host.dtype, row, k);
      }
    }
  });
  return OwningCpuTensor(std::move(mem), bf16 ? DType::kBF16 : DType::kF32, Layout::kBackendPacked,
                         {N, K});
}

void LinearForward(CpuIsa isa, ThreadPool& pool, const float* x, int64_t M, const Tensor& w,
                   const float* bias, float* out) {
  const int64_t N = w.dim(0), K = w.dim(1);
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < N; ++n) out[m * N + n] = bias != nullptr ? bias[n] : 0.f;
    }
    return;
  }
  const bool packed = w.layout == Layout::kBackendPacked;
  const bool fp8 = w.layout == Layout::kFp8Panels;
  if (fp8 && M <= kFp8DirectMaxM && UsesAvx2(isa)) {
    linear_fp8_internal::LinearFp8Direct(isa, pool, x, M, w, bias, out);
    return;
  }
  if (!packed && !fp8 && M <= kRowMajorGemvMaxM) {
    RowMajorGemv(isa, pool, x, M, w, bias, out);
    return;
  }
  const MicroKernels kern = KernelsFor(isa, packed && w.dtype == DType::kBF16);
  const int max_mr = kern.max_mr, max_np = kern.max_np;

  const int64_t panels = (N + kNr - 1) / kNr;
  // Small M streams each weight panel once over all of K; larger M blocks K so the rows of
  // x in use stay in L2 while a panel block stays in L1.
  const int64_t kc = (M <= max_mr && packed) ? K : std::min<int64_t>(K, kern.kc_block);
  const int64_t m_chunks = (M + kMcMax - 1) / kMcMax;
  const int64_t mc = ((M + m_chunks - 1) / m_chunks + max_mr - 1) / max_mr * max_mr;
  const int64_t threads = pool.num_threads();
  int64_t per_group = std::clamp<int64_t>(panels * m_chunks / (4 * threads), 1, 8);
  per_group = (per_group + max_np - 1) / max_np * max_np;  // whole tiles per group
  const int64_t groups = (panels + per_group - 1) / per_group;
  const size_t es = packed ? DTypeSize(w.dtype) : 4;
  const int64_t kc_scratch = std::min<int64_t>(K, kern.kc_block);

  pool.ParallelFor(groups * m_chunks, [&](int64_t unit, int) {
    const int64_t g = unit / m_chunks;
    const int64_t m0 = (unit % m_chunks) * mc, m1 = std::min(M, m0 + mc);
    const int64_t p0 = g * per_group, p1 = std::min(panels, p0 + per_group);
    // F32 panels of row-major weights, packed here per k-block.
    std::vector<float> scratch(packed ? 0 : static_cast<size_t>(max_np * kc_scratch * kNr));
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
      const int64_t kl = std::min(kc, K - k0);
      for (int64_t p = p0; p < p1; p += max_np) {
        const int np = static_cast<int>(std::min<int64_t>(max_np, p1 - p));
        const int64_t n0 = p * kNr;
        const int nc = static_cast<int>(std::min<int64_t>(np * kNr, N - n0));
        const void* b;
        int64_t b_stride;
        if (packed) {
          b = static_cast<const char*>(w.data) + (p * K + k0) * kNr * es;
          b_stride = K * kNr;
        } else if (fp8) {
          for (int j = 0; j < np; ++j) {
            linear_fp8_internal::PanelToF32(isa, w, p + j, k0, kl, scratch.data() + j * kl * kNr);
          }
          b = scratch.data();
          b_stride = kl * kNr;
        } else {
          for (int j = 0; j < np; ++j) {
            const int cols = static_cast<int>(std::clamp<int64_t>(N - n0 - j * kNr, 0, kNr));
            PackPanelF32(w, n0 + j * kNr, cols, k0, kl, scratch.data() + j * kl * kNr);
          }
          b = scratch.data();
          b_stride = kl * kNr;
        }
        for (int64_t m = m0; m < m1; m += max_mr) {
          const int mr = static_cast<int>(std::min<int64_t>(max_mr, m1 - m));
          const MicroArgs args{kl,       x + m * K + k0,
                               K,        b,
                               b_stride, out + m * N + n0,
                               N,        nc,
                               k0 > 0,   bias != nullptr && k0 == 0 ? bias + n0 : nullptr};
          kern.fn[np][mr](args);
        }
      }
    }
  });
}

namespace linear_internal {

MicroKernels ScalarMicroKernels(bool bf16) {
  return bf16 ? ScalarKernels<true>() : ScalarKernels<false>();
}

MicroKernels Avx2MicroKernels(bool bf16) {
  return bf16 ? Avx2Kernels<true>() : Avx2Kernels<false>();
}

}  // namespace linear_internal

}  // namespace engram
