#include "kernels/cpu/linear_fp8.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>

#include "common/dtype.h"
#include "kernels/cpu/cpu_memory.h"
#include "kernels/cpu/simd_avx2.h"

#define ENGRAM_FP8_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define ENGRAM_FP8_AVX512_INLINE \
  __attribute__((target("avx512f,avx2,fma,f16c"), always_inline)) inline

namespace engram {
namespace {

constexpr int64_t kNr = 16;  // columns per panel

int64_t PaddedK(int64_t k) { return (k + kFp8Group - 1) / kFp8Group * kFp8Group; }
int64_t Panels(int64_t n) { return (n + kNr - 1) / kNr; }

const uint8_t* Codes(const Tensor& w, int64_t p) {
  return w.ptr<uint8_t>() + static_cast<size_t>(p * PaddedK(w.dim(1)) * kNr);
}
const float* Factors(const Tensor& w, int64_t p) {
  const int64_t groups = PaddedK(w.dim(1)) / kFp8Group;
  return reinterpret_cast<const float*>(w.ptr<uint8_t>() + Fp8FactorOffset(w.dim(0), w.dim(1))) +
         p * groups;
}

// e4m3(c) / 2^8, exact (the portable widening; the SIMD paths compute the same values).
const float* E4M3Over256() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = E4M3ToF32(static_cast<uint8_t>(c)) * (1.f / 256);
    return t;
  }();
  return table.data();
}

// ---- widening 16 codes (one panel row): S.EEEE.MMM -> the F16 S.0EEEE.MMM0000000, which is
// e4m3 / 2^8 exactly, subnormals included (codes are checked not to be NaN at packing).

ENGRAM_AVX2_INLINE __m256i CodesToF16(const uint8_t* p) {
  const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_slli_epi16(x, 7), _mm256_set1_epi16(-0x4080));
}

ENGRAM_FP8_AVX512_INLINE __m512 RowAvx512(const uint8_t* p) {
  return _mm512_maskz_cvtph_ps(0xffff, CodesToF16(p));
}

void PanelToF32Scalar(const uint8_t* codes, const float* factors, int64_t k0, int64_t kl,
                      float* dst) {
  const float* lut = E4M3Over256();
  for (int64_t k = 0; k < kl; ++k) {
    const float f = factors[(k0 + k) / kFp8Group];
    const uint8_t* c = codes + (k0 + k) * kNr;
    for (int j = 0; j < kNr; ++j) dst[k * kNr + j] = lut[c[j]] * f;
  }
}

ENGRAM_AVX2 void PanelToF32Avx2(const uint8_t* codes, const float* factors, int64_t k0, int64_t kl,
                                float* dst) {
  for (int64_t k = 0; k < kl; ++k) {
    const __m256 f = _mm256_set1_ps(factors[(k0 + k) / kFp8Group]);
    const __m256i h = CodesToF16(codes + (k0 + k) * kNr);
    _mm256_storeu_ps(dst + k * kNr, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), f));
    _mm256_storeu_ps(dst + k * kNr + 8,
                     _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), f));
  }
}

ENGRAM_FP8_AVX512 void PanelToF32Avx512(const uint8_t* codes, const float* factors, int64_t k0,
                                        int64_t kl, float* dst) {
  for (int64_t k = 0; k < kl; ++k) {
    const __m512 f = _mm512_set1_ps(factors[(k0 + k) / kFp8Group]);
    _mm512_storeu_ps(dst + k * kNr, _mm512_mul_ps(RowAvx512(codes + (k0 + k) * kNr), f));
  }
}

// ---- direct kernels: rows [0, MR) of x against one panel over all of K. Per group of 32
// inputs the unscaled products accumulate in KU independent chains, then the group's sum is
// scaled by its factor into the result.

template <int MR, int KU>
ENGRAM_FP8_AVX512 void DirectAvx512(const float* x, int64_t K, const uint8_t* codes,
                                    const float* factors, float* out, int64_t ldo, int nc,
                                    const float* bias) {
  __m512 acc[MR];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
  const int64_t groups = PaddedK(K) / kFp8Group;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = g * kFp8Group, kl = std::min(kFp8Group, K - k0);
    __m512 ga[KU][MR];
#pragma GCC unroll 4
    for (int u = 0; u < KU; ++u) {
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) ga[u][r] = _mm512_setzero_ps();
    }
    const uint8_t* c = codes + k0 * kNr;
    const float* xa = x + k0;
    int64_t k = 0;
    for (; k + KU <= kl; k += KU) {
#pragma GCC unroll 4
      for (int u = 0; u < KU; ++u) {
        const __m512 w = RowAvx512(c + (k + u) * kNr);
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) {
          ga[u][r] = _mm512_fmadd_ps(_mm512_set1_ps(xa[r * K + k + u]), w, ga[u][r]);
        }
      }
    }
    for (; k < kl; ++k) {
      const __m512 w = RowAvx512(c + k * kNr);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        ga[0][r] = _mm512_fmadd_ps(_mm512_set1_ps(xa[r * K + k]), w, ga[0][r]);
      }
    }
    const __m512 f = _mm512_set1_ps(factors[g]);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      __m512 s = ga[0][r];
#pragma GCC unroll 4
      for (int u = 1; u < KU; ++u) s = _mm512_add_ps(s, ga[u][r]);
      acc[r] = _mm512_fmadd_ps(s, f, acc[r]);
    }
  }
  const __mmask16 mask = static_cast<__mmask16>((1u << nc) - 1);
  const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(out + r * ldo, mask, _mm512_add_ps(acc[r], b));
}

template <int MR, int KU>
ENGRAM_AVX2 void DirectAvx2(const float* x, int64_t K, const uint8_t* codes, const float* factors,
                            float* out, int64_t ldo, int nc, const float* bias) {
  __m256 acc[MR][2];
#pragma GCC unroll 2
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const int64_t groups = PaddedK(K) / kFp8Group;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = g * kFp8Group, kl = std::min(kFp8Group, K - k0);
    __m256 ga[KU][MR][2];
#pragma GCC unroll 2
    for (int u = 0; u < KU; ++u) {
#pragma GCC unroll 2
      for (int r = 0; r < MR; ++r) ga[u][r][0] = ga[u][r][1] = _mm256_setzero_ps();
    }
    const uint8_t* c = codes + k0 * kNr;
    const float* xa = x + k0;
    for (int64_t k = 0; k < kl; k += KU) {
#pragma GCC unroll 2
      for (int u = 0; u < KU; ++u) {
        if (k + u >= kl) break;
        const __m256i h = CodesToF16(c + (k + u) * kNr);
        const __m256 w0 = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
        const __m256 w1 = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
#pragma GCC unroll 2
        for (int r = 0; r < MR; ++r) {
          const __m256 a = _mm256_broadcast_ss(xa + r * K + k + u);
          ga[u][r][0] = _mm256_fmadd_ps(a, w0, ga[u][r][0]);
          ga[u][r][1] = _mm256_fmadd_ps(a, w1, ga[u][r][1]);
        }
      }
    }
    const __m256 f = _mm256_set1_ps(factors[g]);
#pragma GCC unroll 2
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m256 s = ga[0][r][h];
#pragma GCC unroll 2
        for (int u = 1; u < KU; ++u) s = _mm256_add_ps(s, ga[u][r][h]);
        acc[r][h] = _mm256_fmadd_ps(s, f, acc[r][h]);
      }
    }
  }
#pragma GCC unroll 2
  for (int r = 0; r < MR; ++r) {
    alignas(32) float t[kNr];
    _mm256_store_ps(t, acc[r][0]);
    _mm256_store_ps(t + 8, acc[r][1]);
    float* o = out + r * ldo;
    for (int j = 0; j < nc; ++j) o[j] = t[j] + (bias != nullptr ? bias[j] : 0.f);
  }
}

using DirectFn = void (*)(const float*, int64_t, const uint8_t*, const float*, float*, int64_t, int,
                          const float*);

// An ISA's direct kernels: fn[mr] for 1 <= mr <= max_mr.
struct DirectKernels {
  int max_mr;
  const DirectFn* fn;
};

DirectKernels DirectFor(CpuIsa isa) {
  static constexpr DirectFn kAvx512[] = {nullptr, &DirectAvx512<1, 4>, &DirectAvx512<2, 4>,
                                         &DirectAvx512<3, 2>, &DirectAvx512<4, 2>};
  static constexpr DirectFn kAvx2[] = {nullptr, &DirectAvx2<1, 2>, &DirectAvx2<2, 2>};
  return isa == CpuIsa::kAvx512 ? DirectKernels{4, kAvx512} : DirectKernels{2, kAvx2};
}

}  // namespace

size_t Fp8FactorOffset(int64_t n, int64_t k) {
  const size_t codes = static_cast<size_t>(Panels(n) * PaddedK(k) * kNr);
  return (codes + 63) / 64 * 64;
}

size_t Fp8LinearBytes(int64_t n, int64_t k) {
  return Fp8FactorOffset(n, k) +
         static_cast<size_t>(Panels(n) * (PaddedK(k) / kFp8Group)) * sizeof(float);
}

Result<Tensor> PackFp8LinearWeight(const std::vector<LinearSource>& parts, ThreadPool& pool) {
  if (parts.empty()) return InvalidArgument("PackFp8LinearWeight: no parts");
  const int64_t K = parts[0].w.shape.size() == 2 ? parts[0].w.dim(1) : 0;
  int64_t N = 0;
  std::vector<std::vector<float>> scales(parts.size());
  std::vector<int64_t> first_row(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    const LinearSource& p = parts[i];
    if (!p.quantized() || p.w.dtype != DType::kF8E4M3 || p.w.shape.size() != 2 || p.w.dim(1) != K ||
        K <= 0) {
      return InvalidArgument(
          "{}: expected an F8_E4M3 [N, {}] weight with its scale_inv, found {} {}", p.name, K,
          DTypeName(p.w.dtype), p.w.ShapeString());
    }
    if (p.block_n % kNr != 0 || p.block_k % kFp8Group != 0) {
      return InvalidArgument(
          "{}: FP8 weight_block_size [{}, {}] cannot run on the CPU backend's FP8 kernels: they "
          "need block rows a multiple of {} and block columns a multiple of {} (e.g. [128, "
          "128]); load with weights bf16 or int8 to convert it",
          p.name, p.block_n, p.block_k, kNr, kFp8Group);
    }
    if (i + 1 < parts.size() && p.w.dim(0) % kNr != 0) {
      return InvalidArgument(
          "{}: {} rows, not a multiple of {}: fused with the next weight, one panel of the "
          "CPU backend's FP8 kernels would mix two weights' scales; load with weights bf16 or "
          "int8",
          p.name, p.w.dim(0), kNr);
    }
    const int64_t want_rows = (p.w.dim(0) + p.block_n - 1) / p.block_n;
    const int64_t want_cols = (K + p.block_k - 1) / p.block_k;
    if (p.scale_inv.shape != std::vector<int64_t>{want_rows, want_cols}) {
      return InvalidArgument("{}: scale_inv has shape {}, expected [{}, {}]", p.name,
                             p.scale_inv.ShapeString(), want_rows, want_cols);
    }
    scales[i].resize(static_cast<size_t>(p.scale_inv.numel()));
    ConvertToF32(p.scale_inv.dtype, p.scale_inv.data, scales[i].data(), scales[i].size());
    for (size_t s = 0; s < scales[i].size(); ++s) {
      const float v = scales[i][s];
      if (!(v >= 0.f) || !std::isfinite(v * 256.f)) {
        return InvalidArgument("{}: scale_inv [{}, {}] = {} is not a finite scale >= 0 below 2^120",
                               p.name, static_cast<int64_t>(s) / want_cols,
                               static_cast<int64_t>(s) % want_cols, v);
      }
    }
    first_row[i] = N;
    N += p.w.dim(0);
  }
  const int64_t panels = Panels(N), kp = PaddedK(K), groups = kp / kFp8Group;
  const size_t bytes = Fp8LinearBytes(N, K);
  std::shared_ptr<void> mem = AllocAligned(bytes, /*zero=*/true);
  if (mem == nullptr) {
    return ResourceExhausted("PackFp8LinearWeight: cannot allocate {} bytes for [{}, {}]", bytes, N,
                             K);
  }
  uint8_t* base = static_cast<uint8_t*>(mem.get());
  float* factors = reinterpret_cast<float*>(base + Fp8FactorOffset(N, K));
  std::mutex error_mu;
  Status error;
  pool.ParallelFor(panels, [&](int64_t pn, int) {
    const int64_t n0 = pn * kNr;
    size_t i = parts.size() - 1;
    while (i > 0 && first_row[i] > n0) --i;
    const LinearSource& part = parts[i];
    const int64_t r0 = n0 - first_row[i];
    const int64_t rows = std::min<int64_t>(kNr, part.w.dim(0) - r0);
    uint8_t* dst = base + static_cast<size_t>(pn * kp * kNr);
    for (int64_t j = 0; j < rows; ++j) {
      const uint8_t* src = part.w.ptr<uint8_t>() + (r0 + j) * K;
      for (int64_t k = 0; k < K; ++k) {
        if ((src[k] & 0x7f) == 0x7f) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (error.ok()) {
            error = InvalidArgument(
                "{}: holds the E4M3 NaN code 0x{:02x} at [{}, {}]: the weights of a checkpoint "
                "must be finite",
                part.name, src[k], r0 + j, k);
          }
          return;
        }
        dst[k * kNr + j] = src[k];
      }
    }
    const int64_t kb = part.scale_inv.dim(1);
    for (int64_t g = 0; g < groups; ++g) {
      factors[pn * groups + g] =
          scales[i][static_cast<size_t>((r0 / part.block_n) * kb + g * kFp8Group / part.block_k)] *
          256.f;
    }
  });
  ENGRAM_RETURN_IF_ERROR(error);
  return OwningCpuTensor(std::move(mem), DType::kU8, Layout::kFp8Panels, {N, K});
}

double Fp8WeightAt(const Tensor& w, int64_t n, int64_t k) {
  const int64_t p = n / kNr;
  const uint8_t code = Codes(w, p)[k * kNr + n % kNr];
  return static_cast<double>(E4M3Over256()[code] * Factors(w, p)[k / kFp8Group]);
}

namespace linear_fp8_internal {

void PanelToF32(CpuIsa isa, const Tensor& w, int64_t p, int64_t k0, int64_t kl, float* dst) {
  const uint8_t* codes = Codes(w, p);
  const float* factors = Factors(w, p);
  switch (isa) {
    case CpuIsa::kAvx512:
      PanelToF32Avx512(codes, factors, k0, kl, dst);
      return;
    case CpuIsa::kAvx2:
      PanelToF32Avx2(codes, factors, k0, kl, dst);
      return;
    default:
      PanelToF32Scalar(codes, factors, k0, kl, dst);
  }
}

void LinearFp8Direct(CpuIsa isa, ThreadPool& pool, const float* x, int64_t M, const Tensor& w,
                     const float* bias, float* out) {
  const int64_t N = w.dim(0), K = w.dim(1);
  const int64_t panels = Panels(N);
  const DirectKernels kern = DirectFor(isa);
  const int64_t per_task = std::max<int64_t>(1, panels / (8 * pool.num_threads()));
  pool.ParallelFor((panels + per_task - 1) / per_task, [&](int64_t task, int) {
    const int64_t p1 = std::min(panels, (task + 1) * per_task);
    for (int64_t p = task * per_task; p < p1; ++p) {
      const int nc = static_cast<int>(std::min<int64_t>(kNr, N - p * kNr));
      for (int64_t m = 0; m < M; m += kern.max_mr) {
        const int mr = static_cast<int>(std::min<int64_t>(kern.max_mr, M - m));
        kern.fn[mr](x + m * K, K, Codes(w, p), Factors(w, p), out + m * N + p * kNr, N, nc,
                    bias != nullptr ? bias + p * kNr : nullptr);
      }
    }
  });
}

}  // namespace linear_fp8_internal

}  // namespace engram
