// The int8 Linear (linear_int8.h) per kernel family (scalar, AVX2, AVX-512 VNNI where the CPU
// has them) against a float64 reference computed from the dequantized weights and the
// quantized activations: exact but for the F32 scaling and summation order, so the tolerance
// is tight. Ragged shapes: K not a multiple of 32 (a partial last block), N not a multiple of
// 16, M across tile heights and the 96-row chunk.
#include "kernels/cpu/linear_int8.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/int8_block.h"
#include "cpu_test_util.h"
#include "kernels/cpu/cpu_backend.h"

namespace engram {
namespace {

using cpu_test::FromVector;
using cpu_test::RandomFloats;

struct Shape {
  int64_t m, n, k;
};

std::vector<Int8Kernel> KernelsToTest() {
  std::vector<Int8Kernel> k = {Int8Kernel::kScalar};
  if (CpuHasAvx2Fma()) k.push_back(Int8Kernel::kAvx2);
  if (CpuHasAvx512Vnni()) k.push_back(Int8Kernel::kAvx512Vnni);
  return k;
}

class CpuLinearInt8Test : public ::testing::TestWithParam<Int8Kernel> {};

// ref[m, n] = sum_k (qx * xs)[m, k] * Int8WeightAt(n, k) (+ bias) in double, and the sum of
// the terms' magnitudes (the scale of the F32 rounding error).
void Reference(const std::vector<float>& x, const Tensor& w, const std::vector<float>* bias,
               Shape s, std::vector<double>& ref, std::vector<double>& mag) {
  const int64_t kb = (s.k + kInt8Block - 1) / kInt8Block;
  std::vector<int8_t> q(s.m * kb * kInt8Block);
  std::vector<float> xs(s.m * kb);
  std::vector<int32_t> sums(s.m * kb);
  QuantizeActivationsInt8(x.data(), s.m, s.k, q.data(), xs.data(), sums.data());
  ref.assign(s.m * s.n, 0.0);
  mag.assign(s.m * s.n, 0.0);
  for (int64_t m = 0; m < s.m; ++m) {
    for (int64_t n = 0; n < s.n; ++n) {
      double acc = bias != nullptr ? (*bias)[n] : 0.0, a = std::fabs(acc);
      for (int64_t k = 0; k < s.k; ++k) {
        const double t = double(q[m * kb * kInt8Block + k]) * double(xs[m * kb + k / kInt8Block]) *
                         Int8WeightAt(w, n, k);
        acc += t;
        a += std::fabs(t);
      }
      ref[m * s.n + n] = acc;
      mag[m * s.n + n] = a;
    }
  }
}

TEST(CpuLinearInt8, ActivationQuantizationIsSymmetricPerBlock) {
  const std::vector<float> x = {0.5f, -1.f, 0.25f, 0.f};  // K = 4: one partial block
  int8_t q[32];
  float s;
  int32_t sum;
  QuantizeActivationsInt8(x.data(), 1, 4, q, &s, &sum);
  EXPECT_FLOAT_EQ(s, 1.f / 127.f);
  EXPECT_EQ(q[0], 64);  // 63.5 rounds to even
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 32);  // 31.75
  EXPECT_EQ(q[3], 0);
  for (int i = 4; i < 32; ++i) EXPECT_EQ(q[i], 0) << i;  // padding
  EXPECT_EQ(sum, 64 - 127 + 32);
  const std::vector<float> zeros(40, 0.f);  // an all-zero block has scale 0
  int8_t q2[64];
  float s2[2];
  int32_t sums2[2];
  QuantizeActivationsInt8(zeros.data(), 1, 40, q2, s2, sums2);
  EXPECT_EQ(s2[0], 0.f);
  EXPECT_EQ(s2[1], 0.f);
}

// The AVX-512 activation quantizer gives the scalar one's codes, scales and sums bit for bit,
// partial blocks, all-zero blocks, ties and extremes included.
TEST(CpuLinearInt8, Avx512ActivationQuantizationEqualsScalar) {
  if (!CpuHasAvx512Vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  for (int64_t k : {1, 5, 16, 17, 31, 32, 33, 64, 100, 1000}) {
    const int64_t m = 7, kb = (k + kInt8Block - 1) / kInt8Block;
    std::vector<float> x =
        RandomFloats(static_cast<size_t>(m * k), 11 + static_cast<uint32_t>(k), -3.f, 3.f);
    for (int64_t i = 0; i < k; ++i) x[i] = 0.f;                        // row 0: all zero
    for (int64_t i = 0; i < k; ++i) x[k + i] = (i % 2 ? 0.5f : -1.f);  // row 1: exact .5 ties
    x[2 * k] = 1e-30f;                                                 // a tiny block maximum
    // Row 3, first block: max |x| below kInt8MinAmax (127 / max would be infinite; 0 * inf is
    // NaN): scale 0 and codes 0 on both paths, as QuantizeInt8Block gives.
    const int64_t k3 = std::min<int64_t>(k, kInt8Block);
    for (int64_t i = 0; i < k3; ++i) x[3 * k + i] = i % 3 == 0 ? 0.f : (i % 2 ? 1e-37f : -2e-37f);
    std::vector<int8_t> qa(m * kb * kInt8Block, 9), qb(qa);
    std::vector<float> sa(m * kb), sb(m * kb);
    std::vector<int32_t> ua(m * kb), ub(m * kb);
    QuantizeActivationsInt8(x.data(), m, k, qa.data(), sa.data(), ua.data());
    linear_int8_internal::QuantizeActivationsInt8Avx512(x.data(), m, k, qb.data(), sb.data(),
                                                        ub.data());
    EXPECT_EQ(qa, qb) << "K " << k;
    EXPECT_EQ(sa, sb) << "K " << k;
    EXPECT_EQ(ua, ub) << "K " << k;
    EXPECT_EQ(sa[3 * kb], 0.f) << "K " << k;
    for (int64_t i = 0; i < k3; ++i) EXPECT_EQ(qa[3 * kb * kInt8Block + i], 0) << "K " << k;
    int8_t q[kInt8Block];
    EXPECT_EQ(QuantizeInt8Block(x.data() + 3 * k, static_cast<int>(k3), q), 0.f);
    for (int64_t i = 0; i < k3; ++i) EXPECT_EQ(q[i], 0);
  }
}

TEST(CpuLinearInt8, WeightQuantizationErrorIsHalfAStep) {
  ThreadPool pool(2);
  const Shape s{1, 37, 70};
  const auto wv = RandomFloats(s.n * s.k, 5);
  auto w = QuantizeLinearWeightInt8(FromVector(wv, {s.n, s.k}), pool);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->layout, Layout::kInt8Block32);
  EXPECT_EQ(w->dtype, DType::kU8);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{s.n, s.k}));
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t b = 0; b * kInt8Block < s.k; ++b) {
      const int64_t k1 = std::min<int64_t>(s.k, (b + 1) * kInt8Block);
      double amax = 0;
      for (int64_t k = b * kInt8Block; k < k1; ++k)
        amax = std::max(amax, std::fabs(double(wv[n * s.k + k])));
      for (int64_t k = b * kInt8Block; k < k1; ++k) {
        EXPECT_LE(std::fabs(Int8WeightAt(*w, n, k) - wv[n * s.k + k]), amax / 254 * (1 + 1e-6))
            << n << "," << k;
      }
    }
  }
}

TEST_P(CpuLinearInt8Test, MatchesFloat64ReferenceOfQuantizedOperands) {
  ThreadPool pool(2);
  const Shape shapes[] = {{1, 1, 1},     {1, 37, 19},   {2, 50, 32},   {3, 17, 67},
                          {5, 129, 8},   {7, 40, 515},  {6, 33, 1030}, {13, 16, 96},
                          {70, 81, 129}, {100, 23, 41}, {1, 300, 600}, {97, 48, 64}};
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << "M=" << s.m << " N=" << s.n << " K=" << s.k << " bias=" << with_bias);
      const auto xv = RandomFloats(s.m * s.k, seed++);
      const auto wv = RandomFloats(s.n * s.k, seed++);
      const auto bv = RandomFloats(s.n, seed++);
      auto w = QuantizeLinearWeightInt8(FromVector(wv, {s.n, s.k}), pool);
      ASSERT_TRUE(w.ok()) << w.status().ToString();
      std::vector<float> out(s.m * s.n, std::nanf(""));
      LinearInt8Forward(GetParam(), pool, xv.data(), s.m, *w, with_bias ? bv.data() : nullptr,
                        out.data());
      std::vector<double> ref, mag;
      Reference(xv, *w, with_bias ? &bv : nullptr, s, ref, mag);
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_LE(std::fabs(out[i] - ref[i]), 4e-6 * mag[i] + 1e-30) << "at " << i;
      }
    }
  }
}

TEST_P(CpuLinearInt8Test, KernelFamiliesAgreeExactlyOnEachBlockSum) {
  // Every family computes the same int32 block dot products; only the F32 scaling order may
  // differ, so all agree with the scalar kernel to F32 rounding.
  ThreadPool pool(2);
  const Shape s{9, 45, 200};
  const auto xv = RandomFloats(s.m * s.k, 77);
  const auto wv = RandomFloats(s.n * s.k, 78);
  auto w = QuantizeLinearWeightInt8(FromVector(wv, {s.n, s.k}), pool);
  ASSERT_TRUE(w.ok());
  std::vector<float> a(s.m * s.n), b(s.m * s.n);
  LinearInt8Forward(Int8Kernel::kScalar, pool, xv.data(), s.m, *w, nullptr, a.data());
  LinearInt8Forward(GetParam(), pool, xv.data(), s.m, *w, nullptr, b.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f * (1 + std::fabs(a[i])));
}

TEST_P(CpuLinearInt8Test, BackendPreparesAndRunsInt8Weights) {
  const CpuIsa isa = GetParam() == Int8Kernel::kAvx512Vnni ? CpuIsa::kAvx512
                     : GetParam() == Int8Kernel::kAvx2     ? CpuIsa::kAvx2
                                                           : CpuIsa::kScalar;
  BackendOptions options;
  options.threads = 2;
  options.weights = "int8";
  auto backend = CreateCpuBackend(options, isa);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  if (Int8KernelFor(isa) != GetParam()) GTEST_SKIP() << "backend at this ISA runs other kernels";
  const Shape s{4, 21, 45};
  const auto xv = RandomFloats(s.m * s.k, 3);
  const auto wv = RandomFloats(s.n * s.k, 4);
  const auto bv = RandomFloats(s.n, 5);
  std::vector<float> rounded;
  auto w = (*backend)->PrepareWeight(cpu_test::ToDType(wv, {s.n, s.k}, DType::kBF16, &rounded),
                                     WeightUse::kLinear);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->layout, Layout::kInt8Block32);
  // A prepared int8 weight is accepted again as is.
  auto again = (*backend)->PrepareWeight(*w, WeightUse::kLinear);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->data, w->data);
  EXPECT_FALSE((*backend)->PrepareWeight(*w, WeightUse::kEmbedding).ok());
  // Embeddings and vectors are never quantized.
  auto e = (*backend)->PrepareWeight(FromVector(wv, {s.n, s.k}), WeightUse::kEmbedding);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->layout, Layout::kRowMajor);
  EXPECT_EQ(e->dtype, DType::kF32);
  Tensor x = FromVector(xv, {s.m, s.k}), bias = FromVector(bv, {s.n});
  Tensor out = HostTensor(DType::kF32, {s.m, s.n});
  ASSERT_TRUE((*backend)->Linear(x, *w, &bias, out).ok());
  std::vector<double> ref, mag;
  Reference(xv, *w, &bv, s, ref, mag);
  for (int64_t i = 0; i < s.m * s.n; ++i) {
    EXPECT_LE(std::fabs(out.ptr<float>()[i] - ref[i]), 4e-6 * mag[i]) << i;
  }
  Tensor bad_x = HostTensor(DType::kF32, {s.m, s.k + 1});
  EXPECT_FALSE((*backend)->Linear(bad_x, *w, nullptr, out).ok());
}

INSTANTIATE_TEST_SUITE_P(Kernels, CpuLinearInt8Test, ::testing::ValuesIn(KernelsToTest()),
                         [](const ::testing::TestParamInfo<Int8Kernel>& info) {
                           std::string n(Int8KernelName(info.param));
                           for (char& c : n) {
                             if (c == '-') c = '_';
                           }
                           return n;
                         });

TEST(CpuLinearInt8, UnknownWeightFormatIsRefused) {
  BackendOptions options;
  options.weights = "int4";
  auto b = CreateCpuBackend(options);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("expected auto, bf16 or int8"), std::string::npos)
      << b.status().ToString();
  options.kind = "cuda";
  options.weights = "int8";
  EXPECT_FALSE(CreateBackend(options).ok());
}

TEST(CpuLinearInt8, WeightWithoutInputsIsRefused) {
  ThreadPool pool(1);
  Tensor empty = HostTensor(DType::kF32, {4, 0});
  auto w = QuantizeLinearWeightInt8(empty, pool);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("no input columns"), std::string::npos);
}

}  // namespace
}  // namespace engram
