#include "kernels/cpu/linear_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/dtype.h"
#include "common/int8_block.h"
#include "kernels/cpu/cpu_memory.h"
#include "kernels/cpu/simd_avx2.h"

namespace engram {
namespace {

using linear_int8_internal::TileArgs;
using linear_int8_internal::TileFn;
using linear_int8_internal::TileKernels;

constexpr int kNr = kInt8PanelWidth;
constexpr int64_t kMcMax = 96;  // rows per work unit (a multiple of every tile height)

inline float HostAt(const Tensor& w, int64_t n, int64_t k) {
  const int64_t i = n * w.dim(1) + k;
  switch (w.dtype) {
    case DType::kBF16:
      return Bf16ToF32(w.ptr<uint16_t>()[i]);
    case DType::kF16:
      return F16ToF32(w.ptr<uint16_t>()[i]);
    default:
      return w.ptr<float>()[i];
  }
}

// Writes (not accumulates) acc[0, nc) + bias into crow.
inline void StoreRow(const float* acc, int nc, const float* bias, float* crow) {
  for (int j = 0; j < nc; ++j) crow[j] = acc[j] + (bias != nullptr ? bias[j] : 0.f);
}

// ---- scalar tile (any mr, np = 1)

void TileScalar(const TileArgs& p, int mr) {
  for (int r = 0; r < mr; ++r) {
    float acc[kNr] = {};
    const int8_t* q = p.q + r * p.ldq;
    for (int64_t b = 0; b < p.kb; ++b) {
      const uint8_t* blk = p.w + b * kInt8BlockBytes;
      float ws[kNr];
      std::memcpy(ws, blk + 512, sizeof(ws));
      const float xs = p.xs[r * p.kb + b];
      for (int j = 0; j < kNr; ++j) {
        int32_t dot = 0;
        for (int g = 0; g < 8; ++g) {
          for (int i = 0; i < 4; ++i) {
            const int32_t wv = static_cast<int32_t>(blk[64 * g + 4 * j + i]) - 128;
            dot += wv * q[b * kInt8Block + 4 * g + i];
          }
        }
        acc[j] += static_cast<float>(dot) * (ws[j] * xs);
      }
    }
    StoreRow(acc, p.nc, p.bias, p.c + r * p.ldc);
  }
}

template <int MR>
void TileScalarT(const TileArgs& p) {
  TileScalar(p, MR);
}

// ---- AVX2 tile: one panel (two ymm of 8 columns), up to 4 rows

template <int MR>
ENGRAM_AVX2 void TileAvx2(const TileArgs& p) {
  __m256 facc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) facc[r][0] = facc[r][1] = _mm256_setzero_ps();
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < p.kb; ++b) {
    const uint8_t* blk = p.w + b * kInt8BlockBytes;
    __m256i iacc[MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) iacc[r][0] = iacc[r][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) {
      const __m256i w0 = _mm256_xor_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * g)), flip);
      const __m256i w1 = _mm256_xor_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * g + 32)), flip);
      const __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        int32_t x4;
        std::memcpy(&x4, p.q + r * p.ldq + b * kInt8Block + 4 * g, 4);
        const __m256i xb = _mm256_set1_epi32(x4);
        const __m256i p0 =
            _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(xb, w0)), ones);
        const __m256i p1 =
            _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(xb, w1)), ones);
        iacc[r][0] = _mm256_add_epi32(iacc[r][0], p0);
        iacc[r][1] = _mm256_add_epi32(iacc[r][1], p1);
      }
    }
    const __m256 ws0 = _mm256_loadu_ps(reinterpret_cast<const float*>(blk + 512));
    const __m256 ws1 = _mm256_loadu_ps(reinterpret_cast<const float*>(blk + 512) + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 xs = _mm256_set1_ps(p.xs[r * p.kb + b]);
      facc[r][0] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][0]), _mm256_mul_ps(ws0, xs), facc[r][0]);
      facc[r][1] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][1]), _mm256_mul_ps(ws1, xs), facc[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    alignas(32) float t[kNr];
    _mm256_store_ps(t, facc[r][0]);
    _mm256_store_ps(t + 8, facc[r][1]);
    StoreRow(t, p.nc, p.bias, p.c + r * p.ldc);
  }
}

TileKernels ScalarTiles() {
  TileKernels k;
  k.max_mr = 4;
  k.max_np = 1;
  k.fn[1][1] = &TileScalarT<1>;
  k.fn[1][2] = &TileScalarT<2>;
  k.fn[1][3] = &TileScalarT<3>;
  k.fn[1][4] = &TileScalarT<4>;
  return k;
}

TileKernels Avx2Tiles() {
  TileKernels k;
  k.max_mr = 4;
  k.max_np = 1;
  k.fn[1][1] = &TileAvx2<1>;
  k.fn[1][2] = &TileAvx2<2>;
  k.fn[1][3] = &TileAvx2<3>;
  k.fn[1][4] = &TileAvx2<4>;
  return k;
}

TileKernels TilesFor(Int8Kernel kernel) {
  switch (kernel) {
    case Int8Kernel::kAvx512Vnni:
      return linear_int8_internal::Avx512VnniTileKernels();
    case Int8Kernel::kAvx2:
      return Avx2Tiles();
    case Int8Kernel::kScalar:
      break;
  }
  return ScalarTiles();
}

// Activation scratch of the calling (engine) thread, reused between calls.
struct ActScratch {
  std::vector<int8_t> q;
  std::vector<float> xs;
  std::vector<int32_t> xsum;
};

}  // namespace

bool CpuHasAvx512Vnni() {
  __builtin_cpu_init();
  return CpuHasAvx512() && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
}

Int8Kernel Int8KernelFor(CpuIsa isa) {
  if (isa == CpuIsa::kAvx512 && CpuHasAvx512Vnni()) return Int8Kernel::kAvx512Vnni;
  if (UsesAvx2(isa)) return Int8Kernel::kAvx2;
  return Int8Kernel::kScalar;
}

std::string_view Int8KernelName(Int8Kernel k) {
  switch (k) {
    case Int8Kernel::kScalar:
      return "scalar";
    case Int8Kernel::kAvx2:
      return "avx2";
    case Int8Kernel::kAvx512Vnni:
      return "avx512-vnni";
  }
  return "?";
}

size_t Int8LinearBytes(int64_t n, int64_t k) {
  const int64_t panels = (n + kNr - 1) / kNr, kb = (k + kInt8Block - 1) / kInt8Block;
  return static_cast<size_t>(panels * kb * kInt8BlockBytes);
}

Result<Tensor> QuantizeLinearWeightInt8(const Tensor& host, ThreadPool& pool) {
  if (host.shape.size() != 2) {
    return InvalidArgument("QuantizeLinearWeightInt8: weight has shape {}, expected [N, K]",
                           host.ShapeString());
  }
  if (host.dtype != DType::kF32 && host.dtype != DType::kBF16 && host.dtype != DType::kF16) {
    return InvalidArgument("QuantizeLinearWeightInt8: weight dtype {} (expected F32, F16 or BF16)",
                           DTypeName(host.dtype));
  }
  const int64_t N = host.dim(0), K = host.dim(1);
  if (K == 0) {
    return InvalidArgument("QuantizeLinearWeightInt8: weight {} has no input columns",
                           host.ShapeString());
  }
  const int64_t panels = (N + kNr - 1) / kNr, kb = (K + kInt8Block - 1) / kInt8Block;
  const size_t bytes = Int8LinearBytes(N, K);
  std::shared_ptr<void> mem = AllocAligned(bytes, /*zero=*/false);
  if (mem == nullptr) {
    return ResourceExhausted("QuantizeLinearWeightInt8: cannot allocate {} bytes for a {} weight",
                             bytes, host.ShapeString());
  }
  uint8_t* base = static_cast<uint8_t*>(mem.get());
  pool.ParallelFor(panels, [&](int64_t p, int) {
    float vals[kInt8Block];
    int8_t q[kInt8Block];
    for (int64_t b = 0; b < kb; ++b) {
      uint8_t* blk = base + (p * kb + b) * kInt8BlockBytes;
      float* scales = reinterpret_cast<float*>(blk + 512);
      const int64_t k0 = b * kInt8Block;
      const int kl = static_cast<int>(std::min<int64_t>(kInt8Block, K - k0));
      for (int j = 0; j < kNr; ++j) {
        const int64_t n = p * kNr + j;
        for (int i = 0; i < kInt8Block; ++i) {
          vals[i] = (n < N && i < kl) ? HostAt(host, n, k0 + i) : 0.f;
        }
        scales[j] = QuantizeInt8Block(vals, kInt8Block, q);
        for (int i = 0; i < kInt8Block; ++i) {
          blk[64 * (i / 4) + 4 * j + i % 4] = static_cast<uint8_t>(q[i] + 128);
        }
      }
    }
  });
  return OwningCpuTensor(std::move(mem), DType::kU8, Layout::kInt8Block32, {N, K});
}

Result<Tensor> PackInt8LinearWeight(const std::vector<LinearSource>& parts, ThreadPool& pool) {
  if (parts.empty()) return InvalidArgument("PackInt8LinearWeight: no parts");
  const int64_t K = parts[0].w.shape.size() == 2 ? parts[0].w.dim(1) : 0;
  const int64_t kb = (K + kInt8Block - 1) / kInt8Block;
  // Row n of the stacked weight: its part, that part's row r and codes.
  struct Row {
    const int8_t* q;
    size_t part;
    int64_t r;
  };
  std::vector<std::vector<float>> scales(parts.size());
  std::vector<Row> rows;
  for (size_t i = 0; i < parts.size(); ++i) {
    const LinearSource& p = parts[i];
    if (!p.quantized() || p.w.dtype != DType::kI8 || p.w.shape.size() != 2 || p.w.dim(1) != K ||
        K <= 0 || p.block_n != 1 || p.block_k != kInt8Block ||
        p.scale_inv.shape != std::vector<int64_t>{p.w.dim(0), kb}) {
      return InvalidArgument(
          "{}: expected an I8 [N, {}] weight with F32 scale_inv [N, {}] in blocks [1, {}], found "
          "{} {} with scale_inv {}, blocks [{}, {}]",
          p.name, K, kb, kInt8Block, DTypeName(p.w.dtype), p.w.ShapeString(),
          p.scale_inv.ShapeString(), p.block_n, p.block_k);
    }
    scales[i].resize(static_cast<size_t>(p.scale_inv.numel()));
    ConvertToF32(p.scale_inv.dtype, p.scale_inv.data, scales[i].data(), scales[i].size());
    for (int64_t r = 0; r < p.w.dim(0); ++r) {
      rows.push_back(Row{p.w.ptr<int8_t>() + r * K, i, r});
    }
  }
  const int64_t N = static_cast<int64_t>(rows.size());
  const int64_t panels = (N + kNr - 1) / kNr;
  const size_t bytes = Int8LinearBytes(N, K);
  std::shared_ptr<void> mem = AllocAligned(bytes, /*zero=*/false);
  if (mem == nullptr) {
    return ResourceExhausted("PackInt8LinearWeight: cannot allocate {} bytes for [{}, {}]", bytes,
                             N, K);
  }
  uint8_t* base = static_cast<uint8_t*>(mem.get());
  std::atomic<int64_t> bad{-1};
  pool.ParallelFor(panels, [&](int64_t p, int) {
    for (int64_t b = 0; b < kb; ++b) {
      uint8_t* blk = base + (p * kb + b) * kInt8BlockBytes;
      float* s = reinterpret_cast<float*>(blk + 512);
      const int64_t k0 = b * kInt8Block;
      const int kl = static_cast<int>(std::min<int64_t>(kInt8Block, K - k0));
      for (int j = 0; j < kNr; ++j) {
        const int64_t n = p * kNr + j;
        const Row* row = n < N ? &rows[static_cast<size_t>(n)] : nullptr;
        s[j] = row != nullptr ? scales[row->part][static_cast<size_t>(row->r * kb + b)] : 0.f;
        for (int i = 0; i < kInt8Block; ++i) {
          const int8_t q = row != nullptr && i < kl ? row->q[k0 + i] : 0;
          if (q == -128) bad.store(n * K + k0 + i);
          blk[64 * (i / 4) + 4 * j + i % 4] = static_cast<uint8_t>(q + 128);
        }
      }
    }
  });
  if (const int64_t at = bad.load(); at >= 0) {
    const Row& row = rows[static_cast<size_t>(at / K)];
    return InvalidArgument(
        "{}: holds the code -128 at [{}, {}]: engram_int8 codes are symmetric, in [-127, 127]",
        parts[row.part].name, row.r, at % K);
  }
  return OwningCpuTensor(std::move(mem), DType::kU8, Layout::kInt8Block32, {N, K});
}

double Int8WeightAt(const Tensor& w, int64_t n, int64_t k) {
  const int64_t K = w.dim(1), kb = (K + kInt8Block - 1) / kInt8Block;
  const int64_t p = n / kNr, j = n % kNr, b = k / kInt8Block, i = k % kInt8Block;
  const uint8_t* blk = w.ptr<uint8_t>() + (p * kb + b) * kInt8BlockBytes;
  float scale;
  std::memcpy(&scale, blk + 512 + 4 * j, 4);
  return static_cast<double>(static_cast<int32_t>(blk[64 * (i / 4) + 4 * j + i % 4]) - 128) *
         static_cast<double>(scale);
}

void QuantizeActivationsInt8(const float* x, int64_t m, int64_t k, int8_t* q, float* scales,
                             int32_t* sums) {
  const int64_t kb = (k + kInt8Block - 1) / kInt8Block;
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    for (int64_t b = 0; b < kb; ++b) {
      const int64_t k0 = b * kInt8Block;
      const int kl = static_cast<int>(std::min<int64_t>(kInt8Block, k - k0));
      float amax = 0.f;
      for (int i = 0; i < kl; ++i) amax = std::max(amax, std::fabs(xr[k0 + i]));
      const float inv = Int8InverseScale(amax);
      int8_t* qb = q + r * kb * kInt8Block + k0;
      int32_t sum = 0;
      for (int i = 0; i < kInt8Block; ++i) {
        qb[i] = i < kl ? Int8Code(xr[k0 + i], inv) : 0;
        sum += qb[i];
      }
      scales[r * kb + b] = Int8Scale(amax);
      sums[r * kb + b] = sum;
    }
  }
}

void LinearInt8Forward(Int8Kernel kernel, ThreadPool& pool, const float* x, int64_t M,
                       const Tensor& w, const float* bias, float* out) {
  const int64_t N = w.dim(0), K = w.dim(1);
  if (M <= 0 || N <= 0) return;
  const int64_t kb = (K + kInt8Block - 1) / kInt8Block, ldq = kb * kInt8Block;
  thread_local ActScratch s;
  if (s.q.size() < static_cast<size_t>(M * ldq)) s.q.resize(static_cast<size_t>(M * ldq));
  if (s.xs.size() < static_cast<size_t>(M * kb)) {
    s.xs.resize(static_cast<size_t>(M * kb));
    s.xsum.resize(static_cast<size_t>(M * kb));
  }
  int8_t* q = s.q.data();
  float* xs = s.xs.data();
  int32_t* xsum = s.xsum.data();
  constexpr int64_t kQuantRows = 16;
  auto quantize = kernel == Int8Kernel::kAvx512Vnni
                      ? &linear_int8_internal::QuantizeActivationsInt8Avx512
                      : &QuantizeActivationsInt8;
  if (M <= kQuantRows) {
    quantize(x, M, K, q, xs, xsum);
  } else {
    pool.ParallelFor((M + kQuantRows - 1) / kQuantRows, [&](int64_t c, int) {
      const int64_t r0 = c * kQuantRows, r1 = std::min(M, r0 + kQuantRows);
      quantize(x + r0 * K, r1 - r0, K, q + r0 * ldq, xs + r0 * kb, xsum + r0 * kb);
    });
  }

  const TileKernels kern = TilesFor(kernel);
  const int max_mr = kern.max_mr, max_np = kern.max_np;
  const int64_t panels = (N + kNr - 1) / kNr;
  const int64_t m_chunks = (M + kMcMax - 1) / kMcMax;
  const int64_t mc = ((M + m_chunks - 1) / m_chunks + max_mr - 1) / max_mr * max_mr;
  const int64_t threads = pool.num_threads();
  int64_t per_group = std::clamp<int64_t>(panels * m_chunks / (4 * threads), 1, 8);
  per_group = (per_group + max_np - 1) / max_np * max_np;
  const int64_t groups = (panels + per_group - 1) / per_group;
  const int64_t panel_stride = kb * kInt8BlockBytes;
  const uint8_t* wbase = w.ptr<uint8_t>();

  pool.ParallelFor(groups * m_chunks, [&](int64_t unit, int) {
    const int64_t g = unit / m_chunks;
    const int64_t m0 = (unit % m_chunks) * mc, m1 = std::min(M, m0 + mc);
    const int64_t p0 = g * per_group, p1 = std::min(panels, p0 + per_group);
    for (int64_t pn = p0; pn < p1; pn += max_np) {
      const int np = static_cast<int>(std::min<int64_t>(max_np, p1 - pn));
      const int64_t n0 = pn * kNr;
      const int nc = static_cast<int>(std::min<int64_t>(np * kNr, N - n0));
      for (int64_t m = m0; m < m1; m += max_mr) {
        const int mr = static_cast<int>(std::min<int64_t>(max_mr, m1 - m));
        const TileArgs a{kb,
                         q + m * ldq,
                         xs + m * kb,
                         xsum + m * kb,
                         ldq,
                         wbase + pn * panel_stride,
                         panel_stride,
                         out + m * N + n0,
                         N,
                         nc,
                         bias != nullptr ? bias + n0 : nullptr};
        kern.fn[np][mr](a);
      }
    }
  });
}

}  // namespace engram
