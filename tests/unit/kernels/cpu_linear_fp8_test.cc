// The CPU backend's block-scaled FP8 Linear (linear_fp8.h) and the int8 Linear fed from int8
// files (PackInt8LinearWeight), per instruction set, against float64 references computed from
// the definitions: the dequantized FP8 weight is e4m3(code) x scale_inv[n / bn, k / bk] and the
// activations stay F32, so the result is exact but for F32 rounding of each weight and the
// summation order. Ragged shapes (K not a multiple of 32, N not a multiple of 16, M across the
// direct kernels' 4 rows and the F32 tiles), fused parts, and every refused input.
#include "kernels/cpu/linear_fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/int8_block.h"
#include "cpu_test_util.h"
#include "kernels/cpu/linear_int8.h"

namespace engram {
namespace {

using cpu_test::FromVector;
using cpu_test::IsaParamName;
using cpu_test::IsasToTest;
using cpu_test::MakeBackend;
using cpu_test::RandomFloats;

// E4M3 from its definition (OCP "fn": bias 7, S.1111.111 NaN), independent of dtype.h.
double E4M3(uint8_t v) {
  const int e = (v >> 3) & 15, m = v & 7;
  const double mag = e == 0 ? m * std::ldexp(1.0, -9) : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
  return (v & 0x80) ? -mag : mag;
}

// A random F8_E4M3 weight [n, k] (every finite code, subnormals included) with random F32
// scales per [bn, bk] block.
LinearSource RandomFp8(int64_t n, int64_t k, int64_t bn, int64_t bk, uint32_t seed,
                       std::string name = "w") {
  std::mt19937 rng(seed);
  LinearSource s;
  s.w = HostTensor(DType::kF8E4M3, {n, k});
  for (int64_t i = 0; i < n * k; ++i) {
    uint8_t c;
    do {
      c = static_cast<uint8_t>(rng() & 0xff);
    } while ((c & 0x7f) == 0x7f);
    s.w.ptr<uint8_t>()[i] = c;
  }
  s.scale_inv = HostTensor(DType::kF32, {(n + bn - 1) / bn, (k + bk - 1) / bk});
  std::uniform_real_distribution<float> exp(-14.f, -4.f);
  for (int64_t i = 0; i < s.scale_inv.numel(); ++i)
    s.scale_inv.ptr<float>()[i] = std::exp2(exp(rng));
  s.block_n = bn;
  s.block_k = bk;
  s.name = std::move(name);
  return s;
}

double Dequant(const LinearSource& s, int64_t n, int64_t k) {
  const int64_t cols = s.scale_inv.dim(1);
  return E4M3(s.w.ptr<uint8_t>()[n * s.w.dim(1) + k]) *
         static_cast<double>(s.scale_inv.ptr<float>()[n / s.block_n * cols + k / s.block_k]);
}

class CpuLinearFp8Test : public ::testing::TestWithParam<CpuIsa> {};

TEST_P(CpuLinearFp8Test, MatchesFloat64ReferenceOfTheDequantizedWeights) {
  auto backend = MakeBackend(GetParam());
  struct Case {
    int64_t n0, n1, k, bn, bk;  // two fused parts of n0 and n1 rows (n1 = 0: one part)
  };
  for (const Case c : {Case{48, 0, 64, 16, 32}, Case{128, 37, 200, 128, 128},
                       Case{32, 80, 1000, 32, 64}, Case{16, 0, 5, 16, 32}}) {
    std::vector<LinearSource> parts = {RandomFp8(c.n0, c.k, c.bn, c.bk, 1, "part0")};
    if (c.n1 > 0) parts.push_back(RandomFp8(c.n1, c.k, c.bn, c.bk, 2, "part1"));
    auto w = backend->PrepareLinear(parts);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->layout, Layout::kFp8Panels);
    EXPECT_EQ(backend->linear_format(), "fp8");
    const int64_t N = c.n0 + c.n1, K = c.k;
    // Every weight: e4m3 x scale rounded once to F32.
    for (int64_t n = 0; n < N; ++n) {
      const LinearSource& p = n < c.n0 ? parts[0] : parts[1];
      const int64_t r = n < c.n0 ? n : n - c.n0;
      for (int64_t k = 0; k < K; ++k) {
        ASSERT_EQ(Fp8WeightAt(*w, n, k), static_cast<double>(static_cast<float>(Dequant(p, r, k))))
            << n << "," << k;
      }
    }
    const std::vector<float> bias_v = RandomFloats(static_cast<size_t>(N), 9);
    const Tensor bias = FromVector(bias_v, {N});
    for (int64_t M : {1, 2, 3, 4, 5, 13, 100}) {
      const std::vector<float> xv = RandomFloats(static_cast<size_t>(M * K), 7 + M);
      const Tensor x = FromVector(xv, {M, K});
      Tensor out = HostTensor(DType::kF32, {M, N});
      ASSERT_TRUE(backend->Linear(x, *w, &bias, out).ok());
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < N; ++n) {
          const LinearSource& p = n < c.n0 ? parts[0] : parts[1];
          const int64_t r = n < c.n0 ? n : n - c.n0;
          double ref = bias_v[n], mag = std::fabs(ref);
          for (int64_t k = 0; k < K; ++k) {
            const double t = static_cast<double>(xv[m * K + k]) * Dequant(p, r, k);
            ref += t;
            mag += std::fabs(t);
          }
          // The worst-case F32 error of a K-term sum (and the rounding of each weight).
          ASSERT_NEAR(out.ptr<float>()[m * N + n], ref, std::ldexp(double(K + 4), -24) * mag)
              << "M " << M << " n " << n << " K " << K;
        }
      }
    }
  }
}

TEST_P(CpuLinearFp8Test, BadWeightsAreRefusedNamingTheTensor) {
  auto backend = MakeBackend(GetParam());
  auto refuse = [&](std::vector<LinearSource> parts, const std::string& want) {
    auto w = backend->PrepareLinear(parts);
    ASSERT_FALSE(w.ok()) << want;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(want), std::string::npos) << w.status().message();
  };
  refuse({RandomFp8(32, 64, 8, 32, 1, "layers.0.q_proj.weight")},
         "layers.0.q_proj.weight: FP8 weight_block_size [8, 32] cannot run");
  refuse({RandomFp8(32, 64, 16, 48, 1, "q")}, "block columns a multiple of 32");
  refuse({RandomFp8(40, 64, 16, 32, 1, "q"), RandomFp8(16, 64, 16, 32, 2, "k")},
         "q: 40 rows, not a multiple of 16");
  LinearSource nan = RandomFp8(32, 64, 16, 32, 1, "o_proj.weight");
  nan.w.ptr<uint8_t>()[3 * 64 + 5] = 0xff;
  refuse({nan}, "o_proj.weight: holds the E4M3 NaN code 0xff at [3, 5]");
  LinearSource neg = RandomFp8(32, 64, 16, 32, 1, "down");
  neg.scale_inv.ptr<float>()[1] = -1.f;
  refuse({neg}, "down: scale_inv [0, 1] = -1 is not a finite scale");
  LinearSource big = RandomFp8(32, 64, 16, 32, 1, "up");
  big.scale_inv.ptr<float>()[0] = 1e38f;
  refuse({big}, "up: scale_inv [0, 0]");
  LinearSource shape = RandomFp8(32, 64, 16, 32, 1, "gate");
  shape.scale_inv = HostTensor(DType::kF32, {2, 3});
  refuse({shape}, "gate: scale_inv has shape [2, 3], expected [2, 2]");
}

// weights "bf16" and "int8" convert FP8 files: BF16 values of the dequantized weights, or int8
// quantization of them, instead of the FP8 kernels.
TEST_P(CpuLinearFp8Test, WeightsOptionConvertsFp8Files) {
  const LinearSource s = RandomFp8(48, 96, 16, 32, 3);
  for (const char* mode : {"bf16", "int8"}) {
    BackendOptions o;
    o.threads = 2;
    o.weights = mode;
    auto b = CreateCpuBackend(o, GetParam());
    ASSERT_TRUE(b.ok());
    auto w = (*b)->PrepareLinear({s});
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ((*b)->linear_format(), mode);
    EXPECT_EQ(w->layout,
              std::string(mode) == "int8" ? Layout::kInt8Block32 : Layout::kBackendPacked);
    const std::vector<float> xv = RandomFloats(96, 4);
    Tensor out = HostTensor(DType::kF32, {1, 48});
    ASSERT_TRUE((*b)->Linear(FromVector(xv, {1, 96}), *w, nullptr, out).ok());
    double err = 0, norm = 0;
    for (int64_t n = 0; n < 48; ++n) {
      double ref = 0;
      for (int64_t k = 0; k < 96; ++k) ref += xv[k] * Dequant(s, n, k);
      err += std::pow(out.ptr<float>()[n] - ref, 2);
      norm += ref * ref;
    }
    EXPECT_LT(std::sqrt(err / norm), std::string(mode) == "int8" ? 0.03 : 0.01) << mode;
  }
}

// int8 files (QuantizeInt8Block codes with their scales) give the very bytes load-time
// quantization of the same float weight gives, fused or not.
TEST_P(CpuLinearFp8Test, Int8FilesPackBitIdenticalToLoadTimeQuantization) {
  BackendOptions o;
  o.threads = 2;
  o.weights = "int8";
  auto b = CreateCpuBackend(o, GetParam());
  ASSERT_TRUE(b.ok());
  auto part = [](int64_t n, int64_t k, uint32_t seed, std::vector<float>& values) {
    values = RandomFloats(static_cast<size_t>(n * k), seed);
    LinearSource s;
    const int64_t kb = (k + kInt8WeightBlock - 1) / kInt8WeightBlock;
    s.w = HostTensor(DType::kI8, {n, k});
    s.scale_inv = HostTensor(DType::kF32, {n, kb});
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t blk = 0; blk < kb; ++blk) {
        const int64_t k0 = blk * kInt8WeightBlock;
        const int len = static_cast<int>(std::min<int64_t>(kInt8WeightBlock, k - k0));
        s.scale_inv.ptr<float>()[r * kb + blk] =
            QuantizeInt8Block(values.data() + r * k + k0, len, s.w.ptr<int8_t>() + r * k + k0);
      }
    }
    s.block_n = 1;
    s.block_k = kInt8WeightBlock;
    s.name = "part";
    return s;
  };
  std::vector<float> v0, v1;
  const LinearSource a = part(20, 70, 1, v0), c = part(13, 70, 2, v1);
  auto packed = (*b)->PrepareLinear({a, c});
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  std::vector<float> all = v0;
  all.insert(all.end(), v1.begin(), v1.end());
  auto quantized = (*b)->PrepareWeight(FromVector(all, {33, 70}), WeightUse::kLinear);
  ASSERT_TRUE(quantized.ok());
  ASSERT_EQ(packed->layout, Layout::kInt8Block32);
  EXPECT_EQ(std::memcmp(packed->data, quantized->data, Int8LinearBytes(33, 70)), 0);
  LinearSource bad = a;
  bad.w = HostTensor(DType::kI8, {20, 70});
  bad.w.ptr<int8_t>()[75] = -128;
  bad.name = "model.layers.0.mlp.up_proj.weight";
  auto refused = (*b)->PrepareLinear({bad});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(
                "model.layers.0.mlp.up_proj.weight: holds the code -128 at [1, 5]"),
            std::string::npos)
      << refused.status().message();
}

INSTANTIATE_TEST_SUITE_P(Isas, CpuLinearFp8Test, ::testing::ValuesIn(IsasToTest()), IsaParamName);

}  // namespace
}  // namespace engram
