// Linear on the CPU backend against a float64 reference: odd sizes, F32/BF16/F16 weights,
// packed (PrepareWeight) and row-major, AVX2 and scalar kernels.
#include <gtest/gtest.h>

#include <tuple>

#include "cpu_test_util.h"

namespace engram {
namespace {

using cpu_test::FromVector;
using cpu_test::Poisoned;
using cpu_test::RandomFloats;
using cpu_test::RelError;
using cpu_test::ToDType;
using cpu_test::ToVector;

struct Shape {
  int64_t m, n, k;
};

class CpuLinearTest : public ::testing::TestWithParam<CpuIsa> {};

std::vector<double> Reference(const std::vector<float>& x, const std::vector<float>& w,
                              const std::vector<float>* bias, Shape s) {
  std::vector<double> ref(s.m * s.n);
  for (int64_t m = 0; m < s.m; ++m) {
    for (int64_t n = 0; n < s.n; ++n) {
      double acc = bias != nullptr ? (*bias)[n] : 0.0;
      for (int64_t k = 0; k < s.k; ++k) acc += double(x[m * s.k + k]) * w[n * s.k + k];
      ref[m * s.n + n] = acc;
    }
  }
  return ref;
}

TEST_P(CpuLinearTest, MatchesFloat64Reference) {
  auto backend = cpu_test::MakeBackend(GetParam());
  // Odd sizes on purpose: M crosses the 6-row tile and the 96-row chunk, N the 16-column
  // panel, K the 512 k-block.
  const Shape shapes[] = {{1, 1, 1},     {1, 37, 19},  {2, 50, 33},    {3, 17, 67},
                          {5, 129, 8},   {7, 40, 515}, {13, 33, 1030}, {70, 81, 129},
                          {100, 23, 41}, {1, 300, 600}};
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (bool packed : {true, false}) {
        for (bool with_bias : {false, true}) {
          SCOPED_TRACE(testing::Message() << "M=" << s.m << " N=" << s.n << " K=" << s.k
                                          << " dtype=" << DTypeName(dtype) << " packed=" << packed
                                          << " bias=" << with_bias);
          const auto xv = RandomFloats(s.m * s.k, seed++);
          std::vector<float> wv;
          Tensor host_w = ToDType(RandomFloats(s.n * s.k, seed++), {s.n, s.k}, dtype, &wv);
          const auto bv = RandomFloats(s.n, seed++);
          Tensor w = host_w;
          if (packed) {
            auto prepared = backend->PrepareWeight(host_w, WeightUse::kLinear);
            ASSERT_TRUE(prepared.ok()) << prepared.status().ToString();
            w = *prepared;
            EXPECT_EQ(w.layout, Layout::kBackendPacked);
            EXPECT_EQ(w.shape, host_w.shape);
          }
          Tensor x = FromVector(xv, {s.m, s.k});
          Tensor bias = FromVector(bv, {s.n});
          Tensor out = Poisoned(*backend, {s.m, s.n});
          ASSERT_TRUE(backend->Linear(x, w, with_bias ? &bias : nullptr, out).ok());
          const auto ref = Reference(xv, wv, with_bias ? &bv : nullptr, s);
          EXPECT_LE(RelError(ToVector(out), ref), 1e-5);
        }
      }
    }
  }
}

TEST_P(CpuLinearTest, LargeGemmMatchesReference) {
  auto backend = cpu_test::MakeBackend(GetParam());
  const Shape s{131, 70, 1100};
  const auto xv = RandomFloats(s.m * s.k, 7);
  std::vector<float> wv;
  Tensor host_w = ToDType(RandomFloats(s.n * s.k, 8), {s.n, s.k}, DType::kBF16, &wv);
  auto w = backend->PrepareWeight(host_w, WeightUse::kLinear);
  ASSERT_TRUE(w.ok());
  Tensor x = FromVector(xv, {s.m, s.k});
  Tensor out = Poisoned(*backend, {s.m, s.n});
  ASSERT_TRUE(backend->Linear(x, *w, nullptr, out).ok());
  EXPECT_LE(RelError(ToVector(out), Reference(xv, wv, nullptr, s)), 1e-5);
}

TEST_P(CpuLinearTest, PackingTwiceIsANoOp) {
  auto backend = cpu_test::MakeBackend(GetParam());
  std::vector<float> wv;
  Tensor host_w = ToDType(RandomFloats(20 * 9, 3), {20, 9}, DType::kBF16, &wv);
  auto w = backend->PrepareWeight(host_w, WeightUse::kLinear);
  ASSERT_TRUE(w.ok());
  auto again = backend->PrepareWeight(*w, WeightUse::kLinear);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->data, w->data);
}

TEST_P(CpuLinearTest, RejectsMismatchedOperands) {
  auto backend = cpu_test::MakeBackend(GetParam());
  Tensor x = FromVector(RandomFloats(2 * 8, 1), {2, 8});
  Tensor w = FromVector(RandomFloats(4 * 8, 2), {4, 8});
  Tensor out = Poisoned(*backend, {2, 4});
  Tensor bad_w = FromVector(RandomFloats(4 * 7, 2), {4, 7});
  Status st = backend->Linear(x, bad_w, nullptr, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("w "), std::string::npos) << st.message();
  Tensor bad_out = Poisoned(*backend, {2, 5});
  st = backend->Linear(x, w, nullptr, bad_out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("out"), std::string::npos) << st.message();
  Tensor bad_bias = FromVector(RandomFloats(3, 2), {3});
  st = backend->Linear(x, w, &bad_bias, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("bias"), std::string::npos) << st.message();
  Tensor x_i32 = HostTensor(DType::kI32, {2, 8});
  st = backend->Linear(x_i32, w, nullptr, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("x "), std::string::npos) << st.message();
  EXPECT_EQ(backend->Linear(x, w, nullptr, x).code(), StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuLinearTest, ::testing::ValuesIn(cpu_test::IsasToTest()),
                         cpu_test::IsaParamName);

}  // namespace
}  // namespace engram
