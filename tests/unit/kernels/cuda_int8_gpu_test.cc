// Int8 Linear weights on the CUDA backend (kernels/cuda/int8_linear.h): int8 files (codes with
// an F32 scale per row and 32 inputs, fused parts) through PrepareLinear and Linear against
// float64 references computed here, and float weights quantized on the device against the CPU
// backend's int8 kernels. Skips when no CUDA backend can be made.
//
// Tolerances (relative Frobenius error):
//  - kGemvTol = 1e-5 for up to 16 tokens against the float64 product of the dequantized weight
//    and the activations quantized as the CPU does (common/int8_block.h): the block dot
//    products are exact int32, the rest F32 accumulation;
//  - kGemmTol = 1e-2 for more tokens against the float64 product with unquantized activations
//    (the weight dequantized and the activations rounded to BF16, as cuda_ops_gpu_test's
//    BF16 GEMMs);
//  - kCpuTol = 1e-5 against the CPU backend's int8 Linear at up to 16 tokens (the same codes
//    and activations, summed in another order).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../support/gpu_error.h"
#include "common/dtype.h"
#include "common/int8_block.h"
#include "kernels/backend.h"

namespace engram {
namespace {

constexpr double kGemvTol = 1e-5;
constexpr double kGemmTol = 1e-2;
constexpr double kCpuTol = 1e-5;
constexpr int64_t kB = 32;

using testutil::RelErr;

// One part of a fused int8 weight: codes [n, k] in [-127, 127] and scales [n, ceil(k / 32)].
struct Part {
  int64_t n = 0, k = 0;
  std::vector<int8_t> codes;
  std::vector<float> scales;
  double At(int64_t r, int64_t c) const {
    return static_cast<double>(codes[r * k + c]) * scales[r * ((k + kB - 1) / kB) + c / kB];
  }
};

Part RandomPart(std::mt19937& rng, int64_t n, int64_t k) {
  Part p;
  p.n = n;
  p.k = k;
  std::uniform_int_distribution<int> code(-127, 127);
  std::uniform_real_distribution<float> scale(0.5f / 127, 2.f / 127);
  p.codes.resize(static_cast<size_t>(n * k));
  for (int8_t& c : p.codes) c = static_cast<int8_t>(code(rng));
  p.scales.resize(static_cast<size_t>(n * ((k + kB - 1) / kB)));
  for (float& s : p.scales) s = scale(rng);
  return p;
}

std::vector<LinearSource> Sources(std::vector<Part>& parts) {
  std::vector<LinearSource> s;
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& p = parts[i];
    LinearSource l;
    l.w = HostView(p.codes.data(), DType::kI8, {p.n, p.k});
    l.scale_inv = HostView(p.scales.data(), DType::kF32, {p.n, (p.k + kB - 1) / kB});
    l.block_n = 1;
    l.block_k = kB;
    l.name = "part" + std::to_string(i) + ".weight";
    s.push_back(l);
  }
  return s;
}

// x quantized per token and 32 inputs by the CPU's rule, dequantized exactly.
std::vector<double> QuantizeActivations(const std::vector<float>& x, int64_t m, int64_t k) {
  std::vector<double> q(x.size());
  int8_t codes[kB];
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c0 = 0; c0 < k; c0 += kB) {
      const int len = static_cast<int>(std::min(kB, k - c0));
      const float s = QuantizeInt8Block(x.data() + r * k + c0, len, codes);
      for (int i = 0; i < len; ++i) q[r * k + c0 + i] = static_cast<double>(codes[i]) * s;
    }
  }
  return q;
}

class CudaInt8 : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = CreateBackend({.kind = "cuda"});
    if (!r.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << r.status().ToString();
    be_ = std::move(r).value();
  }

  std::vector<float> Random(int64_t n) {
    std::uniform_real_distribution<float> d(-1.f, 1.f);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = d(rng_);
    return v;
  }

  // out = x w^T (+ bias) on `b` for x [m, k].
  std::vector<float> Run(Backend& b, const Tensor& w, const std::vector<float>& x, int64_t m,
                         int64_t k, int64_t n, const std::vector<float>* bias) {
    auto dx = b.Alloc(DType::kF32, {m, k});
    auto out = b.Alloc(DType::kF32, {m, n});
    EXPECT_TRUE(dx.ok() && out.ok());
    EXPECT_TRUE(b.CopyFromHost(x.data(), *dx).ok());
    Tensor db;
    if (bias != nullptr) {
      auto r = b.PrepareWeight(HostView(const_cast<float*>(bias->data()), DType::kF32, {n}),
                               WeightUse::kVector);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      db = std::move(r).value();
    }
    const Status st = b.Linear(*dx, w, bias != nullptr ? &db : nullptr, *out);
    EXPECT_TRUE(st.ok()) << st.ToString();
    std::vector<float> got(static_cast<size_t>(m * n));
    EXPECT_TRUE(b.CopyToHost(*out, got.data()).ok());
    return got;
  }

  // Linear on random x [m, K] for each m against float64: the activations quantized as the CPU
  // does up to 16 rows (the GEMV), unquantized above (the BF16 GEMM); a bias at some m.
  void CheckAgainstFloat64(const Tensor& w, const std::vector<Part>& parts,
                           const std::vector<int64_t>& ms) {
    const int64_t K = parts[0].k;
    int64_t N = 0;
    for (const Part& p : parts) N += p.n;
    for (int64_t m : ms) {
      const auto x = Random(m * K), bias = Random(N);
      const bool with_bias = m == 7 || m == 64 || m == 40;
      const auto got = Run(*be_, w, x, m, K, N, with_bias ? &bias : nullptr);
      const bool gemv = m <= 16;
      const std::vector<double> xq =
          gemv ? QuantizeActivations(x, m, K) : std::vector<double>(x.begin(), x.end());
      std::vector<double> ref(got.size());
      for (int64_t r = 0; r < m; ++r) {
        int64_t n0 = 0;
        for (const Part& p : parts) {
          for (int64_t n = 0; n < p.n; ++n) {
            double s = with_bias ? bias[n0 + n] : 0.0;
            for (int64_t c = 0; c < K; ++c) s += xq[r * K + c] * p.At(n, c);
            ref[r * N + n0 + n] = s;
          }
          n0 += p.n;
        }
      }
      testutil::ReportError("Linear int8 " + std::string(gemv ? "GEMV" : "GEMM") + " " +
                                std::to_string(m) + "x" + std::to_string(K) + "x" +
                                std::to_string(N) + (with_bias ? " +bias" : ""),
                            RelErr(got, ref), gemv ? kGemvTol : kGemmTol);
    }
  }

  std::unique_ptr<Backend> be_;
  std::mt19937 rng_{13};
};

TEST_F(CudaInt8, Int8FilesRunAsInt8AndMatchFloat64) {
  // q/k/v-like fused parts; K ends in a partial 32-input block.
  std::vector<Part> parts = {RandomPart(rng_, 96, 656), RandomPart(rng_, 40, 656),
                             RandomPart(rng_, 37, 656)};
  auto w = be_->PrepareLinear(Sources(parts));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(be_->linear_format(), "int8");
  EXPECT_EQ(w->layout, Layout::kInt8Rows32);
  CheckAgainstFloat64(*w, parts, {1, 2, 7, 16, 17, 64, 300});
}

// K = 4100: 129 blocks a row (the GEMV's lanes loop five times, the last block partial); N =
// 2100: the prefill dequantizes it in two chunks of rows (1920 + 180), the second writing a
// column slice of out.
TEST_F(CudaInt8, LargeWeightCrossesChunksAndLongRows) {
  std::vector<Part> parts = {RandomPart(rng_, 1000, 4100), RandomPart(rng_, 1100, 4100)};
  auto w = be_->PrepareLinear(Sources(parts));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->layout, Layout::kInt8Rows32);
  CheckAgainstFloat64(*w, parts, {1, 16, 17, 40});
}

// weights: int8 quantizes float weights on the device bit for bit as the CPU backend does, so
// the two backends' int8 Linears agree to F32 summation order.
TEST_F(CudaInt8, FloatWeightsQuantizedAtLoadMatchTheCpuBackend) {
  auto gpu = CreateBackend({.kind = "cuda", .weights = "int8"});
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  auto cpu = CreateBackend({.kind = "cpu", .threads = 2, .weights = "int8"});
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  // The second shape is quantized in two chunks of rows (2046 + 54) with 129 blocks a row.
  for (auto [N, K] : {std::pair<int64_t, int64_t>{200, 1000}, {2100, 4100}}) {
    std::vector<uint16_t> wb(static_cast<size_t>(N * K));
    const auto wf = Random(N * K);
    for (size_t i = 0; i < wb.size(); ++i) wb[i] = F32ToBf16(wf[i]);
    const Tensor host = HostView(wb.data(), DType::kBF16, {N, K});
    auto wg = (*gpu)->PrepareWeight(host, WeightUse::kLinear);
    ASSERT_TRUE(wg.ok()) << wg.status().ToString();
    EXPECT_EQ(wg->layout, Layout::kInt8Rows32);
    EXPECT_EQ((*gpu)->linear_format(), "int8");
    auto wc = (*cpu)->PrepareWeight(host, WeightUse::kLinear);
    ASSERT_TRUE(wc.ok()) << wc.status().ToString();
    for (int64_t m : {1, 5, 16}) {
      const auto x = Random(m * K);
      const auto g = Run(**gpu, *wg, x, m, K, N, nullptr);
      const auto c = Run(**cpu, *wc, x, m, K, N, nullptr);
      testutil::ReportError("GPU vs CPU int8 Linear " + std::to_string(m) + "x" +
                                std::to_string(K) + "x" + std::to_string(N),
                            RelErr(g, std::vector<double>(c.begin(), c.end())), kCpuTol);
    }
  }
}

TEST_F(CudaInt8, CodeMinus128IsRefusedNamingThePart) {
  std::vector<Part> parts = {RandomPart(rng_, 16, 64), RandomPart(rng_, 16, 64)};
  parts[1].codes[5 * 64 + 3] = -128;
  auto w = be_->PrepareLinear(Sources(parts));
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().ToString().find("part1.weight: code -128 at [5, 3]"), std::string::npos)
      << w.status().ToString();
}

TEST_F(CudaInt8, Bf16OptionDequantizesInt8Files) {
  auto b = CreateBackend({.kind = "cuda", .weights = "bf16"});
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  std::vector<Part> parts = {RandomPart(rng_, 64, 96)};
  auto w = (*b)->PrepareLinear(Sources(parts));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->dtype, DType::kBF16);
  EXPECT_EQ((*b)->linear_format(), "bf16");
}

}  // namespace
}  // namespace engram
