// FP8 Linear weights on the CUDA backend (kernels/cuda/fp8_linear.h): a synthetic checkpoint
// in Hugging Face's fine-grained FP8 convention (E4M3 codes, F32 weight_scale_inv per 128 x 128
// block, fused parts) through PrepareLinear and Linear, against float64 references computed
// here. Skips when no CUDA backend can be made.
//
// Tolerances (relative Frobenius error):
//  - kQuantizedRefTol = 2e-3 against the float64 product of the dequantized weight and the
//    activations quantized as the backend does (per token and 128 inputs, amax / 448, E4M3
//    round to nearest even): the rest is F32 accumulation in the tensor cores, promoted to F32
//    per 128-input block;
//  - kFloatRefTol = 0.1 against the float64 product with unquantized activations (E4M3's 3
//    mantissa bits: ~2-3% RMS);
//  - kBf16GemmTol = 1e-2 where the weight falls back to BF16 (as cuda_ops_gpu_test).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../../support/gpu_error.h"
#include "common/dtype.h"
#include "kernels/backend.h"

namespace engram {
namespace {

constexpr double kQuantizedRefTol = 2e-3;
constexpr double kFloatRefTol = 0.1;
constexpr double kBf16GemmTol = 1e-2;
constexpr int64_t kB = 128;

using testutil::RelErr;

void Report(const std::string& what, double err, double tol) {
  testutil::ReportError(what, err, tol);
}

// One part of a fused FP8 weight: codes [n, k] (no NaN codes) and scales.
struct Part {
  int64_t n = 0, k = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scales;  // [ceil(n / 128), ceil(k / 128)]
  double At(int64_t r, int64_t c) const {
    const int64_t kb = (k + kB - 1) / kB;
    return double{E4M3ToF32(codes[r * k + c])} * scales[(r / kB) * kb + c / kB];
  }
};

Part RandomPart(std::mt19937& rng, int64_t n, int64_t k) {
  Part p;
  p.n = n;
  p.k = k;
  std::uniform_int_distribution<int> code(0, 255);
  std::uniform_real_distribution<float> scale(0.5f / 448, 4.f / 448);
  p.codes.resize(static_cast<size_t>(n * k));
  for (uint8_t& c : p.codes) {
    do c = static_cast<uint8_t>(code(rng));
    while ((c & 0x7f) == 0x7f);
  }
  p.scales.resize(static_cast<size_t>(((n + kB - 1) / kB) * ((k + kB - 1) / kB)));
  for (float& s : p.scales) s = scale(rng);
  return p;
}

std::vector<LinearSource> Sources(std::vector<Part>& parts) {
  std::vector<LinearSource> s;
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& p = parts[i];
    LinearSource l;
    l.w = HostView(p.codes.data(), DType::kF8E4M3, {p.n, p.k});
    l.scale_inv =
        HostView(p.scales.data(), DType::kF32, {(p.n + kB - 1) / kB, (p.k + kB - 1) / kB});
    l.block_n = kB;
    l.block_k = kB;
    l.name = "part" + std::to_string(i) + ".weight";
    s.push_back(l);
  }
  return s;
}

// x quantized per token and 128 inputs as fp8_quant.cu does, dequantized exactly.
std::vector<double> QuantizeActivations(const std::vector<float>& x, int64_t m, int64_t k) {
  std::vector<double> q(x.size());
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b0 = 0; b0 < k; b0 += kB) {
      const int64_t b1 = std::min(k, b0 + kB);
      float amax = 0.f;
      for (int64_t c = b0; c < b1; ++c) amax = std::max(amax, std::fabs(x[r * k + c]));
      const float inv = amax > 0.f ? 448.f / amax : 0.f, scale = amax / 448.f;
      for (int64_t c = b0; c < b1; ++c) {
        q[r * k + c] = double{E4M3ToF32(F32ToE4M3(x[r * k + c] * inv))} * scale;
      }
    }
  }
  return q;
}

class CudaFp8 : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = CreateBackend({.kind = "cuda"});
    if (!r.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << r.status().ToString();
    be_ = std::move(r).value();
  }

  // Runs Linear on random x [m, K] against both references.
  void Check(const Tensor& w, const std::vector<Part>& parts, int64_t m, bool bias, double tol,
             const std::string& what) {
    const int64_t K = parts[0].k;
    int64_t N = 0;
    for (const Part& p : parts) N += p.n;
    std::uniform_real_distribution<float> d(-1.f, 1.f);
    std::vector<float> x(static_cast<size_t>(m * K)), b(static_cast<size_t>(N));
    for (float& v : x) v = d(rng_);
    for (float& v : b) v = d(rng_);
    auto dx = be_->Alloc(DType::kF32, {m, K});
    auto out = be_->Alloc(DType::kF32, {m, N});
    ASSERT_TRUE(dx.ok() && out.ok());
    ASSERT_OK(be_->CopyFromHost(x.data(), *dx));
    Tensor db;
    if (bias) {
      auto r = be_->PrepareWeight(HostView(b.data(), DType::kF32, {N}), WeightUse::kVector);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      db = std::move(r).value();
    }
    ASSERT_OK(be_->Linear(*dx, w, bias ? &db : nullptr, *out));
    std::vector<float> got(static_cast<size_t>(m * N));
    ASSERT_OK(be_->CopyToHost(*out, got.data()));
    const std::vector<double> xq = QuantizeActivations(x, m, K);
    std::vector<double> ref_q(got.size()), ref_f(got.size());
    for (int64_t r = 0; r < m; ++r) {
      int64_t n0 = 0;
      for (const Part& p : parts) {
        for (int64_t n = 0; n < p.n; ++n) {
          double sq = bias ? b[n0 + n] : 0.0, sf = sq;
          for (int64_t c = 0; c < K; ++c) {
            const double wv = p.At(n, c);
            sq += xq[r * K + c] * wv;
            sf += double{x[r * K + c]} * wv;
          }
          ref_q[r * N + n0 + n] = sq;
          ref_f[r * N + n0 + n] = sf;
        }
        n0 += p.n;
      }
    }
    char shape[64];
    std::snprintf(shape, sizeof shape, " %ldx%ldx%ld%s", long(m), long(K), long(N),
                  bias ? " +bias" : "");
    if (tol == kQuantizedRefTol) {
      Report(what + shape + " vs quantized x", RelErr(got, ref_q), kQuantizedRefTol);
    }
    Report(what + shape + " vs float x", RelErr(got, ref_f),
           tol == kQuantizedRefTol ? kFloatRefTol : tol);
  }

  std::unique_ptr<Backend> be_;
  std::mt19937 rng_{11};
};

TEST_F(CudaFp8, FusedBlockScaledWeightRunsAsFp8Gemm) {
  // q/k/v-like parts: two whole 128-row blocks, then a ragged last part; K ends in a partial
  // 128-input block.
  std::vector<Part> parts = {RandomPart(rng_, 256, 656), RandomPart(rng_, 128, 656),
                             RandomPart(rng_, 80, 656)};
  auto w = be_->PrepareLinear(Sources(parts));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  // The H200 this runs on is sm_90: the tensor-core path must be taken (the log says why not).
  EXPECT_EQ(be_->linear_format(), "fp8");
  EXPECT_EQ(w->layout, Layout::kFp8Block128);
  for (int64_t m : {1, 7, 64, 300}) {
    Check(*w, parts, m, m == 7, kQuantizedRefTol, "Linear FP8 fused");
  }
}

TEST_F(CudaFp8, UnalignedWeightFallsBackToBf16) {
  // 72 rows: not a multiple of 16, so no FP8 GEMM for this weight: it is dequantized to BF16,
  // and the next (aligned) weight still runs as FP8.
  std::vector<Part> parts = {RandomPart(rng_, 72, 256)};
  auto w = be_->PrepareLinear(Sources(parts));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->dtype, DType::kBF16);
  Check(*w, parts, 5, true, kBf16GemmTol, "Linear FP8 -> BF16");
  std::vector<Part> aligned = {RandomPart(rng_, 128, 256)};
  auto w2 = be_->PrepareLinear(Sources(aligned));
  ASSERT_TRUE(w2.ok()) << w2.status().ToString();
  EXPECT_EQ(w2->layout, Layout::kFp8Block128);
  EXPECT_EQ(be_->linear_format(), "mixed");
  Check(*w2, aligned, 3, false, kQuantizedRefTol, "Linear FP8 after a fallback");
}

}  // namespace
}  // namespace engram
